import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { removeLeftAsideSync, replaceFileDurablySync } from '../../../shared/durable-fs.ts';
import { LIMITS } from '../../../shared/limits.ts';
import { appendLinesSync, readLinesSync } from '../../../shared/line-file.ts';
import type { Logger } from '../../../shared/logger.ts';

/**
 * The file transfers whose queue record was let go (every chunk delivered, the file refused and set
 * aside in rejected/, or its file gone) and that the next start may read back all the same. The
 * queue keeps one committed watermark (ack.json, queue/ack-book.ts): a record committed above it
 * (a reading before it still unanswered) is read back at the next start, clean stops included,
 * though its file left the outbox. That start reported the file missing (FIELD_FILE_UNREADABLE) for
 * a file delivered; recoverOutbox now lets such a record go quietly (a debug line).
 *
 * FIELD_DATA_DIR/transfers-finished.jsonl: one JSON line per transfer, its id and its record's
 * number (a record that was not one, FIELD_QUEUE_CORRUPT: its number alone, so it is not logged
 * again at every start), appended and synced (appendLinesSync: on a line of its own after a torn one) only after
 * its file left the outbox. So a kill between the two leaves the record to come back and be
 * reported missing, as before; never a record skipped whose file is still to send. A line written
 * while its file could not be removed nor set aside (the disk) names a file still in outgoing/: the
 * next start finds it named by no record left and sets it aside (FIELD_FILE_UNQUEUED), never sends
 * it nor deletes it.
 *
 * A line is let go once ack.json's watermark is past its record (that record is never read back
 * again), and at a start that holds no record of it; the file is written anew (durably, whole) when
 * it holds more than twice the lines it needs. Read back, each line is checked (zod); a torn last
 * line (a kill while appending) is dropped quietly, other damage logged (FIELD_STATE_INVALID).
 * At most LIMITS.fileTransfersFinishedMax transfers: past it one is not written down, and its
 * record, should it come back, is reported missing; nothing is lost either way.
 */
export class FinishedTransfers {
  /** transfer id → the number of its queue record */
  private readonly done = new Map<string, number>();
  /** the numbers of file records let go as not records at all (no transfer id to name them by) */
  private readonly notRecords = new Set<number>();
  /** lines in the file */
  private lines = 0;
  /** the file's name is synced (appendLinesSync) */
  private readonly named = new Set<string>();
  /** the watermark the lines were last let go by (add) */
  private prunedThrough = 0;
  /** the disk refused the file since it was last written (logged once until it is) */
  private unwritten = false;
  /** the bound refused one since one was last written down (logged once until one is) */
  private overBound = false;
  readonly path: string;

  constructor(dataDir: string, private readonly log: Logger) {
    this.path = join(dataDir, 'transfers-finished.jsonl');
    removeLeftAsideSync(this.path);
    if (!existsSync(this.path)) return;
    let damaged = 0;
    let torn = false;
    try {
      for (const text of readLinesSync(this.path, LINE_MAX_BYTES)) {
        if (text === '') continue;
        this.lines++;
        const line = text === undefined ? undefined : parse(text);
        torn = line === undefined;
        if (line?.transferId !== undefined) this.done.set(line.transferId, line.seq);
        else if (line) this.notRecords.add(line.seq);
        else damaged++;
      }
    } catch (err) {
      log.warn({ code: 'FIELD_STATE_INVALID', path: this.path, err: (err as Error).message }, 'cannot read the file transfers finished: a record of one read back is reported missing (FIELD_FILE_UNREADABLE), nothing is lost');
      return;
    }
    // The last line refused is what a kill while appending leaves: its record was committed, no more.
    if (torn) damaged--;
    if (damaged > 0) log.warn({ code: 'FIELD_STATE_INVALID', path: this.path, lines: damaged }, 'damaged lines in the file transfers finished: skipped (a record of theirs read back is reported missing, nothing is lost)');
    if (damaged > 0 || torn || this.lines > this.size * 2 + COMPACT_SLACK_LINES) this.rewrite();
  }

  get size(): number {
    return this.done.size + this.notRecords.size;
  }

  has(transferId: string): boolean {
    return this.done.has(transferId);
  }

