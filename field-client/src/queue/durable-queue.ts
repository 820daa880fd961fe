import { AckBook, type SeqRanges } from './ack-book.ts';
import { bootId } from '../../../shared/process-identity.ts';
import { QueueEpochs } from './queue-epochs.ts';
import { TAIL_CACHE_BYTES, type OutgoingMessage, type QueuedMessage, type QueueItem, type QueueOptions, type Segment } from './queue-types.ts';
import { recoverQueue } from './recovery.ts';
import { SegmentWriter } from './segment-writer.ts';
import type { EncodedBatch } from './batch-encoder.ts';
import { admit, type AdmissionHost } from './queue-admission.ts';
import { QueueCommits } from './queue-commits.ts';
import { QueueRoom } from './queue-room.ts';
import { readHeld } from './held-records.ts';
import { SendCursor } from './send-cursor.ts';
import { markCleanStop, newEpochAtNextStart } from './stop-marks.ts';
import { WatermarkWriter } from './watermark-writer.ts';
import { makeDirDurablySync } from '../../../shared/durable-fs.ts';

export { TAIL_CACHE_BYTES } from './queue-types.ts';
export type { SeqRanges } from './ack-book.ts';
export type { FullPolicy, OutgoingMessage, QueuedMessage, QueueItem, QueueOptions, SyncPolicy } from './queue-types.ts';

/**
 * The field client's store-and-forward queue on disk. This class ties its parts together:
 *
 * - recovery.ts: at the open (recoverQueue), after a crash, a torn or corrupt tail is cut off
 *   where the last good record ends, and counted; everything before it is kept. Everything above
 *   the committed watermark of ack.json (written at most 200 ms after a commit) is sent again:
 *   records that awaited their receipt, and the few committed since that write or out of order.
 *   The internal side's replay window makes those copies harmless.
 * - segment-writer.ts: every accepted message is appended to a segment file (records with a CRC-32
 *   each) and, with the default sync policy, fsync'ed before `append` resolves. Appends arriving
 *   while a write is in flight share the next write and fsync (segment-syncs.ts, which also seals
 *   a segment an fsync failed on). batch-encoder.ts encodes an append's records beforehand.
 * - send-cursor.ts: what the sender reads next, from memory while it keeps up, else from disk.
 * - ack-book.ts: a message stays until it is committed: by the gateway's ack, or, with `receipts`,
 *   by a commit receipt saying the database holds it (the ack then only moves it to "awaiting its
 *   receipt", and one that waits too long is sent again). A segment whose records are all committed
 *   is deleted. watermark-writer.ts writes the committed watermark to ack.json behind it.
 * - queue-epochs.ts: the epochs that name the messages (`EPOCH.SEQ`); after a power cut (a stop
 *   that was not clean, then a restart of the machine) or a run in which an fsync failed, what is
 *   numbered next gets a new epoch, so a number sent before and lost from the disk never names
 *   another message. When the disk refuses to save it (full), the queue opens drain-only: it sends
 *   what it holds and refuses new data (FIELD_QUEUE_WRITE_FAILED) until the epoch is saved, tried
 *   again at each append.
 * - capacity.ts: the size on disk is bounded (maxBytes), together with what shares that bound
 *   (shareCapacity: the refused messages the field client set aside; queue-room.ts keeps what
 *   shares it and who is told of drops). When full, the queue either refuses new data
 *   (FIELD_QUEUE_FULL, counted in `refused`) or drops its oldest segment (counted in `dropped`).
 * - queue-admission.ts decides on each append (drain-only, encoding, room); queue-commits.ts takes
 *   records out on acks and receipts and deletes the segments left with none; stop-marks.ts writes
 *   what a stop leaves for the next start.
 */
export class DurableQueue {
  private readonly segments: Segment[] = [];
  private nextSeq = 1;
  private readonly book: AckBook;
  private readonly writer: SegmentWriter;
  private readonly cursor: SendCursor;
  /** the bound on disk, and what shares it or is told of drops (queue-room.ts) */
  private readonly room: QueueRoom;
  private readonly mark: WatermarkWriter;
  private readonly commits: QueueCommits;
  private readonly admission: AdmissionHost;
  private closed = false;
  private epochs!: QueueEpochs;
  /** acked: the gateway's acks; committed: records gone for good (by an ack without receipts, else by a receipt) */
  readonly stats = { appended: 0, acked: 0, committed: 0, dropped: 0, refused: 0, writeFailed: 0, corruptTails: 0, corruptRecords: 0, lastAckAt: 0 };

