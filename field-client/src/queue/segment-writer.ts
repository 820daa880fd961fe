import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { FieldStreamError, isFieldStreamError } from '../../../shared/errors.ts';
import type { Logger } from '../../../shared/logger.ts';
import { segName } from './queue-files.ts';
import { syncDir } from '../../../shared/durable-fs.ts';
import type { OutgoingMessage, QueuedMessage, Segment, SyncPolicy } from './queue-types.ts';
import type { EncodedBatch } from './batch-encoder.ts';
import { SegmentSyncs } from './segment-syncs.ts';

interface Pending {
  batch: EncodedBatch;
  resolve: (m: QueuedMessage[]) => void;
  reject: (e: unknown) => void;
}

/** Told of every run of records written to a segment: where the run starts, each record's size and message. */
export type OnWritten = (seg: Segment, start: number, sizes: readonly number[], messages: readonly OutgoingMessage[]) => void;
/** Told that a write failed: no record from `nextSeq` on reached the disk, so numbering goes on from there. */
export type OnUnwritten = (nextSeq: number) => void;
/**
 * Told that the records firstSeq..lastSeq, written, were refused to their producers (an fsync
 * failed, see SegmentSyncs.seal): they are not to be sent, and their numbers are not given again.
 */
export type OnRefused = (firstSeq: number, lastSeq: number) => void;

/**
 * Appends records to the active segment with group commit: everything enqueued while the previous
 * write ran goes in one write; with the default sync policy the producers are answered after an
 * fsync that began once their records were written, and every batch written while one fsync runs
 * shares the next. Opens a new segment when the active one is full.
 *
 * A write does not wait for the fsync of the write before it: records are sendable once written
 * (onWritten), and an fsync can take hundreds of milliseconds on a busy or slow disk (an SD card,
 * or a disk shared with a database), which would otherwise hold every later reading back from the
 * gateway for as long. Only the producer's answer waits for it.
 *
 * A segment an fsync failed on takes no more records (seal), and a new segment takes none before
 * its name is synced into the folder (rotate): what is answered never sits where a power cut, or
 * the kernel's dropping of pages it failed to write, can take it away.
 */
export class SegmentWriter {
  private active!: { seg: Segment; fh: FileHandle };
  private pending: Pending[] = [];
  /** bytes enqueued, not yet written */
  private pendingBytes = 0;
  private flushing = false;
  /** the active segment's fsyncs, and what a failed one seals (segment-syncs.ts) */
  private readonly syncs: SegmentSyncs;
  /** batches written whose producers wait for their fsync */
  private unanswered = 0;
  /** a failed write left bytes after the last good record that could not be cut off yet: nothing is written until they are */
  private tornTail = false;
  /** the active segment's name may not be on disk yet: nothing is written into it until it is (see rotate) */
  private nameUnsynced = false;
  private closing = false;

  constructor(
    private readonly o: { dir: string; segmentBytes: number; sync: SyncPolicy; log: Logger },
    /** every segment, oldest first: the writer adds to its end */
    private readonly segments: Segment[],
    /** records written, counted when their producer is answered; records refused because the disk failed them */
    private readonly counts: { appended: number; writeFailed: number },
    private readonly onWritten: OnWritten,
    private readonly onUnwritten: OnUnwritten,
    onRefused: OnRefused,
    /** makes the next start take a new epoch, even without a restart of the machine (queue-epochs.ts); may throw */
    onLossPossible: () => void,
  ) {
    this.syncs = new SegmentSyncs(o, () => this.active, onRefused, onLossPossible, () => this.mendSoon());
  }

