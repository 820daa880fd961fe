import { EventPayloadSchema, TimeseriesPayloadSchema } from '../../../../shared/contract/payloads.ts';
import { FieldStreamError, isFieldStreamError } from '../../../../shared/errors.ts';
import type { LimitedLog } from '../../../../shared/limited-log.ts';
import type { Logger } from '../../../../shared/logger.ts';
import type { Submission } from '../../client-options.ts';
import type { HostOutcome } from './host.ts';
import { rebirthCommand } from './payload.ts';
import type { SparkplugStats } from './session.ts';
import { formatTopic, ncmdTopic, type SparkplugTopic } from './topic.ts';

/**
 * What a Sparkplug host session (session.ts) makes of the host state machine's outcomes and of the
 * messages it refuses: counted in its stats, logged (refusals rate-limited), a rebirth request sent,
 * readings and events checked as the gateway checks them and added to what goes to the queue.
 */
export class SessionOutcomes {
  constructor(
    private readonly o: {
      /** the session's counters */
      stats: SparkplugStats;
      /** sends bytes to a topic on the broker the message came from */
      publish: (topic: string, payload: Uint8Array) => void;
      log: Logger;
      /** refusals, logged at most LIMITS.sparkplugLogMaxPerWindow per TIMINGS.sparkplugLogWindowMs */
      refusalLog: LimitedLog;
    },
  ) {}

  /**
   * One outcome of the host state machine (and those of the held messages it let through): counted,
   * logged, rebirth sent, its items added. `ofMessage`: the outcome is a message's (counted accepted
   * unless refused or held), not a reorder timeout's.
   */
  apply(t: Pick<SparkplugTopic, 'group' | 'edge'>, topic: string, outcome: HostOutcome, now: number, items: Submission[], ofMessage: boolean): void {
    this.o.stats.metricsSkipped += outcome.skipped;
    if (outcome.rebirth) {
      this.o.stats.rebirthsRequested++;
      this.o.publish(ncmdTopic(t.group, t.edge), rebirthCommand(now));
      this.o.log.info({ group: t.group, edgeNode: t.edge }, 'Sparkplug rebirth requested');
    }
    if (outcome.refused) this.refuse(outcome.refused, topic);
    for (const c of outcome.collisions ?? []) {
      // Not a refusal: every value is kept, under the names the log line gives (names.ts). A sample
      // of the metrics (LIMITS.sparkplugCollisionSampleMetrics) and their count: the line does not
      // grow with the number sharing the name.
      this.o.stats.fieldNameCollisions++;
      const named = c.metrics.map((m) => `${[m.group, m.edge, ...(m.device === undefined ? [] : [m.device])].join('/')} metric ${m.metric} → ${m.field ?? '(skipped)'}`);
      const more = c.count > c.metrics.length ? `; ${c.count - c.metrics.length} more` : '';
      this.o.refusalLog.write(
        { code: 'SPARKPLUG_FIELD_NAME_COLLISION', topic: topic.slice(0, 200), field: c.field, count: c.count, metrics: c.metrics },
        `Sparkplug metrics share the field name ${c.field} (${c.count} metrics): ${named.join('; ').slice(0, 1000)}${more}`,
      );
    }
    if (outcome.dropped) {
      const { code, count, message } = outcome.dropped;
      this.o.stats.refusedByCode[code] = (this.o.stats.refusedByCode[code] ?? 0) + count;
      this.o.refusalLog.write({ code, topic: topic.slice(0, 200) }, message);
    }
    try {
      // Checked as the gateway will check them: what it would refuse never enters the queue.
      const mine = [
        ...outcome.readings.map((r) => ({ dataType: 'timeseries' as const, payload: checked(TimeseriesPayloadSchema, r) })),
        ...outcome.events.map((e) => ({ dataType: 'event' as const, payload: checked(EventPayloadSchema, e) })),
      ];
      items.push(...mine);
      this.o.stats.readings += outcome.readings.length;
      this.o.stats.events += outcome.events.length;
      if (ofMessage && !outcome.held && !outcome.refused) this.o.stats.accepted++;
    } catch (err) {
      this.refuse(isFieldStreamError(err) ? err : new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `not taken: ${(err as Error).message}`), topic);
    }
    for (const r of outcome.released) {
      this.o.stats.reordered++;
      this.apply(r.topic, formatTopic(r.topic), r.out, now, items, true);
    }
  }

  /** A message refused (or ignored): counted by its code, and logged (rate-limited). */
  refuse(err: FieldStreamError, topic: string): void {
    this.o.stats.refusedByCode[err.code] = (this.o.stats.refusedByCode[err.code] ?? 0) + 1;
    this.o.refusalLog.write({ code: err.code, topic: topic.slice(0, 200) }, err.message);
  }
}

function checked<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: { issues: Array<{ message: string }> } } }, value: unknown): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `not storable: ${r.error.issues[0]?.message ?? 'invalid'}`);
}
