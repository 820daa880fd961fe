import { FieldStreamError, isFieldStreamError } from '../../../shared/errors.ts';
import type { StoredPoint } from '../points.ts';
import type { PointSink } from './sink.ts';

/**
 * Several stores at once (InfluxDB and PostgreSQL): a write is done only when every store has it,
 * so a message is acknowledged, and its receipt sent, only then. The stores are written in
 * parallel; the outcome is the worst of theirs:
 * - any store failed (DISTRIBUTOR_WRITE_FAILED): failed, and the whole write is retried; the
 *   stores that took it already take it again without a second copy (InfluxDB by the point's
 *   identity, PostgreSQL by the message key), so retrying every store is safe;
 * - otherwise any store refused the data (DISTRIBUTOR_WRITE_REJECTED): rejected, and the message
 *   goes to the dead-letter folder as with one store (WriteBatcher first writes a refused batch
 *   again message by message, so only the message at fault goes there);
 * - otherwise done.
 * A failure wins over a refusal: the refusal is met again once the failing store is back, and a
 * message must not be set aside while a store that might take it is merely unreachable.
 */
export class FanoutSink implements PointSink {
  readonly description: string;

  constructor(private readonly sinks: readonly PointSink[]) {
    if (sinks.length === 0) throw new Error('FanoutSink needs at least one sink');
    this.description = sinks.map((s) => s.description).join(' + ');
  }

  async write(points: readonly StoredPoint[]): Promise<void> {
    if (points.length === 0) return;
    if (this.sinks.length === 1) return (this.sinks[0] as PointSink).write(points);
    const outcomes = await Promise.allSettled(this.sinks.map((s) => s.write(points)));
    let rejected: FieldStreamError | undefined;
    let failed: FieldStreamError | undefined;
    outcomes.forEach((o, i) => {
      if (o.status === 'fulfilled') return;
      const where = (this.sinks[i] as PointSink).description;
      const err = o.reason;
      if (isFieldStreamError(err, 'DISTRIBUTOR_WRITE_REJECTED')) rejected ??= new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', `${where}: ${err.message}`, err.details, { cause: err });
      else failed ??= new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `${where}: ${err instanceof Error ? err.message : String(err)}`, isFieldStreamError(err) ? err.details : {}, { cause: err });
    });
    if (failed) throw failed;
    if (rejected) throw rejected;
  }

  async close(): Promise<void> {
    const outcomes = await Promise.allSettled(this.sinks.map((s) => s.close()));
    const failure = outcomes.find((o) => o.status === 'rejected');
    if (failure) throw failure.reason;
  }
}
