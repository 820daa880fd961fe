export { throttleSource, TokenThrottle } from '../../shared/security/throttle.ts';
