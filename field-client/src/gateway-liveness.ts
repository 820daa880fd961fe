import { TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';

/**
 * Whether the gateway of the open connection (gateway-connection.ts) still shows signs of life: the
 * connection is presumed dead when it showed none for idleTimeoutMs, or for answerTimeoutMs since a
 * frame was sent (checkLife), and `dead` is called to drop it.
 */
export class GatewayLiveness {
  /** the liveness check (see checkLife), armed for its next deadline */
  private lifeTimer: NodeJS.Timeout | undefined;
  /**
   * when the lifeTimer fires. These three are on this process's monotonic clock (performance.now()),
   * not the wall clock: the device's clock set back while a frame awaited its answer (NTP stepping
   * a device that booted with its clock ahead) put the deadline off by the step, and a dead path
   * (no FIN, no RST) was kept for that long, an hour for an hour, with everything queued behind it.
   */
  private lifeTimerAt = Infinity;
  /** the last sign of life from the gateway: the opening, a frame, a ping (performance.now()) */
  private heardAt = 0;
  /** the first frame sent since the last sign of life (performance.now(); undefined: none since) */
  private sentSince: number | undefined;

  constructor(
    /** milliseconds without any sign of life, at all or since a frame was sent (ConnectionOptions) */
    private readonly o: { idleTimeoutMs: number; answerTimeoutMs?: number | undefined },
    private readonly log: Logger,
    /** drops the connection presumed dead */
    private readonly dead: () => void,
  ) {}

  /** A frame is handed to the open connection. */
  sent(): void {
    if (this.sentSince !== undefined) return;
    // An answer is due now: the liveness check comes no later than its deadline.
    this.sentSince = performance.now();
    const due = this.sentSince + this.answerTimeoutMs;
    if (due < this.lifeTimerAt) this.armLife(due);
  }

  /** A sign of life from the gateway. Called per frame: only notes the time (no timer is touched). */
  touch(): void {
    this.heardAt = performance.now();
    this.sentSince = undefined;
    if (!this.lifeTimer) this.armLife(this.heardAt + this.o.idleTimeoutMs);
  }

  private get answerTimeoutMs(): number {
    return this.o.answerTimeoutMs ?? TIMINGS.answerTimeoutMs;
  }

  /**
   * The connection is presumed dead (and dropped, so that the next URL is tried) when the gateway
   * showed no sign of life for idleTimeoutMs, or for answerTimeoutMs since a frame was sent. A live
   * gateway answers every frame (an ack, or an error within LIMITS.publishTimeoutMs) and pings
   * every TIMINGS.heartbeatMs whatever it does, so a device that is sending learns of a dead path
   * (a DMZ server whose power went: no FIN, no RST) in well under the idle timeout, and an idle one
   * costs no traffic of its own. One timer, moved only when a deadline comes earlier.
   */
  private checkLife(): void {
    this.lifeTimer = undefined;
    const now = performance.now();
    const idleAt = this.heardAt + this.o.idleTimeoutMs;
    const answerAt = this.sentSince !== undefined ? this.sentSince + this.answerTimeoutMs : Infinity;
    if (now < Math.min(idleAt, answerAt)) {
      this.armLife(Math.min(idleAt, answerAt));
      return;
    }
    const silentMs = now - this.heardAt;
    if (answerAt <= now) this.log.warn({ code: 'FIELD_GATEWAY_SILENT', silentMs, sentAgoMs: now - (this.sentSince as number) }, 'the gateway answered nothing sent to it; reconnecting');
    else this.log.warn({ code: 'FIELD_GATEWAY_SILENT', silentMs }, 'no sign of life from the gateway; reconnecting');
    this.dead();
  }

  private armLife(at: number): void {
    clearTimeout(this.lifeTimer);
    this.lifeTimerAt = at;
    this.lifeTimer = setTimeout(() => this.checkLife(), Math.max(0, at - performance.now()));
    this.lifeTimer.unref();
  }

  /** No deadline (the connection closed or the client stops). */
  disarm(): void {
    clearTimeout(this.lifeTimer);
    this.lifeTimer = undefined;
    this.lifeTimerAt = Infinity;
    this.sentSince = undefined;
  }
}
