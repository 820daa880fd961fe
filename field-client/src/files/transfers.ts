import { isFieldStreamError } from '../../../shared/errors.ts';
import { TIMINGS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { SeqRanges } from '../../../shared/security/receipt-auth.ts';
import type { FrameItem } from '../../../shared/contract/uplink-frame.ts';
import type { FileOutbox } from './file-outbox.ts';
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
  private readonly byId = new Map<string, Transfer>();
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

  get size(): number {
    return this.byId.size;
  }

  /** Whether `seq` is the queue record of a transfer in progress (it stays open until its file is done). */
  holdsRecord(seq: number): boolean {
    for (const t of this.byId.values()) if (t.seq === seq) return true;
    return false;
  }

  /** Takes up the transfer a queue record names; false when its file is gone from the outbox. */
  start(seq: number, rec: FileTransferRecord): boolean {
    if (this.byId.has(rec.transferId)) return true;
    if (!this.outbox.has(rec.transferId)) return false;
    // Never past the last chunk: commit() saves the progress of the file's last chunk before it
    // removes the file, and a kill between left it saying every chunk is done. Taken as said, nothing
    // would be sent and nothing committed: the file and its record held for ever. The last chunk goes
    // again instead; the distributor answers it from the transfer's done marker (file-store.ts
    // storeChunk), and its receipt finishes the transfer.
    const done = Math.min(this.savedProgress(rec), rec.count - 1);
    this.byId.set(rec.transferId, { seq, rec, done, next: done, committed: new Set(), sent: new Map(), awaiting: new Map(), resend: [] });
    return true;
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
   * the queue's clock (durable-queue.ts, now()), when they are sent.
   */
  *chunks(now = performance.now()): Generator<{ epoch: string; item: FrameItem }> {
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
    if (!this.byId.delete(transferId)) return;
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
      const aside = this.finish(t.rec);
      this.log.info({ transferId: t.rec.transferId, filename: t.rec.filename, bytes: t.rec.size }, this.o.receipts ? 'file stored on the internal network' : 'file delivered');
      this.finished(t.seq, t.rec.transferId, aside);
    }
    return n;
  }

  /**
   * The file of a transfer all done leaves the outbox, unless its producer wrote to it after it was
   * taken, past its end or in place (FileOutbox.finish): then it is set aside whole, and the operator
   * told, as what was sent is not all of it; its size unreadable (EIO), it is kept, never removed unchecked;
   * its removal failing (the disk), it is kept too, FIELD_FILE_NOT_REMOVED. True
   * when it was (or may have been) set aside: rejected/ is measured again. Should that fail (the
   * disk), it stays where it is, said so: deleted, the bytes never sent would be lost; thrown on,
   * the error would end the client from the gateway connection's frame handler. Its record is let go all the same (all it names was sent): the next start finds the
   * file named by no record and sets it aside then (outbox-recovery.ts).
   */
  private finish(rec: FileTransferRecord): boolean {
    const fields = { code: 'FIELD_FILE_APPENDED' as const, transferId: rec.transferId, filename: rec.filename, sentBytes: rec.size };
    let aside: ReturnType<FileOutbox['finish']>;
    try {
      aside = this.outbox.finish(rec);
    } catch (err) {
      if (isFieldStreamError(err, 'FIELD_FILE_UNREADABLE')) {
        // Its size unreadable (EIO): whether it was written to after it was taken is not known.
        this.log.error({ ...fields, code: err.code, err: err.message }, 'a file all sent cannot be looked at (its size): it stays in outgoing/ under its transfer id, set aside at the next start');
      } else if (isFieldStreamError(err, 'FIELD_FILE_NOT_REMOVED')) {
        // Unchanged since it was taken: only its removal failed, nothing was written to it.
        this.log.error({ ...fields, code: err.code, err: err.message }, 'a file all sent cannot be removed from the outbox: it stays in outgoing/ under its transfer id, set aside at the next start');
      } else {
        this.log.error({ ...fields, err: (err as Error).message }, 'a file was written to after it was taken, and cannot be set aside: it stays where it is (outgoing/ under its transfer id, set aside at the next start; or rejected/)');
      }
      return true;
    }
    if (!aside) return false;
    this.log.warn(
      { ...fields, bytes: aside.bytes, path: aside.path, written: aside.why },
      aside.why === 'appended'
        ? 'a file was written to after it was taken (its producer still had it open): what was taken is sent; the whole file is set aside'
        : 'a file was written to in place after it was taken (its producer still had it open): what was sent may not be what its record says (the distributor refuses it then, DISTRIBUTOR_FILE_CHECKSUM); the whole file, as it is now, is set aside',
    );
    return true;
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
