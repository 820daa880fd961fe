import type { FileHandle } from 'node:fs/promises';
import type { Logger } from '../../../shared/logger.ts';
import type { Segment, SyncPolicy } from './queue-types.ts';
import type { OnRefused } from './segment-writer.ts';

/**
 * The fsyncs of the segment writer's active segment (segment-writer.ts), and what a failed one
 * leaves: the segment sealed, the records no fsync covered refused, the next start told to take a
 * new epoch. The writer writes and rotates; this says what of it the disk holds.
 */
export class SegmentSyncs {
  private syncTimer: NodeJS.Timeout | undefined;
  /** the fsync running (sync policy "always") */
  private syncing: Promise<void> | undefined;
  /** the fsync that starts when the running one ends, shared by every batch written meanwhile */
  private nextSync: Promise<void> | undefined;
  /** what the last fsync of the active segment that succeeded covers: its records through `seq`, its first `bytes` */
  private synced = { seq: 0, bytes: 0 };
  /** segments an fsync failed on: they take no more records (see seal) */
  private readonly sealed = new WeakSet<Segment>();
  /** the records of the active segment refused after a failed fsync, through this number (see refuseUnsynced) */
  private refusedThrough = 0;
  /** an fsync of a segment failed in this run (see lossPossible) */
  private fsyncFailed = false;
  /** ... and the next start is not yet told to take a new epoch (onLossPossible) */
  private lossUnmarked = false;

  constructor(
    private readonly o: { sync: SyncPolicy; log: Logger },
    /** the writer's active segment and its handle */
    private readonly activeOf: () => { seg: Segment; fh: FileHandle },
    private readonly onRefused: OnRefused,
    /** makes the next start take a new epoch, even without a restart of the machine (queue-epochs.ts); may throw */
    private readonly onLossPossible: () => void,
    /** the writer puts right what a failed fsync left (segment-writer.ts, mend) */
    private readonly mendSoon: () => void,
  ) {}

  private get active(): { seg: Segment; fh: FileHandle } {
    return this.activeOf();
  }

  /** `seg` became the active segment: what it holds counts as synced (found on disk at start, or nothing: it is new). */
  opened(seg: Segment): void {
    this.synced = { seq: seg.lastSeq, bytes: seg.bytes };
  }

  /** whether an fsync of `seg` failed: it takes no more records (see seal) */
  isSealed(seg: Segment): boolean {
    return this.sealed.has(seg);
  }

  /** true once an fsync of a segment failed in this run (see SegmentWriter.lossPossible) */
  get lossPossible(): boolean {
    return this.fsyncFailed;
  }

  /** the next start is yet to be told to take a new epoch (markLossPossible) */
  get lossUnmarkedYet(): boolean {
    return this.lossUnmarked;
  }

  /** Tells the next start to take a new epoch, if an fsync failed and it is not told yet; may throw (then tried again). */
  markLossPossible(): void {
    if (this.lossUnmarked) {
      this.onLossPossible();
      this.lossUnmarked = false;
    }
  }

  /** No timed fsync from now: the writer is closing (its close syncs). */
  stop(): void {
    clearTimeout(this.syncTimer);
  }

  /**
   * An fsync of `seg` failed (EIO: the kernel could not write some of its pages back). Linux marks
   * those pages clean all the same: once evicted, or after a power cut, they may read back as
   * zeros, which give no record length to go on from: recovery cuts the segment there, with every
   * record after it. So the
   * segment takes no more records: the next go to a new one (mend), never behind a range that may
   * be lost. With the sync policy "always", every record of it no fsync covered is refused to its
   * producer, even one whose own, later fsync succeeded (refuseUnsynced). And the next start takes
   * a new epoch (onLossPossible; nor is the stop marked clean: lossPossible), since recovery may cut
   * those records off and number on from them: their numbers, sent already perhaps, must never name
   * other readings under the same epoch.
   */
  seal(seg: Segment, err: unknown): void {
    if (!this.sealed.has(seg)) {
      this.o.log.error(
        { code: 'FIELD_QUEUE_WRITE_FAILED', segment: seg.path, err: (err as Error).message },
        'queue fsync failed: the segment takes no more records, those it holds that no fsync covered are refused, and the next start takes a new epoch',
      );
    }
    this.sealed.add(seg);
    if (!this.fsyncFailed) {
      this.fsyncFailed = true;
      this.lossUnmarked = true;
    }
    if (this.o.sync.mode === 'always' && seg === this.active.seg) this.refuseUnsynced();
  }