  /** The file record `seq`, not one (file-records.ts, FIELD_QUEUE_CORRUPT), was let go before. */
  hasNotRecord(seq: number): boolean {
    return this.notRecords.has(seq);
  }

  /**
   * The transfer's file left the outbox (or was set aside, or is gone) and its record `seq` was let
   * go; `transferId` undefined: the record was not one (FIELD_QUEUE_CORRUPT, logged once), written
   * down by its number, so a start that reads it back lets it go quietly. `persistedThrough`: the watermark ack.json holds (DurableQueue.persistedThrough), at or
   * below which no record is read back again: the lines of those go. Never throws (called from the
   * gateway connection's frame handler): a disk that refuses the line is logged.
   */
  add(transferId: string | undefined, seq: number, persistedThrough: number): void {
    if (persistedThrough > this.prunedThrough) {
      for (const [id, s] of this.done) if (s <= persistedThrough) this.done.delete(id);
      for (const s of this.notRecords) if (s <= persistedThrough) this.notRecords.delete(s);
      this.prunedThrough = persistedThrough;
    }
    if (this.size >= LIMITS.fileTransfersFinishedMax) {
      if (!this.overBound) this.log.warn({ transferId, max: LIMITS.fileTransfersFinishedMax }, 'too many file transfers finished above the committed watermark to write down: should its record be read back at a start, it is reported missing (FIELD_FILE_UNREADABLE); nothing is lost');
      this.overBound = true;
      return;
    }
    this.overBound = false;
    if (transferId === undefined) this.notRecords.add(seq);
    else this.done.set(transferId, seq);
    // After a write the disk refused, written whole: the transfers it missed are in it again.
    if (this.unwritten || this.lines + 1 > this.size * 2 + COMPACT_SLACK_LINES) {
      this.rewrite();
      return;
    }
    try {
      const closeFailed = appendLinesSync(this.path, line(transferId, seq), 0o600, this.named);
      if (closeFailed) this.log.warn({ code: 'FILE_CLOSE_FAILED', err: closeFailed.message, path: this.path }, 'file transfers finished synced, the close failed; the line counts as written');
      this.lines++;
      this.unwritten = false;
    } catch (err) {
      this.written(err as Error);
    }
  }

  /**
   * A start: the transfers whose records the queue holds (`held`), and the records not ones it
   * holds (`heldNotRecords`, their numbers), are kept; the others never come back.
   */
  keepOnly(held: ReadonlySet<string>, heldNotRecords: ReadonlySet<number>): void {
    const before = this.size;
    for (const id of this.done.keys()) if (!held.has(id)) this.done.delete(id);
    for (const s of this.notRecords) if (!heldNotRecords.has(s)) this.notRecords.delete(s);
    if (this.size !== before) this.rewrite();
  }

  private rewrite(): void {
    try {
      replaceFileDurablySync(this.path, [...[...this.done].map(([id, seq]) => line(id, seq)), ...[...this.notRecords].map((seq) => line(undefined, seq))]);
      this.lines = this.size;
      this.unwritten = false;
    } catch (err) {
      this.written(err as Error);
    }
  }

  private written(err: Error): void {
    if (!this.unwritten) {
      this.log.warn(
        { code: 'FIELD_STATE_WRITE_FAILED', path: this.path, err: err.message },
        'cannot write down the file transfers finished: should a record of one be read back at a start, it is reported missing (FIELD_FILE_UNREADABLE); nothing is lost',
      );
    }
    this.unwritten = true;
  }
}

/** `transferId` absent: a file record that was not one, let go (add). */
const LineSchema = z.object({ transferId: z.string().min(1).max(128).optional(), seq: z.number().int().positive() });

/** bytes. Longest line: a transfer id (about 22 characters) and a number, quoted. */
const LINE_MAX_BYTES = 512;
/** lines. Written anew only past twice what is kept and this many more, so not at every transfer. */
const COMPACT_SLACK_LINES = 64;

const line = (transferId: string | undefined, seq: number): string => `${JSON.stringify((transferId === undefined ? { seq } : { transferId, seq }) satisfies z.infer<typeof LineSchema>)}\n`;

function parse(text: string): z.infer<typeof LineSchema> | undefined {
  try {
    const r = LineSchema.safeParse(JSON.parse(text));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}
