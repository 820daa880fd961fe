import { LIMITS } from '../limits.ts';

/**
 * A failure budget for bearer tokens: at most `maxFailures` failed tokens per key (a source
 * address, a device id) within `windowMs`; past it, the key is refused without checking anything
 * until its oldest counted failure leaves the window. Guessing is then bounded per key, and a
 * refused guess costs nothing to check. Used by the gateway for device tokens
 * (dmz/gateway/device-tokens.ts) and by the console's management API for role tokens
 * (internal-network/console/manage/routes.ts).
 *
 * The window is fixed from a key's first counted failure, and a success never starts it afresh
 * unless the caller says so (`succeed`): a guesser holding one valid token cannot slip it between
 * guesses to reset the count.
 *
 * Memory is bounded: at most `maxKeys` keys; when full, the key written longest ago is forgotten
 * (a Map iterates in insertion order, and a key is moved to the end on every failure).
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
    return keys.some((k) => this.spent(k, now));
  }

  /** Milliseconds until none of the keys is blocked any more (0: none is). */
  retryAfterMs(keys: readonly string[], now = Date.now()): number {
    let ms = 0;
    for (const k of keys) {
      const f = this.failures.get(k);
      if (f && this.spent(k, now)) ms = Math.max(ms, f.first + this.windowMs - now);
    }
    return ms;
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

  /** A key that proved itself (a device, its own token) starts afresh; other keys' records stay. */
  succeed(key: string): void {
    this.failures.delete(key);
  }

  get size(): number {
    return this.failures.size;
  }

  /** Whether the key has spent its budget; a record whose window has passed is forgotten. */
  private spent(k: string, now: number): boolean {
    const f = this.failures.get(k);
    if (!f) return false;
    if (now - f.first >= this.windowMs) {
      this.failures.delete(k);
      return false;
    }
    return f.count >= this.maxFailures;
  }
}
