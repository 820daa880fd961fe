import type { WebSocket } from 'ws';
import { TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';

/** A device session's bounds on what awaits the broker (SessionLimits). */
export interface InFlightLimits {
  maxInFlight: number;
  maxInFlightBytes?: number | undefined;
}

/**
 * Whether the gateway reads a device's socket (device-session.ts), and why not: too much of the
 * device's awaits the broker (backpressure, track), it is past its rate limit (for a moment,
 * pauseForRate), or it was shed (shed). Reading is paused while any of them holds.
 */
export class ReadPause {
  private inFlight = 0;
  /** bytes of frames the publisher holds (see track) */
  private inFlightBytes = 0;
  /** too much awaits the broker (see track) */
  private paused = false;
  /** over its rate limit (see pauseForRate) */
  private ratePaused = false;
  private rateTimer: NodeJS.Timeout | undefined;
  /** shed (DeviceSession.closeUnread): nothing more of the socket is read */
  private isShed = false;
  /** whether the socket is paused now (for any of those reasons) */
  private socketPaused = false;
  /** times reading was paused so far (see count) */
  private pauses = 0;
  /** the connection closed: nothing more is paused or resumed */
  private stopped = false;

  constructor(
    private readonly ws: Pick<WebSocket, 'pause' | 'resume'>,
    private readonly limits: InFlightLimits,
    private readonly log: Logger,
  ) {}

  /** whether the socket is paused now */
  get now(): boolean {
    return this.socketPaused;
  }

  /** how many times reading was paused so far */
  get count(): number {
    return this.pauses;
  }

  /** whether the device is paused for its rate limit */
  get forRate(): boolean {
    return this.ratePaused;
  }

  /**
   * Backpressure: stop reading the socket while too much waits for the broker (TCP then slows the
   * device), in messages or in bytes: a device's frames may be megabytes each, and the backlog
   * (GATEWAY_BROKER_BACKLOG_MAX_MIB) is shared by all devices. A frame is always read when nothing
   * waits, however large.
   */
  track(messages: number, bytes: number): void {
    this.inFlight += messages;
    this.inFlightBytes += bytes;
    const maxBytes = this.limits.maxInFlightBytes ?? Number.POSITIVE_INFINITY;
    if (!this.paused && (this.inFlight >= this.limits.maxInFlight || this.inFlightBytes >= maxBytes)) {
      this.paused = true;
      this.setReading();
      this.log.debug({ inFlight: this.inFlight, inFlightBytes: this.inFlightBytes }, 'paused reading: in-flight limit reached');
    } else if (this.paused && this.inFlight <= this.limits.maxInFlight / 2 && this.inFlightBytes <= maxBytes / 2) {
      this.paused = false;
      this.setReading();
    }
  }

  /** Pauses reading for TIMINGS.gatewayRateLimitedPauseMs, unless already paused for the rate. */
  pauseForRate(): void {
    if (this.ratePaused) return;
    this.ratePaused = true;
    this.setReading();
    this.rateTimer = setTimeout(() => {
      this.ratePaused = false;
      this.setReading();
    }, TIMINGS.gatewayRateLimitedPauseMs);
  }

  /** Reads nothing more of the socket. */
  shed(): void {
    this.isShed = true;
    this.setReading();
  }

  /** The connection closed. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.rateTimer);
  }

  /** Pauses or resumes reading the socket: paused while either reason holds. */
  private setReading(): void {
    const pause = this.isShed || this.paused || this.ratePaused;
    if (pause === this.socketPaused || this.stopped) return;
    this.socketPaused = pause;
    if (pause) {
      this.pauses++;
      this.ws.pause();
    } else this.ws.resume();
  }
}
