import { LIMITS } from '../../shared/limits.ts';

/**
 * A failure budget for device tokens: at most `maxFailures` failed tokens per key (a source
 * address, a device id) within `windowMs`; past it, the key is refused without checking anything
 * until its oldest counted failure leaves the window. Guessing is then bounded per address and,
 * from many addresses, per device, and a refused guess costs the gateway no scrypt.
 *
 * Memory is bounded: at most LIMITS.tokenFailureTrackedKeys keys; when full, the key written
 * longest ago is forgotten (a Map iterates in insertion order, and a key is moved to the end on
 * every failure).
 */
export class TokenThrottle {
  private readonly failures = new Map<string, { count: number; first: number }>();

  constructor(
    private readonly maxFailures: number,
    private readonly windowMs: number,
    private readonly maxKeys: number = LIMITS.tokenFailureTrackedKeys,
  ) {}

  /** Whether any of the keys has spent its budget. */
  blocked(keys: readonly string[], now = Date.now()): boolean {
    return keys.some((k) => {
      const f = this.failures.get(k);
      if (!f) return false;
      if (now - f.first >= this.windowMs) {
        this.failures.delete(k);
        return false;
      }
      return f.count >= this.maxFailures;
    });
  }

  fail(keys: readonly string[], now = Date.now()): void {
    for (const k of keys) {
      const f = this.failures.get(k);
      const next = f && now - f.first < this.windowMs ? { count: f.count + 1, first: f.first } : { count: 1, first: now };
      this.failures.delete(k);
      this.failures.set(k, next);
      if (this.failures.size > this.maxKeys) {
        const oldest = this.failures.keys().next();
        if (!oldest.done) this.failures.delete(oldest.value);
      }
    }
  }

  /** Takes back one failure charged in advance (see DeviceTokens.verify). */
  refund(keys: readonly string[]): void {
    for (const k of keys) {
      const f = this.failures.get(k);
      if (!f) continue;
      if (f.count <= 1) this.failures.delete(k);
      else f.count--;
    }
  }

  /** A device that proved its token starts afresh; its address's record stays. */
  succeed(key: string): void {
    this.failures.delete(key);
  }

  get size(): number {
    return this.failures.size;
  }
}