  /** Opens the newest segment for appending, or a new one numbered from nextSeq when there is none or it is full. */
  async openActive(nextSeq: number): Promise<void> {
    let seg = this.segments[this.segments.length - 1];
    const fresh = !seg || seg.bytes >= this.o.segmentBytes;
    if (!seg || fresh) {
      seg = { firstSeq: nextSeq, lastSeq: nextSeq - 1, path: join(this.o.dir, segName(nextSeq)), bytes: 0 };
      this.segments.push(seg);
    }
    this.active = { seg, fh: await open(seg.path, 'a', 0o600) };
    this.syncs.opened(seg);
    // Nothing is written into the segment before its name is synced (mend). A segment found on disk
    // may be one a stop left before that (rotate killed, or its folder fsync failing); a new one's
    // name is synced now, and while that fails (a full or failing disk) the queue opens all the
    // same: it sends what it holds, and refuses new data until the sync, tried again before each
    // write, goes through.
    this.nameUnsynced = true;
    if (fresh) {
      await this.syncName().catch((err: unknown) =>
        this.o.log.warn({ code: 'FIELD_QUEUE_WRITE_FAILED', segment: this.active.seg.path, err: (err as Error).message }, "cannot sync the new queue segment's name into its folder; nothing is written into it until it is"),
      );
    }
  }

  /** the segment appended to (undefined until openActive) */
  get activeSegment(): Segment | undefined {
    return this.active?.seg;
  }

  /** The first sequence number not written: records below it are on disk (and may be sent), none from it on. */
  get firstUnwritten(): number {
    return this.active.seg.lastSeq + 1;
  }

  /** bytes enqueued and not yet written: they count against the queue's size already */
  get bytesPending(): number {
    return this.pendingBytes;
  }

  /** nothing enqueued, being written, or waiting for its fsync: every producer has its answer */
  get idle(): boolean {
    return !this.flushing && this.pending.length === 0 && this.unanswered === 0;
  }

  /**
   * true once an fsync of a segment failed in this run: records sent may be missing from the disk,
   * and their numbers given again at the next start, so that stop must not count as clean (see seal).
   */
  get lossPossible(): boolean {
    return this.syncs.lossPossible;
  }

  /**
   * Resolves once every record written so far is synced, whatever the policy: an fsync that starts
   * after this call (the active segment's; segments before it were synced when it was opened).
   * Rejects when that fsync, or one before it of this segment, failed.
   */
  async syncedNow(): Promise<void> {
    const seg = this.active.seg;
    await this.syncs.syncWritten();
    if (this.syncs.isSealed(seg)) throw new FieldStreamError('FIELD_QUEUE_WRITE_FAILED', `an fsync of ${seg.path} failed: records written to it may not be on disk`);
  }

