import type { WebSocket } from 'ws';
import { TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';

/**
 * Bytes of one device's frames the publisher or its MQTT client still holds (not PUBACKed), over
 * all of its connections: what a connection left with the broker is still the device's when it
 * connects again (or a second connection takes over), and counted per connection a device that
 * reconnected held a new share each time, the backlog all devices share filled by one device.
 * Every connection of the device watching it looks again at each change, so the one open now
 * reads on once what an earlier one left is let go of.
 */
export class DeviceHeldBytes {
  private held = 0;
  private readonly watchers = new Set<() => void>();

  /** `onIdle`: nothing held and no connection watching (the registry forgets the device) */
  constructor(private readonly onIdle: () => void = () => undefined) {}

  get bytes(): number {
    return this.held;
  }

  add(bytes: number): void {
    this.held += bytes;
    for (const w of this.watchers) w();
    this.idle();
  }

  /** Calls `w` at each change; returns what stops it. */
  watch(w: () => void): () => void {
    this.watchers.add(w);
    return () => {
      this.watchers.delete(w);
      this.idle();
    };
  }

  private idle(): void {
    if (this.held === 0 && this.watchers.size === 0) this.onIdle();
  }
}

/** Each device's DeviceHeldBytes, kept while it has a connection or bytes held (server.ts). */
export class HeldBytesByDevice {
  private readonly devices = new Map<string, DeviceHeldBytes>();

  of(deviceId: string): DeviceHeldBytes {
    const known = this.devices.get(deviceId);
    if (known) return known;
    const created = new DeviceHeldBytes(() => {
      if (this.devices.get(deviceId) === created) this.devices.delete(deviceId);
    });
    this.devices.set(deviceId, created);
    return created;
  }
}

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
  /** stops watching the device's bytes */
  private readonly unwatch: () => void;

  /** `device`: the bytes of the device's frames held, over all its connections (one of its own by default) */
  constructor(
    private readonly ws: Pick<WebSocket, 'pause' | 'resume'>,
    private readonly limits: InFlightLimits,
    /** whose logger tells of pauses (the session's, made at its first use: DeviceSession.log) */
    private readonly logs: { readonly log: Logger },
    private readonly device: DeviceHeldBytes = new DeviceHeldBytes(),
  ) {
    this.unwatch = device.watch(() => this.look());
    // Paused from the start when the device's earlier connections left its share with the broker.
    this.look();
  }

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
   * (GATEWAY_BROKER_BACKLOG_MAX_MIB) is shared by all devices. Messages are this connection's,
   * bytes the device's (DeviceHeldBytes). A frame is always read when nothing waits, however large.
   */
  track(messages: number, bytes: number): void {
    this.inFlight += messages;
    // add() has every connection of the device look again, this one included.
    if (bytes !== 0) this.device.add(bytes);
    else this.look();
  }

  private look(): void {
    const bytes = this.device.bytes;
    const maxBytes = this.limits.maxInFlightBytes ?? Number.POSITIVE_INFINITY;
    if (!this.paused && (this.inFlight >= this.limits.maxInFlight || bytes >= maxBytes)) {
      this.paused = true;
      this.setReading();
      this.logs.log.debug({ inFlight: this.inFlight, inFlightBytes: bytes }, 'paused reading: in-flight limit reached');
    } else if (this.paused && this.inFlight <= this.limits.maxInFlight / 2 && bytes <= maxBytes / 2) {
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
    this.unwatch();
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
