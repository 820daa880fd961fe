import { isFieldStreamError, type FieldStreamError } from '../../shared/errors.ts';
import { LimitedLog } from '../../shared/limited-log.ts';
import { CONSOLE, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import type { StoredPoint } from '../distributor/points.ts';
import type { PointSink } from '../distributor/sinks/sink.ts';

/** milliseconds between writes of the console's own points (and between tries while the store is down) */
const FLUSH_MS = 1_000;

/**
 * The console's own observations (device state changes, anomalies) on their way to the time-series
 * store: written once a second, kept and written again while the store is down, bounded
 * (CONSOLE.ownPointsMaxQueued, the oldest dropped and counted: they are the console's findings,
 * never device data, which the distributor alone writes).
 *
 * A batch the store refuses for good (DISTRIBUTOR_WRITE_REJECTED: InfluxDB's 400, a value line
 * protocol cannot carry) is halved, and each half written, until the points it refuses are alone:
 * those are dropped, counted (`refused`) and logged with the code. Written again whole, a refused
 * batch would be refused every second, and every point queued behind it held until newer ones
 * pushed it out. Finding k refused points among n costs about 2 k log2(n) writes, at most 2 n.
 * Any other failure (the store is down) keeps what is not written yet, in order, for the next try.
 */
export class OwnPointsWriter {
  private queue: StoredPoint[] = [];
  private timer: NodeJS.Timeout;
  private writing: Promise<void> = Promise.resolve();
  private readonly refusals: LimitedLog;
  dropped = 0;
  refused = 0;
  written = 0;
  private failing = false;

  constructor(
    private readonly sink: PointSink,
    private readonly log: Logger,
  ) {
    this.timer = setInterval(() => void this.flush(), FLUSH_MS);
    // Each refused point is a line; a store that refuses every anomaly (a field whose type was fixed
    // otherwise) would make a line of each, so they are limited and the rest counted.
    this.refusals = new LimitedLog(log, { maxPerWindow: 1, windowMs: TIMINGS.floodLogIntervalMs, what: 'console points the store refused' });
  }

  add(p: StoredPoint): void {
    this.queue.push(p);
    const over = this.queue.length - CONSOLE.ownPointsMaxQueued;
    if (over > 0) {
      this.queue.splice(0, over);
      this.dropped += over;
    }
  }

  flush(): Promise<void> {
    this.writing = this.writing.then(() => this.writeQueued());
    return this.writing;
  }

  private async writeQueued(): Promise<void> {
    if (this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    // Ranges of the batch still to write, the next on top: a refused range is replaced by its halves.
    const ranges: Array<[from: number, to: number]> = [[0, batch.length]];
    for (let range = ranges.pop(); range !== undefined; range = ranges.pop()) {
      const [from, to] = range;
      const points = from === 0 && to === batch.length ? batch : batch.slice(from, to);
      try {
        await this.sink.write(points);
        this.written += points.length;
      } catch (err) {
        if (isFieldStreamError(err, 'DISTRIBUTOR_WRITE_REJECTED')) {
          if (to - from === 1) this.refuse(points[0] as StoredPoint, err);
          else {
            const mid = from + ((to - from) >> 1);
            ranges.push([mid, to], [from, mid]);
          }
          continue;
        }
        // The store is down (or failed otherwise): this range and those after it wait, in order.
        const left = [range, ...ranges.reverse()].flatMap(([a, b]) => batch.slice(a, b));
        const kept = [...left, ...this.queue];
        const over = kept.length - CONSOLE.ownPointsMaxQueued;
        if (over > 0) this.dropped += over;
        this.queue = over > 0 ? kept.slice(over) : kept;
        if (!this.failing) this.log.warn({ err, points: left.length }, 'console points not written; trying again');
        this.failing = true;
        return;
      }
    }
    if (this.failing) this.log.info({ points: batch.length }, 'console points written again');
    this.failing = false;
  }

  private refuse(p: StoredPoint, err: FieldStreamError): void {
    this.refused++;
    this.refusals.write(
      { code: err.code, measurement: p.measurement, deviceId: p.tags.device, err: err.message, refused: this.refused },
      'console point refused by the store for good; dropped (console_points_refused_total)',
    );
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
    await this.sink.close();
  }
}