  /** Resolves with the batch's messages once they are written (and synced, per the policy). */
  enqueue(batch: EncodedBatch): Promise<QueuedMessage[]> {
    this.pendingBytes += batch.block.length;
    return new Promise((resolve, reject) => {
      this.pending.push({ batch, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    // What a failed fsync left to mend is mended at once, not at the next append: a stop before it
    // must find the next start told to take a new epoch, and the sealed segment replaced.
    let mendFailed = false;
    while (this.pending.length > 0 || (this.mendDue && !mendFailed)) {
      const batch = this.pending;
      this.pending = [];
      try {
        await this.mend();
      } catch (err) {
        mendFailed = true;
        if (batch.length > 0) await this.failed(batch, err);
        else this.o.log.warn({ code: 'FIELD_QUEUE_WRITE_FAILED', segment: this.active.seg.path, err: (err as Error).message }, 'the queue cannot recover from a failed write yet; nothing is written until it does');
        continue;
      }
      if (batch.length === 0) continue;
      try {
        // One write per segment touched: the appends' blocks are gathered, not written one
        // syscall each; a block is cut where a segment ends.
        let parts: Buffer[] = [];
        let partMessages: OutgoingMessage[] = [];
        let partSizes: number[] = [];
        let partBytes = 0;
        let lastSeq = this.active.seg.lastSeq;
        const writeOut = async () => {
          if (parts.length === 0) return;
          const seg = this.active.seg;
          await this.writeAll(parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, partBytes));
          this.onWritten(seg, seg.bytes, partSizes, partMessages);
          seg.bytes += partBytes;
          seg.lastSeq = lastSeq;
          this.pendingBytes -= partBytes;
          parts = [];
          partMessages = [];
          partSizes = [];
          partBytes = 0;
        };
        for (const { batch: p } of batch) {
          let from = 0; // where the part of this block not yet gathered starts
          let to = 0;
          for (let i = 0; i < p.sizes.length; i++) {
            const size = p.sizes[i] as number;
            if (this.active.seg.bytes + partBytes > 0 && this.active.seg.bytes + partBytes + size > this.o.segmentBytes) {
              if (to > from) parts.push(p.block.subarray(from, to));
              from = to;
              await writeOut();
              const full = this.active.seg;
              await this.rotate();
              // Sealed while this batch was written to it: the batch's records there are refused
              // (seal), so the batch is, before any of it goes where it could be answered.
              if (this.syncs.isSealed(full)) throw new Error(`an fsync of ${full.path} failed`);
            }
            partMessages.push(p.outgoing[i] as OutgoingMessage);
            partSizes.push(size);
            partBytes += size;
            to += size;
            lastSeq = (p.messages[i] as QueuedMessage).seq;
          }
          if (to > from) parts.push(from === 0 && to === p.block.length ? p.block : p.block.subarray(from, to));
        }
        await writeOut();
        const answer = () => {
          for (const p of batch) {
            this.counts.appended += p.batch.messages.length;
            p.resolve(p.batch.messages);
          }
        };
        if (this.o.sync.mode === 'always') {
          this.unanswered++;
          // A failed fsync refuses its batches, and so does a later one that succeeds on a segment
          // sealed meanwhile: these records sit behind a range the disk may not hold (seal).
          const seg = this.active.seg;
          this.syncs.syncWritten()
            .then(() => {
              if (this.syncs.isSealed(seg)) throw new Error('an fsync of records written before these failed');
              answer();
            })
            .catch((err: unknown) => {
              const coded = new FieldStreamError('FIELD_QUEUE_WRITE_FAILED', `The queue could not sync ${seg.path}: ${(err as Error).message}`, {}, { cause: err });
              for (const p of batch) this.counts.writeFailed += p.batch.messages.length;
              batch.forEach((p) => p.reject(coded));
            })
            .finally(() => this.unanswered--);
        } else {
          this.syncs.scheduleSync();
          answer();
        }
      } catch (err) {
        await this.failed(batch, err);
      }
    }
    this.flushing = false;
  }

  /**
   * A write (or what must precede it: see mend) failed. The batch and every one queued behind it are
   * refused, before anything else is numbered: their sequence numbers were never on disk nor sent,
   * so they are given again. A gap would hold the committed watermark below it for good (the
   * queue's segments never deleted, its backlog sent again at every start).
   *
   * The records written before the failure stay (the sender may already have sent them); a batch
   * cut by a segment's end may thus be refused with its first records kept, and sent twice if its
   * producer sends it again: a copy, never a loss. (When the failure is the fsync that closes that
   * segment, the records are refused as seal says: their numbers are not given again either.)
   */
  private async failed(batch: Pending[], err: unknown): Promise<void> {
    const refused = [...batch, ...this.pending];
    this.pending = [];
    this.pendingBytes = 0;
    this.onUnwritten(this.firstUnwritten);
    const coded = isFieldStreamError(err, 'FIELD_QUEUE_WRITE_FAILED')
      ? err
      : new FieldStreamError('FIELD_QUEUE_WRITE_FAILED', `The queue could not write to ${this.active.seg.path}: ${(err as Error).message}`, {}, { cause: err });
    for (const p of refused) {
      this.counts.writeFailed += p.batch.messages.length;
      p.reject(coded);
    }
    await this.cutTornTail();
  }

  /** something a failure left must be put right before the next write (see mend) */
  private get mendDue(): boolean {
    return this.syncs.lossUnmarkedYet || this.tornTail || this.nameUnsynced || this.syncs.isSealed(this.active.seg);
  }

  /**
   * Puts right what a failure left, before anything more is written: the next start told to take a
   * new epoch (seal), a failed write's torn tail cut off (cutTornTail), a sealed segment replaced by
   * a new one, a new segment's name synced (rotate). Throws while one of them fails: the batch at
   * hand is then refused, and what is left is tried again before the next one.
   */
  private async mend(): Promise<void> {
    this.syncs.markLossPossible();
    if (this.tornTail) {
      await this.active.fh.truncate(this.active.seg.bytes);
      this.tornTail = false;
    }
    if (this.syncs.isSealed(this.active.seg)) await this.rotate();
    if (this.nameUnsynced) await this.syncName();
  }

  /** Mends (see mend) as soon as no flush runs, rather than at the next append. */
  private mendSoon(): void {
    if (!this.flushing && !this.closing) void this.flush();
  }

  /**
   * A failed write may have left part of a record after the last good one (a short write, then an
   * error). Records appended after it would follow bytes that are not a record: read back, those
   * would be taken for damage on the medium, logged, and searched past (record-resync.ts), and
   * past the search's bounds the records after them lost. So the segment is cut
   * back to its last good record; while that fails, every write is refused and the cut tried again
   * first (and should the process stop meanwhile, recovery cuts the tail at the next start).
   */
  private async cutTornTail(): Promise<void> {
    try {
      await this.active.fh.truncate(this.active.seg.bytes);
      this.tornTail = false;
    } catch (err) {
      this.o.log.warn({ code: 'FIELD_QUEUE_WRITE_FAILED', segment: this.active.seg.path, err: (err as Error).message }, 'cannot cut a failed write off the queue segment; nothing is written until it is');
      this.tornTail = true;
    }
  }

  /**
   * Writes the whole buffer. A write may take fewer bytes than asked and report no error (a file
   * size limit reached, a disk filling up; write(2)): the rest is written again, and an error then
   * reaches the caller with the segment's length still that of its last good record.
   */
  private async writeAll(buf: Buffer): Promise<void> {
    for (let at = 0; at < buf.length; ) {
      const { bytesWritten } = await this.active.fh.write(buf, at, buf.length - at);
      if (bytesWritten <= 0) throw new Error('the disk took none of the bytes');
      at += bytesWritten;
    }
  }

  /**
   * Opens the next segment, numbered on from the active one's last number, when the active one is
   * full or sealed. Throws, the active segment unchanged, while the old one cannot be synced (it is
   * then sealed: the next try replaces it) or the new one cannot be opened.
   */
  private async rotate(): Promise<void> {
    const old = this.active;
    // An fsync due for batches written to this segment must run on it before it is closed.
    await this.syncs.syncsSettled();
    if (this.syncs.isSealed(old.seg)) {
      // The next start told to take a new epoch first, as mend does: a segment filled in the middle
      // of a write is replaced here, not by mend, and once the refused records are cut off, a start
      // keeping the epoch would number them again (throws, nothing cut, while meta.json is refused).
      this.syncs.markLossPossible();
      await this.syncs.cutRefused();
    } else {
      await old.fh.datasync().catch((err: unknown) => {
        this.syncs.seal(old.seg, err);
        throw err;
      });
    }
    const seg: Segment = { firstSeq: old.seg.lastSeq + 1, lastSeq: old.seg.lastSeq, path: join(this.o.dir, segName(old.seg.lastSeq + 1)), bytes: 0 };
    // The new segment is the active one before the old one is closed: a sync timer that fires in
    // between syncs an open file, not a closed one.
    this.active = { seg, fh: await open(seg.path, 'a', 0o600) };
    this.segments.push(seg);
    this.syncs.opened(seg);
    this.nameUnsynced = true;
    // Closed before the folder sync, which may fail: the old handle is not needed either way.
    await old.fh.close().catch((err: unknown) => this.o.log.warn({ segment: old.seg.path, err: (err as Error).message }, 'closing the previous queue segment failed'));
    await this.syncName();
  }

  /**
   * The active segment's name reaches the disk only with its folder (durable-fs.ts): records
   * fsync'ed into it and answered must not vanish with it after a power cut. Once per segment; while
   * it fails, nothing is written into the segment (mend tries again before every batch), so nothing
   * in it is answered.
   */
  private async syncName(): Promise<void> {
    await syncDir(this.o.dir);
    this.nameUnsynced = false;
  }

  /** Syncs and closes the active segment; call once nothing is pending. */
  async close(): Promise<void> {
    this.closing = true;
    this.syncs.stop();
    await this.syncs.syncsSettled();
    try {
      await this.active.fh.datasync();
    } catch (err) {
      this.syncs.seal(this.active.seg, err);
      throw err;
    } finally {
      await this.active.fh.close();
    }
  }
}
