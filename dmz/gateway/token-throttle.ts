export { throttleKeys, throttleSource, TokenThrottle } from '../../shared/security/throttle.ts';
