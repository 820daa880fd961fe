import { LIMITS, TIMINGS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { SeqRanges } from '../../../shared/security/receipt-auth.ts';
import type { FrameItem } from '../../../shared/contract/uplink-frame.ts';
import type { FileOutbox } from './file-outbox.ts';
import { finishTransfer } from './transfer-finish.ts';
import type { FileTransferRecord } from './transfer-record.ts';

/** The queue's own kind for a file sent in chunks; never sent as such. */
export const FILE_TRANSFER = 'file-transfer';

export interface TransferOptions {
  /** chunks of one file sent and not yet committed (in flight or awaiting their receipt) */
  window: number;
  /** true: a chunk is done at its commit receipt; false: at the gateway's ack */
  receipts: boolean;
}

interface Transfer {
  /** the queue record of the transfer */
  seq: number;
  rec: FileTransferRecord;
  /** chunks below this are committed (the outbox's saved progress) */
  done: number;
  /** next chunk to send for the first time on this connection */
  next: number;
  /** chunks committed above `done` */
  committed: Set<number>;
  /** chunks sent on this connection and not acknowledged yet → when (on the queue's clock: performance.now()) */
  sent: Map<number, number>;
  /** chunk → epoch ms of its ack, for chunks awaiting their receipt */
  awaiting: Map<number, number>;
  /** chunks to send again (their receipt was overdue, or their read failed), before any new one */
  resend: number[];
  /** the last read of a chunk failed (logged once until one is read) */
  readFailed?: boolean;
  /** milliseconds before the next read after one that failed (doubled after each in a row) */
  retryMs?: number;
}

/**
 * Files going out in chunks, from the outbox. A chunk's identity is the transfer id (its epoch) and
 * its index (its sequence number), which is also what its commit receipt names. A chunk is done
 * when its receipt arrives (or, without receipts, at the gateway's ack); the outbox keeps the file,
 * and its progress (the chunks done in order), until every chunk is done, so a transfer resumes
 * after a disconnect or a restart from the first chunk not committed, and a file is deleted only
 * once the distributor has stored all of it.
 */
export class FileTransfers {
  /** transfers running: their chunks are sent */
  private readonly byId = new Map<string, Transfer>();
  /** transfers taken whose turn has not come, in the order taken: their record only (takeTurns) */
  private readonly waiting = new Map<string, { seq: number; rec: FileTransferRecord }>();
  /** the queue records of the transfers taken, running or waiting */
  private readonly records = new Set<number>();
  /** message id of a chunk on this connection → its transfer and index */
  private readonly chunkIds = new Map<string, { transferId: string; index: number }>();
  /** the disk refused a progress file since one was last written (logged once until one is) */
  private progressUnsaved = false;
  /** wakes the pump after a chunk's read failed (see read); one for all transfers */
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly outbox: FileOutbox,
    private readonly o: TransferOptions,
    /**
     * called once a whole file is done (or gone from the outbox), after its file left the outbox,
     * with its queue record's sequence number and its transfer id; `setAside`: the file went (or
     * may have gone) into FIELD_DATA_DIR/rejected/ (see FileOutbox.finish), to be measured again
     */
    private readonly finished: (seq: number, transferId: string, setAside?: boolean) => void,
    private readonly log: Logger,
    /** asks for a pump: chunks whose read failed are tried again then */
    private readonly wake: () => void = () => {},
  ) {}

  /** transfers taken, running or waiting their turn */
  get size(): number {
    return this.byId.size + this.waiting.size;
  }

  /** Whether `seq` is the queue record of a transfer taken, running or waiting (it stays open until its file is done). */
  holdsRecord(seq: number): boolean {
    return this.records.has(seq);
  }

  /**
   * Takes up the transfer a queue record names; false when its file is gone from the outbox. It
   * waits its turn: at most LIMITS.fieldFileTransfersMax run at once, in the order taken (takeTurns).
   */
  start(seq: number, rec: FileTransferRecord): boolean {
    if (this.byId.has(rec.transferId) || this.waiting.has(rec.transferId)) return true;
    if (!this.outbox.has(rec.transferId)) return false;
    this.waiting.set(rec.transferId, { seq, rec });
    this.records.add(seq);
    this.takeTurns();
    return true;
  }

  /**
   * Starts waiting transfers, oldest first, while fewer than LIMITS.fieldFileTransfersMax run. One
   * whose chunk could not be read (the disk) does not count until one is read again: a file the disk
   * keeps failing does not hold the others back. Only here is a file's progress read: a backlog of
   * files taken costs no disk read before each one's turn.
   */
  private takeTurns(): void {
    if (this.waiting.size === 0) return;
    let running = 0;
    for (const t of this.byId.values()) if (!t.readFailed) running++;
    for (const [transferId, { seq, rec }] of this.waiting) {
      if (running >= LIMITS.fieldFileTransfersMax) return;
      this.waiting.delete(transferId);
      // Never past the last chunk: commit() saves the progress of the file's last chunk before it
      // removes the file, and a kill between left it saying every chunk is done. Taken as said, nothing
      // would be sent and nothing committed: the file and its record held for ever. The last chunk goes
      // again instead; the distributor answers it from the transfer's done marker (file-store.ts
      // storeChunk), and its receipt finishes the transfer. (Gone from the outbox meanwhile, its first
      // read ends it: see read.)
      const done = Math.min(this.savedProgress(rec), rec.count - 1);
      this.byId.set(transferId, { seq, rec, done, next: done, committed: new Set(), sent: new Map(), awaiting: new Map(), resend: [] });
      running++;
    }
  }

  /**
   * The chunks done in order saved beside the file (FileOutbox.progress), or 0 when it cannot be
   * read (EIO, EMFILE): nothing is deleted on its word, and a resend is a copy, recognised. Thrown
   * on, the error left the pump with the record handed out and its transfer not started: nothing of
   * the file went until the connection happened to drop, on a disk that keeps failing not even then.
   */
  private savedProgress(rec: FileTransferRecord): number {
    try {
      return this.outbox.progress(rec.transferId);
    } catch (err) {
      this.log.warn(
        { code: 'FIELD_STATE_INVALID', transferId: rec.transferId, filename: rec.filename, err: (err as Error).message },
        "cannot read a file transfer's saved progress: its chunks are sent from the first (those the internal side holds are recognised as copies)",
      );
      return 0;
    }
  }

  /**
   * Chunks to send now, within each transfer's window: overdue ones first, then new ones. `now`: on
   * the queue's clock (durable-queue.ts, now()), when they are sent. Of the transfers running
   * only: waiting ones start first if there is room (takeTurns).
   */
  *chunks(now = performance.now()): Generator<{ epoch: string; item: FrameItem }> {
    this.takeTurns();
    for (const t of this.byId.values()) {
      while (t.sent.size + t.awaiting.size < this.o.window) {
        let index = t.resend.shift();
        if (index === undefined) {
          while (t.next < t.rec.count && (t.next < t.done || t.committed.has(t.next) || t.awaiting.has(t.next))) t.next++;
          if (t.next >= t.rec.count) break;
          index = t.next++;
        }
        if (index < t.done || t.committed.has(index)) continue;
        // Read before it counts as sent: a read that threw out of the pump with the chunk counted
        // held its window slot until a reconnect, the file stuck on a connection that stayed up.
        const data = this.read(t, index);
        if (data === undefined) break;
        const messageId = `${t.rec.transferId}.${index}`;
        this.chunkIds.set(messageId, { transferId: t.rec.transferId, index });
        t.sent.set(index, now);
        const payload = {
          filename: t.rec.filename,
          contentType: t.rec.contentType,
          data: data.toString('base64'),
          transfer: { id: t.rec.transferId, index, count: t.rec.count, size: t.rec.size, sha256: t.rec.sha256 },
          metadata: { size: t.rec.size, timestamp: t.rec.timestamp },
        };
        // A chunk's identity for the replay window: the transfer is its epoch, the index its sequence.
        yield { epoch: t.rec.transferId, item: { dataType: 'file', messageId, seq: index, payloadJson: JSON.stringify(payload) } };
      }
    }
  }

  /**
   * A chunk of the transfer's file, or undefined when it cannot be read now. Gone from the outbox
   * (ENOENT: removed by hand, to free a full disk), nothing more of it can ever be sent: the
   * transfer ends and its record is let go, as when the file is missing at its start
   * (file-records.ts). Any other failure (EIO, EMFILE) leaves the chunk first for the next pump,
   * logged once until a chunk of the file is read again, and a pump is asked for after a back-off
   * (TIMINGS.fileReadRetryInitialMs, doubling up to fileReadRetryMaxMs): on an idle link no ack,
   * receipt or new data would bring one, and the file stalled until something else happened.
   */
  private read(t: Transfer, index: number): Buffer | undefined {
    try {
      const data = this.outbox.readChunk(t.rec, index);
      t.readFailed = false;
      t.retryMs = undefined;
      return data;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const fields = { code: 'FIELD_FILE_UNREADABLE' as const, transferId: t.rec.transferId, filename: t.rec.filename, index, err: (err as Error).message };
      if (code === 'ENOENT') {
        this.drop(t.rec.transferId);
        this.log.error(fields, 'a file being sent is gone from the outbox; dropping its record');
        this.finished(t.seq, t.rec.transferId);
        return undefined;
      }
      t.resend.unshift(index);
      const delay = t.retryMs ?? TIMINGS.fileReadRetryInitialMs;
      t.retryMs = Math.min(delay * 2, TIMINGS.fileReadRetryMaxMs);
      if (!t.readFailed) this.log.warn({ ...fields, retryMs: delay }, 'cannot read a chunk of a file being sent; tried again after a pause (or at the next send)');
      t.readFailed = true;
      this.retryAfter(delay);
      return undefined;
    }
  }

  /**
   * A pump in `ms`, unless one is asked for already (any pump reads the failed chunks again; one
   * that fails again asks for the next). Unref'd: it does not hold a stopping process.
   */
  private retryAfter(ms: number): void {
    if (this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.wake();
    }, ms);
    this.retryTimer.unref();
  }

  /** The client stops: no pump is asked for after this. */
  close(): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  /** The gateway acknowledged a message: true when it was one of our chunks. */
  onAck(messageId: string, now: number): boolean {
    const chunk = this.chunkIds.get(messageId);
    if (!chunk) return false;
    this.chunkIds.delete(messageId);
    const t = this.byId.get(chunk.transferId);
    if (!t || !t.sent.delete(chunk.index)) return true;
    if (this.o.receipts) {
      if (chunk.index >= t.done && !t.committed.has(chunk.index)) t.awaiting.set(chunk.index, now);
    } else this.commit(t, [[chunk.index, chunk.index]]);
    return true;
  }

  /** A verified receipt for epoch `transferId`: how many chunks it newly committed (undefined: not a transfer of ours). */
  onReceipt(transferId: string, ranges: SeqRanges): number | undefined {
    const t = this.byId.get(transferId);
    return t ? this.commit(t, ranges) : undefined;
  }

  /**
   * A chunk the gateway refused for good: its whole file is set aside (files/file-outbox.ts), never
   * deleted. Returns the transfer's queue record (its number) and id, or undefined when the message
   * is not a chunk sent on this connection. Should setting it aside fail (the disk), the file stays
   * in outgoing/ and its record is let go all the same: the next start finds it named by no record
   * and sets it aside then (outbox-recovery.ts). Thrown on, the error ended the client from the gateway connection's
   * frame handler, and the refusal came again after every start.
   */
  refused(messageId: string): { seq: number; transferId: string } | undefined {
    const chunk = this.chunkIds.get(messageId);
    const t = chunk && this.byId.get(chunk.transferId);
    if (!t) return undefined;
    // Its chunks' ids go with it: left, each was held until a reconnect, one or more per file refused.
    this.drop(t.rec.transferId);
    const fields = { code: 'FIELD_MESSAGE_REFUSED' as const, transferId: t.rec.transferId, filename: t.rec.filename };
    try {
      this.log.error({ ...fields, path: this.outbox.setAside(t.rec) }, 'a file refused by the gateway; set aside');
    } catch (err) {
      this.log.error({ ...fields, err: (err as Error).message }, 'a file refused by the gateway cannot be set aside: it stays in outgoing/ under its transfer id, set aside at the next start');
    }
    return { seq: t.seq, transferId: t.rec.transferId };
  }

  /**
   * The transfer ends unfinished (drop-oldest dropped its queue record, the gateway refused it, its
   * file is gone): nothing more of it is sent, and the ids of its chunks on this connection are forgotten.
   */
  drop(transferId: string): void {
    const waiting = this.waiting.get(transferId);
    if (waiting) {
      this.waiting.delete(transferId);
      this.records.delete(waiting.seq);
      return;
    }
    const t = this.byId.get(transferId);
    if (!t) return;
    this.byId.delete(transferId);
    this.records.delete(t.seq);
    for (const [messageId, chunk] of this.chunkIds) if (chunk.transferId === transferId) this.chunkIds.delete(messageId);
  }

  /**
   * Chunks whose receipt is overdue are sent again, and so are chunks sent that long ago that the
   * gateway never answered (each held its file's window on a connection that stays up); how many.
   */
  expire(now: number, timeoutMs: number): number {
    let n = 0;
    for (const t of this.byId.values()) {
      for (const [index, at] of t.awaiting) {
        if (now - at < timeoutMs) continue;
        t.awaiting.delete(index);
        t.resend.push(index);
        n++;
      }
      for (const [index, at] of t.sent) {
        if (now - at < timeoutMs) continue;
        t.sent.delete(index);
        // A late ack of it is then no longer ours to act on; the copy sent again is.
        this.chunkIds.delete(`${t.rec.transferId}.${index}`);
        t.resend.push(index);
        n++;
      }
    }
    return n;
  }

  /** After a reconnect: what was sent and not acknowledged goes again; what awaits a receipt waits on. */
  reset(): void {
    this.chunkIds.clear();
    for (const t of this.byId.values()) {
      t.sent.clear();
      t.resend = [];
      t.next = t.done;
    }
  }

  private commit(t: Transfer, ranges: SeqRanges): number {
    let n = 0;
    for (const [from, to] of ranges) {
      for (let i = Math.max(from, t.done); i <= Math.min(to, t.rec.count - 1); i++) {
        if (t.committed.has(i)) continue;
        t.committed.add(i);
        t.awaiting.delete(i);
        n++;
      }
    }
    if (n === 0) return 0;
    const before = t.done;
    while (t.committed.delete(t.done)) t.done++;
    if (t.done !== before) this.saveProgress(t);
    if (t.done >= t.rec.count) {
      this.byId.delete(t.rec.transferId);
      this.records.delete(t.seq);
      const aside = finishTransfer(this.outbox, t.rec, this.log);
      this.log.info({ transferId: t.rec.transferId, filename: t.rec.filename, bytes: t.rec.size }, this.o.receipts ? 'file stored on the internal network' : 'file delivered');
      this.finished(t.seq, t.rec.transferId, aside);
    }
    return n;
  }

  /**
   * Saves the chunks done in order beside the file. Only a restart reads it, to resume from there,
   * and nothing is deleted on its word: when the disk refuses it (full: the client still sends, and
   * sending is what frees it), a restart meanwhile sends those chunks again (copies, recognised).
   * Logged once; the next chunk done writes it again. Thrown on, it would end the client from the
   * gateway connection's frame handler.
   */
  private saveProgress(t: Transfer): void {
    try {
      this.outbox.saveProgress(t.rec.transferId, t.done);
    } catch (err) {
      if (!this.progressUnsaved) {
        this.log.warn(
          { code: 'FIELD_STATE_WRITE_FAILED', transferId: t.rec.transferId, done: t.done, err: (err as Error).message },
          "cannot save a file transfer's progress: nothing is lost, a restart meanwhile sends its chunks since the last saved again; tried again at its next chunk",
        );
      }
      this.progressUnsaved = true;
      return;
    }
    if (this.progressUnsaved) this.log.info({ transferId: t.rec.transferId, done: t.done }, "a file transfer's progress is saved again");
    this.progressUnsaved = false;
  }
}
