import type { MqttClient } from 'mqtt';
import { LimitedLog } from '../../shared/limited-log.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { ConnectedRoundRobin } from './connected-clients.ts';

export interface PresenceClearerOptions {
  /** clears a second (LIMITS.presenceClearsPerSecond) */
  perSecond: number;
  /** topics held waiting at most (LIMITS.presenceClearsPendingMax) */
  maxPending: number;
  /** milliseconds between sends (TIMINGS.presenceClearTickMs) */
  tickMs: number;
}

/**
 * Clears, on the internal broker, the retained presence of a device id the distributor judged
 * invented by the DMZ (MessageVerifier.isInvented). Device presences are retained (the gateway
 * publishes them so), the bridge brings them in, and Mosquitto keeps the last one of each topic for
 * ever, in memory and in its persistence file, and hands them all to every new plain subscriber:
 * a compromised DMZ publishing presences of ever new ids grew the internal broker without bound
 * (Mosquitto 2.0 has no limit on retained messages). An empty retained publish removes the retained
 * message of its topic (MQTT 5 §3.3.1.3, MQTT 3.1.1 §3.3.1.3); it is also delivered, empty, to the
 * topic's current subscribers, the distributors included, which take an empty presence as a clear
 * and nothing else (message-handler.ts; the command API likewise).
 *
 * Rate-limited (each clear is a message to every subscriber of the presence topic) and bounded:
 * waiting topics are kept once each, at most `maxPending`; past it a clear is counted as skipped,
 * and that presence stays retained until its id's presence comes again. Several distributors need
 * nothing between them: a shared subscription hands each presence to one of them, and a clear is
 * the same whoever sends it, any number of times. Nothing is kept across a restart: the clears still
 * waiting then are not sent (the presences were acknowledged); the next sweep of what is retained
 * finds them again (retained-sweeper.ts). The same clearing, a second instance, clears the other
 * retained messages the DMZ leaves.
 */
export class PresenceClearer {
  private readonly pending = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private readonly roundRobin: ConnectedRoundRobin;
  private closed = false;
  private readonly refusedLog: LimitedLog;
  readonly stats = { cleared: 0, skipped: 0, refused: 0 };

  constructor(
    clients: readonly MqttClient[],
    log: Logger,
    private readonly counters: { cleared?: { inc(): void }; skipped?: { inc(): void } } = {},
    private readonly o: PresenceClearerOptions = { perSecond: LIMITS.presenceClearsPerSecond, maxPending: LIMITS.presenceClearsPendingMax, tickMs: TIMINGS.presenceClearTickMs },
    /** what is cleared, for the log: the same clearing serves the other retained messages the DMZ leaves (retained-sweeper.ts) */
    private readonly what = 'the retained presence of an invented device id',
  ) {
    this.roundRobin = new ConnectedRoundRobin(clients);
    this.refusedLog = new LimitedLog(log, { level: 'error', maxPerWindow: 1, windowMs: TIMINGS.floodLogIntervalMs, what: 'presence clears the broker refused' });
  }

  /** Topics waiting to be cleared. */
  get waiting(): number {
    return this.pending.size;
  }

  /** Asks for the retained message of `topic` (a device's presence topic, or any other: retained-sweeper.ts) to be cleared. */
  clear(topic: string): void {
    if (this.closed || this.pending.has(topic)) return;
    if (this.pending.size >= this.o.maxPending) {
      this.stats.skipped++;
      this.counters.skipped?.inc();
      return;
    }
    this.pending.add(topic);
    this.timer ??= setTimeout(() => this.send(), 0);
  }

  /**
   * Withdraws a clear of `topic` still waiting: a valid presence retained on it since (the device's
   * gateway publishing again) replaced what was to be cleared, and the clear, sent after it, would
   * remove the genuine presence the command API learns from. One already sent is not recalled.
   */
  keep(topic: string): void {
    this.pending.delete(topic);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending.clear();
  }

  private send(): void {
    this.timer = undefined;
    let budget = Math.max(1, Math.floor((this.o.perSecond * this.o.tickMs) / 1000));
    for (const topic of this.pending) {
      if (budget-- <= 0) break;
      const client = this.roundRobin.pick();
      if (!client) break; // kept: sent once a connection is back
      this.pending.delete(topic);
      client.publish(topic, Buffer.alloc(0), { qos: 1, retain: true }, (err) => {
        if (!err) {
          this.stats.cleared++;
          this.counters.cleared?.inc();
          return;
        }
        // Refused (the broker's ACL lacks the distributor's write of presence topics: an ACL file of
        // an earlier version) or the connection lost before the PUBACK: the presence stays retained.
        this.stats.refused++;
        this.stats.skipped++;
        this.counters.skipped?.inc();
        this.refusedLog.write({ topic, err: err.message }, `${this.what} was not cleared; it stays on the broker`);
      });
    }
    if (this.pending.size > 0 && !this.closed) {
      this.timer = setTimeout(() => this.send(), this.o.tickMs);
      this.timer.unref();
    }
  }
}
