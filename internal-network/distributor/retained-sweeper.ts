import type { MqttClient } from 'mqtt';
import { LimitedLog } from '../../shared/limited-log.ts';
import { TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';

export interface RetainedSweepOptions {
  /** milliseconds from the start to the first sweep (TIMINGS.retainedSweepFirstMs) */
  firstMs: number;
  /** milliseconds between sweeps (TIMINGS.retainedSweepIntervalMs) */
  intervalMs: number;
  /** milliseconds without a retained message after which a sweep has them all (TIMINGS.retainedSweepIdleMs) */
  idleMs: number;
  /** milliseconds a sweep listens at most (TIMINGS.retainedSweepMaxMs) */
  maxMs: number;
  /** topics one sweep hands to be cleared at most (LIMITS.presenceClearsPendingMax: no more can wait to be cleared); those that may stay are not counted */
  maxTopics: number;
}

/** Every topic but those beginning with "$" (MQTT 5 §4.7.2: a wildcard at the first level matches none of them). */
const EVERYTHING = '#';

/**
 * Finds what is retained on the internal broker and has what should not stay cleared. A bridge
 * brings in whatever the DMZ broker sends, on any topic, retained too, held by no ACL (Mosquitto 2.0
 * applies none to a bridge, and its `topic ... in` lines choose what it subscribes to, not what it
 * takes); Mosquitto keeps the last retained message of every topic for ever, in memory and in its
 * persistence file, with no bound (2.0 has none): a compromised DMZ publishing retained messages on
 * ever new topics grew the internal broker until it ran out of memory or disk. The only retained
 * messages that belong there are device presences (the gateways publish them so) and the broker's
 * own `$SYS`; the distributor clears, as they arrive, those on the topics it reads
 * (message-handler.ts), and this finds the rest: on topics no service reads, and those retained
 * while no distributor ran.
 *
 * Each sweep subscribes to `#` on a connection of its own (a clean session), takes the messages the
 * broker hands over with the RETAIN flag (those it holds: MQTT 5 §3.3.1.3, a new subscription is
 * sent them so; what is published meanwhile arrives without it, Retain As Published being off) until
 * none came for `idleMs`, unsubscribes, and hands each topic `mayStay` refuses to `clear` (rate-
 * limited and bounded, presence-clearer.ts). One sweep takes at most `maxTopics` topics to clear;
 * the next takes the rest. What may stay counts nothing against that bound: the broker hands its
 * retained messages over in the same order at every sweep (its topic tree's), and a fleet's
 * presences, 50,000 and more, took every sweep's whole bound, so that what the DMZ left after them
 * was never reached. Not reached: topics beginning with "$" (`#` does not match them, and Mosquitto refuses a
 * client's publish under `$SYS`): SECURITY.md.
 */
export class RetainedSweeper {
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private running: Promise<void> | undefined;
  private collect: ((topic: string, payload: Buffer) => void) | undefined;
  /** during a sweep, a message that came live (not one the broker held retained) */
  private live: ((topic: string, payload: Buffer) => void) | undefined;
  private readonly refusedLog: LimitedLog;
  readonly stats = { sweeps: 0, retained: 0, cleared: 0 };

  constructor(
    private readonly client: MqttClient,
    /** whether a retained message on this topic, holding this, may stay (a valid device presence of an id not invented) */
    private readonly mayStay: (topic: string, payload: Buffer) => boolean,
    private readonly clear: (topic: string) => void,
    private readonly log: Logger,
    private readonly o: RetainedSweepOptions,
  ) {
    this.refusedLog = new LimitedLog(log, { level: 'error', maxPerWindow: 1, windowMs: TIMINGS.floodLogIntervalMs, what: 'sweeps the broker refused' });
    client.on('message', (topic, payload, packet) => {
      if (packet.retain) this.collect?.(topic, payload);
      else this.live?.(topic, payload);
    });
  }

  start(): void {
    this.schedule(this.o.firstMs);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      this.running = this.sweep()
        .then(
          () => undefined,
          (err: unknown) => this.log.warn({ err: (err as Error).message }, 'sweeping retained messages failed; tried again at the next sweep'),
        )
        .finally(() => {
          this.running = undefined;
          this.schedule(this.o.intervalMs);
        });
    }, ms);
    this.timer.unref();
  }

  /** One sweep; resolves with the number of topics handed to `clear` (none while not connected). */
  async sweep(): Promise<number> {
    if (!this.client.connected || this.closed) return 0;
    // the topics to clear; what may stay is only counted
    const found = new Set<string>();
    let retained = 0;
    let last = Date.now();
    const started = last;
    this.collect = (topic, payload) => {
      retained++;
      last = Date.now();
      if (found.size < this.o.maxTopics && !found.has(topic) && !this.mayStay(topic, payload)) found.add(topic);
    };
    // A device's presence published during the sweep on a topic found to clear: the gateways publish
    // presences retained, so it replaced what was found (a Retain flag is not passed on live, MQTT 5
    // §3.3.1.3), and clearing the topic would remove the device's own presence. The live flow does
    // not lengthen the sweep.
    this.live = (topic, payload) => {
      if (found.has(topic) && this.mayStay(topic, payload)) found.delete(topic);
    };
    try {
      const granted = await this.client.subscribeAsync(EVERYTHING, { qos: 0, rh: 0 });
      // MQTT 5 §3.9.3: a reason code of 0x80 or more refuses the subscription.
      if (granted.some((g) => g.qos >= 0x80)) {
        this.refusedLog.write({ filter: EVERYTHING }, "the broker refused the distributor's subscription to # (an internal ACL of an earlier version, without `topic readwrite #` for the distributor): retained messages left by the DMZ are not swept");
        return 0;
      }
      last = Date.now();
      while (!this.closed && this.client.connected && Date.now() - last < this.o.idleMs && Date.now() - started < this.o.maxMs) {
        await new Promise((r) => setTimeout(r, Math.min(100, this.o.idleMs)));
      }
    } finally {
      this.collect = undefined;
      this.live = undefined;
      if (this.client.connected) await this.client.unsubscribeAsync(EVERYTHING).catch(() => undefined);
    }
    for (const topic of found) this.clear(topic);
    const cleared = found.size;
    this.stats.sweeps++;
    this.stats.retained += retained;
    this.stats.cleared += cleared;
    if (cleared > 0) this.log.warn({ retained, clearing: cleared }, 'retained messages that do not belong on the internal broker (left there through the bridge) are being cleared');
    return cleared;
  }
}
