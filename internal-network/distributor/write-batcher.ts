import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { DAY_MS, LIMITS } from '../../shared/limits.ts';
import type { StoredPoint } from './points.ts';
import type { PointSink } from './sinks/sink.ts';
import { DistributorMetrics } from './metrics.ts';
import type { StoredListener } from './stored-feed-publisher.ts';

interface Waiter {
  points: readonly StoredPoint[];
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit in front of a sink: while `concurrency` writes are in flight, the points of every
 * message that arrives meanwhile (from any of the distributor's consumers) are gathered and go in
 * the next request, up to `maxPoints`. Each message still learns the outcome of its own points, so
 * it is acknowledged only after they were written. With two writes in flight, a message arriving
 * during a write waits for that one to finish less often (the database works on both at once);
 * points are independent, so their order across requests does not matter.
 *
 * When the store refuses a combined request as bad data, the messages are written again one by one,
 * so a single bad message cannot take the good ones with it to the dead-letter folder.
 *
 * What a request wrote is offered to the stored feed (stored-feed-publisher.ts) once the database
 * took it, never before and never waited for.
 */
export class WriteBatcher implements PointSink {
  readonly description: string;
  private queue: Waiter[] = [];
  private inFlight = 0;
  readonly stats = { requests: 0, points: 0 };
  /**
   * Whether the database's answer to the last request was that it could not take it
   * (DISTRIBUTOR_WRITE_FAILED: unreachable, timing out, failing); a refusal of bad data is an answer.
   */
  lastWriteFailed = false;
  private flushQueued = false;

  constructor(
    private readonly sink: PointSink,
    /** points per request */
    private readonly maxPoints: number,
    /** requests in flight at once */
    private readonly concurrency = 1,
    private readonly metrics: DistributorMetrics = new DistributorMetrics(),
    /** told what was written, once the database took it (the stored feed); never waited for */
    private readonly stored?: StoredListener,
    /** days: the oldest a point's time may be (DISTRIBUTOR_MAX_POINT_AGE_DAYS) */
    private readonly maxAgeDays: number = LIMITS.pointMaxAgeDays,
  ) {
    this.description = `${sink.description}, batched up to ${maxPoints} points per request, ${concurrency} at a time`;
  }

  write(points: readonly StoredPoint[]): Promise<void> {
    if (points.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.queue.push({ points, resolve, reject });
      // At the end of the current task, not at once: the writes one message makes together (the
      // sections of a gateway's envelope) then share a request instead of each starting its own.
      if (!this.flushQueued) {
        this.flushQueued = true;
        queueMicrotask(() => {
          this.flushQueued = false;
          this.flush();
        });
      }
    });
  }

  private flush(): void {
    while (this.inFlight < this.concurrency && this.queue.length > 0) {
      const batch: Waiter[] = [];
      let size = 0;
      while (this.queue.length > 0 && (batch.length === 0 || size + (this.queue[0] as Waiter).points.length <= this.maxPoints)) {
        const w = this.queue.shift() as Waiter;
        batch.push(w);
        size += w.points.length;
      }
      this.inFlight++;
      // writeBatch settles every waiter and never throws.
      void this.writeBatch(batch, size).then(() => {
        this.inFlight--;
        this.flush();
      });
    }
  }

  private async writeBatch(batch: Waiter[], size: number): Promise<void> {
    const started = performance.now();
    try {
      this.stats.requests++;
      this.metrics.batchPoints.observe(size);
      const points = batch.length === 1 ? (batch[0] as Waiter).points : batch.flatMap((w) => w.points);
      refuseOutOfRange(points, this.maxAgeDays);
      await this.sink.write(points);
      this.metrics.writeSeconds.observe((performance.now() - started) / 1000);
      this.lastWriteFailed = false;
      this.stats.points += size;
      for (const w of batch) w.resolve();
      // Durable now, and only now may anyone be told of them.
      this.offerStored(points);
    } catch (err) {
      this.metrics.writeSeconds.observe((performance.now() - started) / 1000);
      const code = isFieldStreamError(err) ? err.code : 'DISTRIBUTOR_WRITE_FAILED';
      this.metrics.writeFailures.inc({ reason: code });
      this.lastWriteFailed = code !== 'DISTRIBUTOR_WRITE_REJECTED';
      if (batch.length > 1 && isFieldStreamError(err, 'DISTRIBUTOR_WRITE_REJECTED')) {
        for (const w of batch) await this.writeBatch([w], w.points.length);
        return;
      }
      const coded = isFieldStreamError(err) ? err : new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', String(err));
      for (const w of batch) w.reject(coded);
    }
  }

  /** The feed is a view: whatever becomes of it, the points are written and their messages settled. */
  private offerStored(points: readonly StoredPoint[]): void {
    try {
      this.stored?.offer(points);
    } catch {
      // offer never throws; should it, the write it follows must still count as done.
    }
  }

  close(): Promise<void> {
    return this.sink.close();
  }
}

/**
 * DISTRIBUTOR_WRITE_REJECTED for a point dated more than LIMITS.pointMaxAheadMs ahead of this
 * clock, or more than `maxAgeDays` (DISTRIBUTOR_MAX_POINT_AGE_DAYS) before it: refused like a point
 * the database refuses (the batch is written again message by message, and only the message holding
 * it becomes a dead letter), before the database makes a shard for its week. A replay of dead
 * letters refuses it likewise (dead-letter-replay.ts): it writes into the sink itself, not through
 * this batcher.
 */
export function refuseOutOfRange(points: readonly StoredPoint[], maxAgeDays: number): void {
  const now = Date.now();
  const latest = now + LIMITS.pointMaxAheadMs;
  const earliest = now - maxAgeDays * DAY_MS;
  for (const p of points) {
    if (p.time < earliest) {
      throw new FieldStreamError(
        'DISTRIBUTOR_WRITE_REJECTED',
        `a point of measurement ${JSON.stringify(p.measurement.slice(0, 200))} is dated ${Number.isNaN(new Date(p.time).getTime()) ? `${p.time} ms` : new Date(p.time).toISOString()}, more than ${maxAgeDays} days before this clock (DISTRIBUTOR_MAX_POINT_AGE_DAYS; the device's clock?)`,
      );
    }
    if (p.time > latest) {
      throw new FieldStreamError(
        'DISTRIBUTOR_WRITE_REJECTED',
        `a point of measurement ${JSON.stringify(p.measurement.slice(0, 200))} is dated ${Number.isNaN(new Date(p.time).getTime()) ? `${p.time} ms` : new Date(p.time).toISOString()}, more than ${LIMITS.pointMaxAheadMs / 86_400_000} days ahead of this clock (the device's clock?)`,
      );
    }
  }
}
