import { LIMITS, TIMINGS } from '../../shared/limits.ts';

/**
 * A token bucket: `ratePerS` tokens a second, at most `burst` saved up. Used per device (not per
 * connection, so reconnecting does not refill it) for messages and for bytes.
 */
export class TokenBucket {
  private tokens: number;
  /** performance.now(): a clock that does not step back when the system's is set */
  private last = performance.now();

  constructor(
    private readonly ratePerS: number,
    private readonly burst: number,
  ) {
    this.tokens = burst;
  }

  /** Takes n tokens if there are; false (and nothing taken) otherwise. */
  take(n: number): boolean {
    this.refill();
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  /** Takes n tokens whatever is left: for a cost known only once it was paid, the bucket may owe. */
  charge(n: number): void {
    this.refill();
    this.tokens -= n;
  }

  /** Whether the bucket owes nothing. */
  inCredit(): boolean {
    this.refill();
    return this.tokens >= 0;
  }

  private refill(): void {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.ratePerS);
    this.last = now;
  }
}

export interface RateLimits {
  /** messages per second per device */
  messagesPerS: number;
  /** bytes per second per device */
  bytesPerS: number;
  /** milliseconds of the gateway's CPU per second per device, spent parsing and checking its frames */
  cpuMsPerS: number;
  /** seconds of traffic a device may send at once after being quiet */
  burstS: number;
  /** the largest frame (messages, bytes) must always fit in a full bucket, or it could never pass */
  frameMaxMessages: number;
  frameMaxBytes: number;
}

/** The buckets of every device seen recently. */
export class DeviceRateLimiter {
  private readonly devices = new Map<string, { messages: TokenBucket; bytes: TokenBucket; cpu: TokenBucket; limited: number; seen: number }>();

  constructor(private readonly limits: RateLimits) {}

  private of(deviceId: string) {
    let d = this.devices.get(deviceId);
    if (!d) {
      const { messagesPerS: m, bytesPerS: b, cpuMsPerS: c, burstS, frameMaxMessages, frameMaxBytes } = this.limits;
      d = {
        messages: new TokenBucket(m, Math.max(m * burstS, frameMaxMessages)),
        bytes: new TokenBucket(b, Math.max(b * burstS, frameMaxBytes)),
        cpu: new TokenBucket(c, c * burstS),
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

  /**
   * Checked before a frame is parsed: whether the device owes no CPU time. What a frame costs to
   * parse is known only after (JSON made of tiny values costs a hundred times a flat file chunk of
   * its size, and a parse cannot be cut short), so it is charged then (chargeCpu) and may leave the
   * device owing: its frames are refused until the bucket has refilled. A device's parsing thus
   * holds at most GATEWAY_RATE_CPU_MS_PER_S of the gateway over time, whatever it sends. The time is
   * the clock's (performance.now() around the parse: a CPU clock would cost a system call a frame), so
   * a garbage collection during a device's parse is charged to it; the burst absorbs those.
   */
  allowCpu(deviceId: string): boolean {
    const d = this.of(deviceId);
    if (d.cpu.inCredit()) return true;
    d.limited++;
    return false;
  }

  /** milliseconds the gateway spent on the device's frame */
  chargeCpu(deviceId: string, ms: number): void {
    this.of(deviceId).cpu.charge(ms);
  }

  limitedCount(deviceId: string): number {
    return this.devices.get(deviceId)?.limited ?? 0;
  }

  private forgetIdle(): void {
    const cutoff = Date.now() - TIMINGS.rateLimitIdleMs;
    for (const [id, d] of this.devices) if (d.seen < cutoff) this.devices.delete(id);
  }
}