  private constructor(private readonly o: QueueOptions) {
    makeDirDurablySync(o.dir);
    this.mark = new WatermarkWriter(o.dir, o.log, () => this.book.watermark);
    this.book = new AckBook(this.mark.written, o.receipts ?? false);
    this.cursor = new SendCursor(this.segments, this.book, o.tailCacheBytes ?? TAIL_CACHE_BYTES, o.log, (from, to) => this.commits.forget([[from, to]]));
    this.writer = new SegmentWriter(
      o,
      this.segments,
      this.stats,
      (seg, start, sizes, messages) => this.cursor.written(seg, start, sizes, messages),
      // A failed write's numbers were never on disk nor sent: they are given again (segment-writer.ts).
      (next) => (this.nextSeq = Math.max(next, this.book.watermark + 1)),
      // Records refused after a failed fsync: gone as if committed (not counted so), never sent from now on.
      (first, last) => this.book.commitRanges([[first, last]], last + 1),
      // May throw: the writer then refuses what comes until the next start is told (segment-writer.ts, mend).
      () => this.epochs.newEpochAtNextStart(),
    );
    this.room = new QueueRoom({
      o,
      segments: this.segments,
      book: this.book,
      cursor: this.cursor,
      mark: this.mark,
      stats: this.stats,
      activeSegment: () => this.writer.activeSegment,
      bytesOnDisk: () => this.bytesOnDisk,
      held: (look) => this.held(look),
    });
    this.commits = new QueueCommits({
      segments: this.segments,
      book: this.book,
      cursor: this.cursor,
      writer: this.writer,
      mark: this.mark,
      stats: this.stats,
      receipts: o.receipts ?? false,
      nextSeq: () => this.nextSeq,
      closed: () => this.closed,
      now: () => this.now(),
    });
    this.admission = { o, capacity: this.room.capacity, stats: this.stats, epochs: () => this.epochs, sharedBytes: () => this.room.sharedBytes(), bytesOnDisk: () => this.bytesOnDisk };
  }

  static async open(o: QueueOptions): Promise<DurableQueue> {
    const q = new DurableQueue(o);
    recoverQueue({ o, segments: q.segments, stats: q.stats, book: q.book, mark: q.mark, commits: q.commits, numbered: (next) => (q.nextSeq = next) });
    q.numberedAtOpen = q.nextSeq;
    // After recovery: the epochs need the first number given from now on.
    q.epochs = QueueEpochs.open(o.dir, { nextSeq: q.nextSeq, watermark: q.book.watermark, boot: bootId(), log: o.log });
    await q.writer.openActive(q.nextSeq);
    return q;
  }

  /**
   * Bytes held outside the queue that count against its maxBytes (the field client's refused
   * messages set aside, or the room kept for them): asked at every append, so it must be cheap.
   * A full queue refuses, or drops its oldest, to keep segments and these within maxBytes.
   */
  shareCapacity(bytes: () => number): void {
    this.room.sharedBytes = bytes;
  }

  /**
   * Tells `listener` of the records not yet committed that drop-oldest drops, read back from their
   * segment before it is deleted: the field client removes the outbox file a dropped file record
   * names (the file is the oldest data then; left there it would be counted, never sent), and
   * journals a command's answer as kept again (commands.ts, answersDropped). Called synchronously,
   * before the segment is deleted: what it syncs is on disk before the records are gone.
   */
  onDrop(listener: (dropped: QueuedMessage[]) => void): void {
    this.room.dropListener = listener;
  }

  /** the epoch of the messages accepted from now on: a message's id is `EPOCH.SEQ` (queue-epochs.ts) */
  get epoch(): string {
    return this.epochs.current;
  }

  /** The epoch a held message was numbered under (messages of several epochs are held after an unclean stop). */
  epochOf(seq: number): string {
    return this.epochs.epochOf(seq) ?? this.epoch;
  }

  /** The sequence number of one of this queue's message ids (undefined: not one of its ids). */
  seqOf(messageId: string): number | undefined {
    return this.epochs.seqOf(messageId);
  }

  /** The numbers `epoch` names, inclusive (undefined: not an epoch of this queue). */
  epochRange(epoch: string): readonly [number, number] | undefined {
    return this.epochs.range(epoch);
  }

