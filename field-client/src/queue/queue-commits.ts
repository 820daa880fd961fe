import { unlinkSync } from 'node:fs';
import type { AckBook, SeqRanges } from './ack-book.ts';
import type { Segment } from './queue-types.ts';
import type { SegmentWriter } from './segment-writer.ts';
import type { SendCursor } from './send-cursor.ts';
import type { WatermarkWriter } from './watermark-writer.ts';

/** What committing needs of the queue. */
export interface CommitHost {
  readonly segments: Segment[];
  readonly book: AckBook;
  readonly cursor: SendCursor;
  readonly writer: SegmentWriter;
  readonly mark: WatermarkWriter;
  readonly stats: { acked: number; committed: number; corruptRecords: number; lastAckAt: number };
  /** with receipts, the gateway's ack only moves a record to awaiting its receipt; else it commits it */
  readonly receipts: boolean;
  nextSeq(): number;
  closed(): boolean;
  now(): number;
}

/**
 * Records leaving the queue (the gateway's acks, commit receipts, records damaged beyond reading,
 * receipts that are late) and the segments whose records are all committed, deleted behind them.
 */
export class QueueCommits {
  constructor(private readonly q: CommitHost) {}

  /** DurableQueue.ack */
  ack(seqs: Iterable<number>): void {
    const n = this.q.book.ack(seqs, this.q.writer.firstUnwritten, this.q.now());
    if (n === 0) return;
    this.q.stats.acked += n;
    this.q.stats.lastAckAt = Date.now();
    if (!this.q.receipts) this.committed(n);
  }

  /** DurableQueue.commit */
  commit(seqs: Iterable<number>): number {
    return this.committed(this.q.book.commit(seqs, this.q.writer.firstUnwritten));
  }

  /** DurableQueue.commitRanges */
  commitRanges(ranges: SeqRanges): number {
    return this.committed(this.q.book.commitRanges(ranges, this.q.writer.firstUnwritten));
  }

  /**
   * Numbers whose records are damaged beyond reading (recovery.ts, or the send cursor at run time):
   * nothing can send or commit them, so they are forgotten as if committed (counted in
   * `corruptRecords`, logged where found), or the committed watermark would stay below them for good.
   */
  forget(ranges: SeqRanges): void {
    const n = this.q.book.commitRanges(ranges, this.q.nextSeq());
    if (n === 0) return;
    this.q.stats.corruptRecords += n;
    // Not now: the send cursor may be in the middle of a read (segments are deleted after it).
    queueMicrotask(() => {
      if (!this.q.closed()) this.deleteCommittedSegments();
    });
  }

  /** DurableQueue.expireAwaiting */
  expireAwaiting(now: number, timeoutMs: number): number {
    const { count, lowest } = this.q.book.expire(now, timeoutMs);
    if (count > 0) this.q.cursor.goBackTo(lowest);
    return count;
  }

  deleteCommittedSegments(): void {
    const { segments } = this.q;
    while (segments.length > 1) {
      const oldest = segments[0] as Segment;
      if (oldest.lastSeq > this.q.book.watermark || oldest === this.q.writer.activeSegment) break;
      this.q.cursor.leave(oldest);
      try {
        unlinkSync(oldest.path);
      } catch (err) {
        // One the disk would not delete stays listed, counted against maxBytes (it still takes
        // that room), and is tried again at the next commit (capacity.ts does the same); let go
        // of uncounted, each such segment took room the queue then gave to new data.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') break;
      }
      segments.shift();
    }
  }

  private committed(n: number): number {
    if (n === 0) return 0;
    this.q.stats.committed += n;
    this.deleteCommittedSegments();
    this.q.mark.later();
    return n;
  }
}
