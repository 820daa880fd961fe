import { TIMINGS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import { readWatermark, writeWatermark } from './queue-files.ts';

/**
 * The committed watermark on disk (ack.json), written behind the one in memory (the ack book's).
 * Nothing waits for it: segments are deleted by the watermark in memory (recovery finds it again
 * from the oldest segment left), and epochs are forgotten only at open, once writeWatermarkDurably
 * took it. So when the disk refuses it (full: the queue still drains, and draining is what frees
 * it), a restart meanwhile only sends again what was committed since it was last written. Logged
 * once, and tried again every TIMINGS.ackPersistRetryMs until written.
 */
export class WatermarkWriter {
  private timer: NodeJS.Timeout | undefined;
  private persisted: number;
  /** the disk's refusal of ack.json since it was last written (undefined: written, or nothing to write) */
  private failure: Error | undefined;
  private closed = false;

  constructor(
    private readonly dir: string,
    private readonly log: Logger,
    /** the watermark in memory, what is written */
    private readonly watermark: () => number,
  ) {
    this.persisted = readWatermark(dir, log);
  }

  /** the watermark ack.json holds: as read at open, then as last written */
  get written(): number {
    return this.persisted;
  }

  /**
   * After a commit: ack.json is written at most every TIMINGS.ackPersistDelayMs (a crash forgets the
   * commits since, which only resends). A retry already waiting writes it as well.
   */
  later(): void {
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.write();
    }, TIMINGS.ackPersistDelayMs);
  }

  /** Writes ack.json now; never throws (a refusal is logged and tried again, see above). */
  write(): void {
    const watermark = this.watermark();
    try {
      writeWatermark(this.dir, watermark);
      this.persisted = watermark;
    } catch (err) {
      if (!this.failure) {
        this.log.warn(
          { code: 'FIELD_STATE_WRITE_FAILED', err: (err as Error).message, watermark: this.watermark() },
          `cannot write the committed watermark (ack.json): nothing is lost, a restart meanwhile sends again what was committed since it was last written; tried again every ${TIMINGS.ackPersistRetryMs} ms`,
        );
      }
      this.failure = err as Error;
      if (!this.closed && !this.timer) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.write();
        }, TIMINGS.ackPersistRetryMs);
        // A retry keeps no process alive that is otherwise done: close() writes it last anyway.
        this.timer.unref();
      }
      return;
    }
    if (this.failure) this.log.info({ watermark: this.watermark() }, 'the committed watermark (ack.json) is written again');
    this.failure = undefined;
  }

  /** The queue closes: a write waiting is made now, the last one (a refused one is not tried again). */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.write();
  }
}