  /** true while the record `seq` is held: numbered, not committed, not dropped */
  has(seq: number): boolean {
    return seq < this.nextSeq && this.book.isOpen(seq);
  }

  /** The number the next message appended takes. */
  get nextNumber(): number {
    return this.nextSeq;
  }

  /** The first number given after the open: one an earlier run gave below it was on disk at the open (or committed, or lost to damage), one at or past it never was. */
  numberedAtOpen = 0;

  /** records not yet committed: unsent, in flight and awaiting their receipt */
  get depth(): number {
    return this.book.depth(this.nextSeq);
  }

  /** at or below it every record is committed (or dropped): what ack.json keeps */
  get committedThrough(): number {
    return this.book.watermark;
  }

  /**
   * The committed watermark as ack.json holds it: committedThrough runs ahead of it by up to
   * TIMINGS.ackPersistDelayMs. A record above it may be read back at the next start, committed or
   * not (what keeps a note of a record let go until then asks this: files/finished-transfers.ts).
   */
  get persistedThrough(): number {
    return this.mark.written;
  }

  /** The oldest record not committed from `from` on, records for which `skip` is true aside (see AckBook.firstOpen). */
  firstOpen(skip: (seq: number) => boolean, from = 0): number {
    return this.book.firstOpen(skip, from, this.nextSeq);
  }

  /** records acknowledged by the gateway and awaiting their receipt; `oldestAt`: when the oldest was acked, on the queue's clock (now()) */
  get awaiting(): { count: number; bytes: number; oldestAt: number | undefined } {
    return this.book.awaiting;
  }

  /**
   * The clock acks are stamped with, and expireAwaiting is asked on: milliseconds of this process's
   * monotonic clock (performance.now()), not the wall clock. The device's clock set back (NTP
   * stepping a device that booted with its clock ahead) held back every resend for want of a
   * receipt by the step, an hour for an hour, and the receipt window, full, stopped sending
   * meanwhile; set forward, it had everything awaiting sent again at once.
   */
  now(): number {
    return performance.now();
  }

  get bytesOnDisk(): number {
    return this.segments.reduce((n, s) => n + s.bytes, 0) + this.writer.bytesPending;
  }

  /**
   * Resolves once everything appended so far is synced to the disk. With the default policy
   * (`always`) each append already was; with an interval, this syncs now rather than at the next
   * tick: for what deletes or forgets a source on the strength of the queue's record (a file
   * moved into the outbox, a kept file remembered as sent), which a power cut must not leave
   * deleted or forgotten while the record is lost.
   */
  durable(): Promise<void> {
    return this.o.sync.mode === 'always' ? Promise.resolve() : this.writer.syncedNow();
  }

  /** FIELD_QUEUE_FULL_POLICY is drop-oldest: room is made by dropping the oldest data */
  get dropsOldest(): boolean {
    return this.o.fullPolicy === 'drop-oldest';
  }

  /**
   * Room for `bytes` more held outside the segments (a file being taken into the outbox, counted
   * there): true when they fit within maxBytes, with what shares it. Under drop-oldest the oldest
   * segments are dropped for them first, as for an append: refused instead, a file waited for room
   * that readings, each taking it from the oldest, never left it. FIELD_QUEUE_WRITE_FAILED when a
   * segment could not be deleted.
   */
  makeRoomFor(bytes: number): boolean {
    return this.room.makeRoomFor(bytes);
  }

  /**
   * Appends messages; resolves once they are on disk (per the sync policy). Each payload is
   * serialised here, once: changing a payload object afterwards changes nothing queued.
   */
  append(items: readonly QueueItem[]): Promise<QueuedMessage[]> {
    if (this.closed) return Promise.reject(new Error('queue closed'));
    let batch: EncodedBatch;
    try {
      batch = admit(this.admission, items, this.nextSeq);
    } catch (err) {
      return Promise.reject(err);
    }
    this.nextSeq += batch.messages.length;
    return this.writer.enqueue(batch);
  }

  /**
   * The next unsent messages in order (never one committed, awaiting its receipt or already in
   * flight), from the send cursor, at most `max` of them and about `maxBytes`. Only what is written
   * is returned: from memory when the sender keeps up, else read back from disk.
   */
  next(max: number, maxBytes = 4 * 1024 * 1024): OutgoingMessage[] {
    return this.cursor.next(max, maxBytes);
  }

