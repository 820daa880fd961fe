import { LIMITS, TIMINGS } from '../../shared/limits.ts';

/**
 * A token bucket: `ratePerS` tokens a second, at most `burst` saved up. Used per device (not per
 * connection, so reconnecting does not refill it) for messages and for bytes.
 */
export class TokenBucket {
  private tokens: number;
  private last = Date.now();

  constructor(
    private readonly ratePerS: number,
    private readonly burst: number,
  ) {
    this.tokens = burst;
  }

  /** Takes n tokens if there are; false (and nothing taken) otherwise. */
  take(n: number): boolean {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.ratePerS);
    this.last = now;
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }
}

export interface RateLimits {
  /** messages per second per device */
  messagesPerS: number;
  /** bytes per second per device */
  bytesPerS: number;
  /** seconds of traffic a device may send at once after being quiet */
  burstS: number;
  /** the largest frame (messages, bytes) must always fit in a full bucket, or it could never pass */
  frameMaxMessages: number;
  frameMaxBytes: number;
}

/** The buckets of every device seen recently. */
export class DeviceRateLimiter {
  private readonly devices = new Map<string, { messages: TokenBucket; bytes: TokenBucket; limited: number; seen: number }>();

  constructor(private readonly limits: RateLimits) {}

  private of(deviceId: string) {
    let d = this.devices.get(deviceId);
    if (!d) {
      const { messagesPerS: m, bytesPerS: b, burstS, frameMaxMessages, frameMaxBytes } = this.limits;
      d = {
        messages: new TokenBucket(m, Math.max(m * burstS, frameMaxMessages)),
        bytes: new TokenBucket(b, Math.max(b * burstS, frameMaxBytes)),
        limited: 0,
        seen: 0,
      };
      this.devices.set(deviceId, d);
      if (this.devices.size > LIMITS.rateLimitTrackedDevices) this.forgetIdle();
    }
    d.seen = Date.now();
    return d;
  }

  /** Checked before a frame is parsed: its size. */
  allowBytes(deviceId: string, bytes: number): boolean {
    const d = this.of(deviceId);
    if (d.bytes.take(bytes)) return true;
    d.limited++;
    return false;
  }

  allowMessages(deviceId: string, count: number): boolean {
    const d = this.of(deviceId);
    if (d.messages.take(count)) return true;
    d.limited++;
    return false;
  }

  limitedCount(deviceId: string): number {
    return this.devices.get(deviceId)?.limited ?? 0;
  }

  private forgetIdle(): void {
    const cutoff = Date.now() - TIMINGS.rateLimitIdleMs;
    for (const [id, d] of this.devices) if (d.seen < cutoff) this.devices.delete(id);
  }
}
