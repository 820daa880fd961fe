import { CONSOLE } from '../../shared/limits.ts';
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
 */
export class OwnPointsWriter {
  private queue: StoredPoint[] = [];
  private timer: NodeJS.Timeout;
  private writing: Promise<void> = Promise.resolve();
  dropped = 0;
  written = 0;
  private failing = false;

  constructor(
    private readonly sink: PointSink,
    private readonly log: Logger,
  ) {
    this.timer = setInterval(() => void this.flush(), FLUSH_MS);
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
    try {
      await this.sink.write(batch);
      this.written += batch.length;
      if (this.failing) this.log.info({ points: batch.length }, 'console points written again');
      this.failing = false;
    } catch (err) {
      this.queue = [...batch, ...this.queue].slice(-CONSOLE.ownPointsMaxQueued);
      if (!this.failing) this.log.warn({ err, points: batch.length }, 'console points not written; trying again');
      this.failing = true;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
    await this.sink.close();
  }
}