  /** Sends start again from the first message not committed and not awaiting its receipt (after a
   * reconnect); until the next `next`, nothing is kept in memory for a sender. */
  rewind(): void {
    this.book.rewind();
    this.cursor.close();
  }

  /**
   * The gateway's acks. Without receipts they commit; with receipts the records await their
   * receipt (and are not sent again unless it is late: see expireAwaiting).
   */
  ack(seqs: Iterable<number>): void {
    this.commits.ack(seqs);
  }

  /** Commits records for good (a verified receipt), awaited or not yet acked; returns how many were
   * newly committed (0 for a receipt replayed or naming nothing this queue holds). */
  commit(seqs: Iterable<number>): number {
    return this.commits.commit(seqs);
  }

  /** commit() for inclusive ranges of sequence numbers. */
  commitRanges(ranges: SeqRanges): number {
    return this.commits.commitRanges(ranges);
  }

  /**
   * A verified receipt's ranges of `epoch`: only the numbers that epoch names are committed (after an
   * unclean stop a number of an old epoch may name another message under the new one). Returns how
   * many were newly committed, or undefined when `epoch` is not one of this queue's.
   */
  commitReceipt(epoch: string, ranges: SeqRanges): number | undefined {
    const own = this.epochs.clip(epoch, ranges);
    return own && this.commitRanges(own);
  }

  /**
   * Records that have awaited their receipt longer than `timeoutMs` at `now` (epoch ms) are unsent
   * again: `next` reads them again from disk, in order. Returns how many. Costs nothing when none is
   * late: the oldest awaiting is looked at first.
   */
  expireAwaiting(now: number, timeoutMs: number): number {
    return this.commits.expireAwaiting(now, timeoutMs);
  }

  /**
   * How many records at or below `seq` are unsent: what `next` hands out first, before any record
   * above `seq` (only sending hands a record out, and what is put back to unsent moves the cursor
   * back to it). Costs a look at each number above the committed watermark up to `seq`.
   */
  unsentThrough(seq: number): number {
    return this.book.unsentThrough(seq);
  }

  /**
   * Records in flight that the gateway never answered, given up on (overdue: in-flight.ts): unsent
   * again, `next` reads them again from disk, in order, without sending again what else is in
   * flight. Returns how many.
   */
  sendAgain(seqs: Iterable<number>): number {
    const { count, lowest } = this.book.unsend(seqs);
    if (count > 0) this.cursor.goBackTo(lowest);
    return count;
  }

  /**
   * The records of these sequence numbers that are still held, read back from disk (for the rare
   * paths that need a record's content after it was sent: setting a refused message aside).
   */
  read(seqs: ReadonlySet<number>): QueuedMessage[] {
    const inSegment = (seg: Segment) => [...seqs].some((s) => s >= seg.firstSeq && s <= seg.lastSeq && this.book.isOpen(s));
    return [...this.held(inSegment)].filter((m) => seqs.has(m.seq));
  }

  /** The held records (not committed) `wanted` picks, read back from disk: for recovery at a start, not per message. */
  find(wanted: (m: QueuedMessage) => boolean): QueuedMessage[] {
    return [...this.held()].filter(wanted);
  }

  /** acceptedAt of the oldest message not committed, read from disk (undefined when none). */
  oldestUnacked(): number | undefined {
    for (const m of this.held()) return m.acceptedAt;
    return undefined;
  }

  /** The records not committed, oldest first, read back from disk (held-records.ts), from the segments `look` picks (by default those holding any). */
  private held(look: (seg: Segment) => boolean = (seg) => seg.lastSeq > this.book.watermark): Generator<QueuedMessage> {
    return readHeld(this.segments, (seq) => this.book.isOpen(seq), look);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    while (!this.writer.idle) await new Promise((r) => setTimeout(r, 5));
    this.closed = true;
    this.mark.close();
    this.cursor.close();
    try {
      await this.writer.close();
    } finally {
      // After a failed fsync (segment-syncs.ts, seal): said here too, should the writer not have managed since.
      if (this.writer.lossPossible) newEpochAtNextStart(this.epochs, this.o.log);
    }
    // Not after a failed fsync: records sent may be missing from the disk (segment-syncs.ts, seal).
    if (this.writer.lossPossible) return;
    markCleanStop(this.epochs, this.o.log);
  }
}