  /**
   * Tells the queue that the records of the active (sealed) segment no fsync covered are refused:
   * their producers are told so (or will be, as their fsync settles), so they are not sent as if
   * accepted. Their numbers are not given again: the sender may have sent some already.
   */
  private refuseUnsynced(): void {
    const seg = this.active.seg;
    const from = Math.max(this.synced.seq, this.refusedThrough) + 1;
    if (from <= seg.lastSeq) this.onRefused(from, seg.lastSeq);
    this.refusedThrough = seg.lastSeq;
  }

  /**
   * Cuts the refused records off a sealed segment, as a failed write's bytes are (cutTornTail):
   * read back at the next start, they would be sent as accepted ones. The segment keeps their
   * numbers (its lastSeq), so the next segment starts after them; recovery finds no record for
   * them, and the queue passes over them. A cut that fails is only logged: in this run none of them
   * is sent anyway, and at the next start they are sent at worst (a copy of what their producers
   * may have sent again, never a loss).
   */
  async cutRefused(): Promise<void> {
    const { seg, fh } = this.active;
    if (this.o.sync.mode === 'always') {
      this.refuseUnsynced(); // those written after the failure too
      if (seg.bytes > this.synced.bytes) {
        try {
          await fh.truncate(this.synced.bytes);
          seg.bytes = this.synced.bytes;
        } catch (err) {
          this.o.log.warn({ code: 'FIELD_QUEUE_WRITE_FAILED', segment: seg.path, err: (err as Error).message }, 'cannot cut refused records off the sealed queue segment');
        }
      }
    }
    // What the disk can still take of it (the cut; with a sync interval, the records answered):
    // it failed once, so a failure now is no news.
    await fh.datasync().catch(() => undefined);
  }

  /**
   * Resolves after an fsync of the active segment that started after this call: the one started now
   * when none runs, else the one that starts when the running one ends (records written after an
   * fsync began are not covered by it).
   */
  syncWritten(): Promise<void> {
    if (!this.syncing) return this.startSync();
    const after = this.syncing.then(
      () => undefined,
      () => undefined,
    );
    return (this.nextSync ??= after.then(() => {
      this.nextSync = undefined;
      return this.startSync();
    }));
  }

  private startSync(): Promise<void> {
    const seg = this.active.seg;
    const covers = { seq: seg.lastSeq, bytes: seg.bytes };
    const running = this.active.fh.datasync();
    this.syncing = running;
    running.then(
      () => {
        if (this.syncing === running) this.syncing = undefined;
        // A later fsync that succeeds makes nothing after a failed one safe: the pages are gone.
        if (seg === this.active.seg && !this.sealed.has(seg)) this.synced = covers;
      },
      (err: unknown) => {
        if (this.syncing === running) this.syncing = undefined;
        this.seal(seg, err);
        this.mendSoon();
      },
    );
    return running;
  }

  /** Waits for the fsyncs running or due (their outcome is their batches'): a segment is then safe to close. */
  async syncsSettled(): Promise<void> {
    while (this.syncing || this.nextSync) await (this.nextSync ?? this.syncing)?.catch(() => undefined);
  }

  scheduleSync(): void {
    if (this.syncTimer || this.o.sync.mode !== 'interval') return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      const seg = this.active.seg;
      this.active.fh.datasync().catch((err: unknown) => {
        this.seal(seg, err);
        this.mendSoon();
      });
    }, this.o.sync.ms);
  }
}
