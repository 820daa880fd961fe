import { TIMINGS } from '../../shared/limits.ts';

/**
 * How long the field client pauses after a transient error frame (GATEWAY_RATE_LIMITED,
 * GATEWAY_BROKER_UNAVAILABLE) before it sends again from the first unacknowledged message.
 *
 * The pause doubles after each rewind that brought no progress, up to TIMINGS.transientRewindMaxMs,
 * and starts over at the gateway's next ack (progress). A fixed pause would have a gateway that
 * answers every frame with a transient error (overloaded, or compromised) get the whole window again
 * every second for as long as it does. Equal jitter (half fixed, half random): devices refused
 * together do not come back together, and the pause never shrinks to nothing.
 */
export class RewindBackoff {
  /** rewinds since the last progress */
  private attempts = 0;

  constructor(
    /** milliseconds: the first pause */
    private readonly baseMs: number = TIMINGS.transientRewindMs,
    /** milliseconds: the longest pause */
    private readonly maxMs: number = Math.max(baseMs, TIMINGS.transientRewindMaxMs),
    private readonly random: () => number = Math.random,
  ) {}

  /** The pause before the next rewind (milliseconds); each call counts one rewind. */
  next(): number {
    const cap = Math.min(this.maxMs, this.baseMs * 2 ** Math.min(this.attempts, 30));
    this.attempts++;
    return Math.round(cap / 2 + this.random() * (cap / 2));
  }

  /** The gateway took something: the next pause is the first one again. */
  progress(): void {
    this.attempts = 0;
  }
}

/**
 * The rewind after transient errors: at most one waiting at a time. The errors arriving meanwhile
 * (one per frame of the window) neither add a rewind nor put the waiting one off.
 */
export class TransientRewind {
  private timer: NodeJS.Timeout | undefined;
  private readonly backoff: RewindBackoff;

  constructor(
    private readonly rewind: () => void,
    /** milliseconds: the first pause (TIMINGS.transientRewindMs) */
    baseMs?: number,
  ) {
    this.backoff = new RewindBackoff(baseMs);
  }

  /** A transient error: send again from the first unacknowledged message after the next pause. */
  schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.rewind();
    }, this.backoff.next());
    this.timer.unref();
  }

  /** The gateway acked, or a receipt committed something: the next pause is the first again. */
  progress(): void {
    this.backoff.progress();
  }

  /** Disconnected or stopping: the next connection starts from the first unacknowledged message anyway (the pause is kept: a reconnect is no progress). */
  cancel(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
