import { EventPayloadSchema, TimeseriesPayloadSchema } from '../../../../shared/contract/payloads.ts';
import { FieldStreamError, isFieldStreamError, type ErrorCode } from '../../../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../../../shared/limits.ts';
import type { Logger } from '../../../../shared/logger.ts';
import type { FieldClient, Submission } from '../../field-client.ts';
import { SparkplugHost } from './host.ts';
import { decodePayload, rebirthCommand } from './payload.ts';
import { ncmdTopic, parseTopic } from './topic.ts';

/** What the Sparkplug input did since the client started (the field client's /metrics shows it). */
export interface SparkplugStats {
  /** messages of the followed groups taken in, refused ones included (STATE and commands not counted) */
  messages: number;
  readings: number;
  events: number;
  /** metrics left out of the readings: null, not a scalar type, transient, name too long */
  metricsSkipped: number;
  rebirthsRequested: number;
  /** messages refused or ignored, by code (SPARKPLUG_DEATH_STALE: a death of an older session) */
  refusedByCode: Partial<Record<ErrorCode, number>>;
  /** readings and events the durable queue did not take (full, or its disk failing) */
  submitFailed: number;
}

/**
 * One Sparkplug host session over some MQTT connection: a message in (topic and bytes), decoded,
 * run through the host state machine, its readings and events submitted to the field client's
 * durable queue, a rebirth request sent back when asked for. Shared by the input that subscribes
 * to a plant's broker (sparkplug-input.ts) and the local MQTT input (mqtt-input.ts).
 *
 * Nothing a publisher sends stops it: each message that is refused is counted by its code and
 * logged, at most LIMITS.sparkplugLogMaxPerWindow lines per TIMINGS.sparkplugLogWindowMs (then
 * one line saying how many were left out), so a flood of bad messages cannot flood the log.
 */
export class SparkplugSession {
  readonly host = new SparkplugHost({ rebirthMinIntervalMs: TIMINGS.sparkplugRebirthMinIntervalMs });
  readonly stats: SparkplugStats = { messages: 0, readings: 0, events: 0, metricsSkipped: 0, rebirthsRequested: 0, refusedByCode: {}, submitFailed: 0 };
  private chain: Promise<void> = Promise.resolve();
  private logWindowStart = 0;
  private logged = 0;
  private suppressed = 0;

  constructor(
    private readonly client: Pick<FieldClient, 'submitMany'>,
    /** sends bytes to a topic on the broker the message came from */
    private readonly publish: (topic: string, payload: Uint8Array) => void,
    private readonly log: Logger,
    /** group ids to follow; empty: every group */
    private readonly groups: readonly string[] = [],
  ) {}

  /**
   * Takes one message; never throws. Resolves once what it carried is in the durable queue (or
   * refused): the local MQTT input acknowledges a QoS 1 publish only then.
   */
  onMessage(topic: string, bytes: Uint8Array, now = Date.now()): Promise<void> {
    const t = parseTopic(topic);
    if (t === 'state') return Promise.resolve(); // another host's (or our own) STATE
    if (t === undefined) {
      this.stats.messages++;
      this.refuse(new FieldStreamError('SPARKPLUG_TOPIC_INVALID', `not a Sparkplug B topic: ${topic.slice(0, 200)}`), topic);
      return Promise.resolve();
    }
    if (t.type === 'NCMD' || t.type === 'DCMD') return Promise.resolve();
    if (this.groups.length > 0 && !this.groups.includes(t.group)) return Promise.resolve();
    this.stats.messages++;
    let items: Submission[];
    try {
      const outcome = this.host.handle(t, decodePayload(bytes), now);
      this.stats.metricsSkipped += outcome.skipped;
      if (outcome.rebirth) {
        this.stats.rebirthsRequested++;
        this.publish(ncmdTopic(t.group, t.edge), rebirthCommand(now));
        this.log.info({ group: t.group, edgeNode: t.edge }, 'Sparkplug rebirth requested');
      }
      if (outcome.refused) this.refuse(outcome.refused, topic);
      // Checked as the gateway will check them: what it would refuse never enters the queue.
      items = [
        ...outcome.readings.map((r) => ({ dataType: 'timeseries' as const, payload: checked(TimeseriesPayloadSchema, r) })),
        ...outcome.events.map((e) => ({ dataType: 'event' as const, payload: checked(EventPayloadSchema, e) })),
      ];
      this.stats.readings += outcome.readings.length;
      this.stats.events += outcome.events.length;
    } catch (err) {
      // Whatever went wrong with one message, the next is taken: the input never stops on input.
      this.refuse(isFieldStreamError(err) ? err : new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `not taken: ${(err as Error).message}`), topic);
      return Promise.resolve();
    }
    if (items.length === 0) return Promise.resolve();
    // One after another, so the queue holds them in the order the broker delivered them.
    const done = this.chain.then(() =>
      this.client.submitMany(items).then(
        () => undefined,
        (err: unknown) => {
          this.stats.submitFailed += items.length;
          this.warn({ code: isFieldStreamError(err) ? err.code : 'FIELD_QUEUE_FULL', topic }, `Sparkplug data not queued: ${(err as Error).message}`);
        },
      ),
    );
    this.chain = done;
    return done;
  }

  /** Resolves once everything taken so far is in the queue (or refused by it). */
  drained(): Promise<void> {
    return this.chain;
  }

  private refuse(err: FieldStreamError, topic: string): void {
    this.stats.refusedByCode[err.code] = (this.stats.refusedByCode[err.code] ?? 0) + 1;
    this.warn({ code: err.code, topic: topic.slice(0, 200) }, err.message);
  }

  private warn(fields: { code: ErrorCode; topic: string }, message: string): void {
    const now = Date.now();
    if (now - this.logWindowStart >= TIMINGS.sparkplugLogWindowMs) {
      if (this.suppressed > 0) this.log.warn({ code: fields.code, suppressed: this.suppressed }, 'Sparkplug refusals left out of the log in the last window');
      this.logWindowStart = now;
      this.logged = 0;
      this.suppressed = 0;
    }
    if (this.logged >= LIMITS.sparkplugLogMaxPerWindow) {
      this.suppressed++;
      return;
    }
    this.logged++;
    this.log.warn(fields, message);
  }
}

function checked<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: { issues: Array<{ message: string }> } } }, value: unknown): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `not storable: ${r.error.issues[0]?.message ?? 'invalid'}`);
}
