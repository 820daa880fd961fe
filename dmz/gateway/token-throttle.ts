export { TokenThrottle } from '../../shared/security/throttle.ts';
