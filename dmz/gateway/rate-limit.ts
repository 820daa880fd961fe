import { LIMITS, TIMINGS } from '../../shared/limits.ts';

/**
 * A token bucket: `ratePerS` tokens a second, at most `burst` saved up. Used per device (not per
 * connection, so reconnecting does not refill it) for messages, bytes and CPU time. `now` is
 * performance.now() (milliseconds; a clock that does not step back when the system's is set),
 * read once by the caller for all of a device's buckets.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly ratePerS: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.last = now;
  }

  /** Takes n tokens if there are; false (and nothing taken) otherwise. */
  take(n: number, now: number): boolean {
    this.refill(now);
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  /** Takes n tokens whatever is left: for a cost known only once it was paid, the bucket may owe. */
  charge(n: number, now: number): void {
    this.refill(now);
    this.tokens -= n;
  }

  /** Whether the bucket owes nothing. */
  inCredit(now: number): boolean {
    this.refill(now);
    return this.tokens >= 0;
  }

  private refill(now: number): void {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.ratePerS);
    this.last = now;
  }
}

export interface RateLimits {
  /** messages per second per device */
  messagesPerS: number;
  /** bytes per second per device */
  bytesPerS: number;
  /** milliseconds of the gateway's CPU per second per device, spent parsing and checking its frames and reading its socket (control frames, fragments) */
  cpuMsPerS: number;
  /** seconds of traffic a device may send at once after being quiet */
  burstS: number;
  /** the largest frame (messages, bytes) must always fit in a full bucket, or it could never pass */
  frameMaxMessages: number;
  frameMaxBytes: number;
}

export type Budget = 'messages' | 'bytes' | 'cpu';

/**
 * One device's buckets. A session looks its device's up once per frame (DeviceRateLimiter.of) and
 * asks it everything about that frame: the gateway's per-frame work is about 13 µs for a device
 * sending a reading per frame, and four lookups and clock reads were a few tenths of that.
 */
export class DeviceBudget {
  private readonly messages: TokenBucket;
  private readonly bytes: TokenBucket;
  private readonly cpu: TokenBucket;
  /** frames refused so far */
  limited = 0;
  /** Date.now() of its last frame (idle devices are forgotten) */
  seen = 0;

  constructor(limits: RateLimits, now: number) {
    const { messagesPerS: m, bytesPerS: b, cpuMsPerS: c, burstS, frameMaxMessages, frameMaxBytes } = limits;
    this.messages = new TokenBucket(m, Math.max(m * burstS, frameMaxMessages), now);
    this.bytes = new TokenBucket(b, Math.max(b * burstS, frameMaxBytes), now);
    this.cpu = new TokenBucket(c, c * burstS, now);
  }

  /**
   * Checked before a frame is parsed: which budget refuses it, if one does. Every frame counts as
   * one message (the rest of its messages once they are counted: `more`). The CPU budget first:
   * its check takes nothing, so a frame it refuses spends no bytes or messages.
   *
   * A frame's parse cost is known only after (JSON made of tiny values costs a hundred times a
   * flat file chunk of its size, and a parse cannot be cut short), so it is charged then
   * (chargeCpu) and may leave the device owing: its frames are refused until the bucket has
   * refilled. A device's parsing thus holds at most GATEWAY_RATE_CPU_MS_PER_S of the gateway over
   * time, whatever it sends. The time is the clock's (performance.now() around the parse: a CPU
   * clock would cost a system call a frame), so a garbage collection during a device's parse is
   * charged to it; the burst absorbs those.
   */
  admit(frameBytes: number, now: number): Budget | undefined {
    const over = !this.cpu.inCredit(now) ? 'cpu' : !this.bytes.take(frameBytes, now) ? 'bytes' : !this.messages.take(1, now) ? 'messages' : undefined;
    if (over) this.limited++;
    return over;
  }

  /** The frame's messages after its first (admit counted that one). */
  more(count: number, now: number): boolean {
    if (count <= 0 || this.messages.take(count, now)) return true;
    this.limited++;
    return false;
  }

  /** milliseconds the gateway spent on the device's frame */
  chargeCpu(ms: number, now: number): void {
    this.cpu.charge(ms, now);
  }

  /**
   * Milliseconds the gateway spent on one read of the device's socket beyond its frames' parses
   * (ws taking its frames apart: control frames, fragments, UTF-8 checks). False (and counted as a
   * refusal) when the device now owes time: no frame of such a read reaches admit(), so a flood of
   * them is stopped here.
   */
  chargeRead(ms: number, now: number): boolean {
    this.cpu.charge(ms, now);
    if (this.cpu.inCredit(now)) return true;
    this.limited++;
    return false;
  }
}

/** The buckets of every device seen recently. */
export class DeviceRateLimiter {
  private readonly devices = new Map<string, DeviceBudget>();
  /** past this many tracked devices, the idle are looked for (see of()) */
  private scanAt: number;

  constructor(
    private readonly limits: RateLimits,
    /** devices tracked before the idle are forgotten (LIMITS.rateLimitTrackedDevices) */
    private readonly trackedMax: number = LIMITS.rateLimitTrackedDevices,
  ) {
    this.scanAt = trackedMax;
  }

  /** The device's budget, kept across its connections. `now`: performance.now(); `wallNow`: Date.now(). */
  of(deviceId: string, now: number, wallNow: number): DeviceBudget {
    let d = this.devices.get(deviceId);
    if (!d) {
      d = new DeviceBudget(this.limits, now);
      // Seen before the idle are looked for, or the new device would be the first forgotten: a
      // fresh, full budget at each of its frames, i.e. none.
      d.seen = wallNow;
      this.devices.set(deviceId, d);
      if (this.devices.size > this.scanAt) {
        this.forgetIdle(wallNow);
        // When most are busy, the next look waits until there are twice as many: a look goes
        // through every device, and one at each new device would cost each connection that much.
        this.scanAt = Math.max(this.trackedMax, this.devices.size * 2);
      }
    }
    d.seen = wallNow;
    return d;
  }

  private forgetIdle(wallNow: number): void {
    const cutoff = wallNow - TIMINGS.rateLimitIdleMs;
    for (const [id, d] of this.devices) if (d.seen < cutoff) this.devices.delete(id);
  }
}
