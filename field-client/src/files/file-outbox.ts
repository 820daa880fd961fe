import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, lstatSync, openSync, readdirSync, rmSync, statSync, writeFileSync, renameSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { z } from 'zod';
import { FieldStreamError, isFieldStreamError } from '../../../shared/errors.ts';
import { LIMITS } from '../../../shared/limits.ts';
import { makeDirDurablySync, readRegularFileSync, readUpToSync, syncDirSync } from '../../../shared/durable-fs.ts';
import type { Logger } from '../../../shared/logger.ts';
import { NOTE, readNotes, removeNote, writeNote, type AcceptingNote } from './accepting-note.ts';
import { copyNoFollow } from './copy-no-follow.ts';
import { FileRoom, type Reservation } from './file-room.ts';
import { finishLeaving, moveBack, moveIn } from './source-moves.ts';
import { growing, hashPrefix } from './taking-steps.ts';
import { chunkBytesFor, type FileTransferRecord } from './transfer-record.ts';

/** A transfer's progress file as saveProgress writes it: String(chunks), a non-negative safe integer. */
const ProgressSchema = z
  .string()
  .regex(/^(0|[1-9][0-9]{0,15})$/)
  .transform(Number)
  .pipe(z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER));

/** A new transfer id: `f`, the time in base 36, 12 random hex digits (FileTransferSchema's rule). */
function newTransferId(): string {
  return `f${Date.now().toString(36)}${randomBytes(6).toString('hex')}`;
}

/**
 * Files waiting to be sent: each is copied (or moved) into FIELD_DATA_DIR/outgoing/ once, hashed
 * on the way, and then read chunk by chunk as it is sent, so memory stays at one chunk per file in
 * flight whatever the file's size. The number of chunks the gateway acknowledged in order is kept
 * beside it, so a transfer resumes after a disconnect or a restart from the last acknowledged chunk.
 */
export class FileOutbox {
  /** FIELD_DATA_DIR/outgoing/ */
  readonly dir: string;
  /** bytes: the chunk size the link and the gateway call for now, once known (see sizeChunksBy) */
  private linkChunkBytes: () => number | undefined = () => undefined;

  constructor(dataDir: string, private readonly chunkBytes: number) {
    this.dir = join(dataDir, 'outgoing');
    makeDirDurablySync(this.dir);
  }

  /**
   * A file taken from now on is cut in chunks of at most what `link` says (bytes; undefined: neither
   * the link is measured nor a gateway's frame limit known yet), never larger than
   * FIELD_FILE_CHUNK_BYTES. A chunk is one frame, and a frame goes whole: on a slow link a reading
   * queued behind a 1 MiB chunk waited minutes for it (and one that took longer than
   * DISTRIBUTOR_TRANSIT_MAX_S to cross was refused as stale for ever); and a frame past the
   * gateway's limit is not sent at all (its file set aside). The size is fixed in the transfer's
   * record, so it holds for the whole file.
   */
  sizeChunksBy(link: () => number | undefined): void {
    this.linkChunkBytes = link;
  }

  /** bytes(), until a file comes or goes or a transfer ends: the queue asks at every append (the outbox shares its bound) */
  private measured: number | undefined;

  /** room held for files being taken, not yet placed here (see FileRoom) */
  readonly room = new FileRoom();

  /**
   * bytes held by files not yet delivered (measured from the folder after each change this object
   * makes, and at each transfer's end: a producer still holding a moved file writes on into it),
   * and the room reserved for files being taken.
   */
  bytes(): number {
    return this.placedBytes() + this.room.bytes;
  }

  private placedBytes(): number {
    if (this.measured === undefined) {
      let n = 0;
      for (const f of this.placed()) n += statSync(join(this.dir, f)).size;
      this.measured = n;
    }
    return this.measured;
  }

  /** The transfer ids of the files placed here (not notes, progress files, nor files still being taken): what counts. */
  placed(): string[] {
    return readdirSync(this.dir).filter((f) => !f.endsWith('.progress') && !f.endsWith('.tmp') && !f.includes(NOTE));
  }

  /**
   * Takes a file into the outbox (moving it when `move`, else copying) and describes its transfer.
   * Until its queue record is written (`accepted`), a note beside it says what it is: a moved file
   * has left where it was, and a crash before its record would otherwise strand it here, never sent
   * (recoverOutbox takes it up at the next start).
   *
   * `expectedSize`: bytes the file had when room was held for it. A file found larger at any step
   * (its look, its copy, its move's placing: a producer still writing it) is refused with
   * FIELD_FILE_GROWING and left whole where it was (a moved one put back), its room given back:
   * taken as it was, the outbox passed the room held for it and so FIELD_QUEUE_MAX_BYTES. Cut at
   * the size instead, it would be sent as the whole file, and the rest lost once its source went.
   */
  async accept(source: string, options: { filename?: string; contentType?: string; move?: boolean; reservation?: Reservation; expectedSize?: number; sourceKept?: (code: string) => void }): Promise<FileTransferRecord> {
    let size: number;
    try {
      // lstat: a link is not followed, to a secret or anywhere else (the watched folder is writable by others).
      const st = lstatSync(source);
      if (!st.isFile()) throw new Error('not a regular file');
      size = st.size;
    } catch (err) {
      throw new FieldStreamError('FIELD_FILE_UNREADABLE', `${source}: ${(err as Error).message}`);
    }
    if (size > LIMITS.fileTransferMaxBytes) throw new FieldStreamError('FIELD_FILE_UNREADABLE', `${source} is larger than ${LIMITS.fileTransferMaxBytes} bytes`);
    const limit = options.expectedSize ?? Infinity;
    if (size > limit) throw growing(source, limit);
    const transferId = newTransferId();
    const target = join(this.dir, transferId);
    const tmp = `${target}.tmp`;
    const note: AcceptingNote = { filename: options.filename ?? basename(source), contentType: options.contentType ?? 'application/octet-stream', move: options.move === true };
    writeNote(this.dir, transferId, note);
    try {
      if (options.move) {
        await moveIn(this.dir, transferId, source, tmp, note, limit, options.sourceKept);
      } else {
        await copyNoFollow(source, tmp, limit);
      }
    } catch (err) {
      rmSync(tmp, { force: true });
      this.accepted(transferId);
      throw new FieldStreamError(isFieldStreamError(err) ? err.code : 'FIELD_FILE_UNREADABLE', `${source}: ${(err as Error).message}`);
    }
    try {
      return await this.place(transferId, note, tmp, options.reservation, limit);
    } catch (err) {
      // Not placed (it could not be read, hashed or synced): a moved file goes back where it was,
      // under its own name if that is still free, rather than lying here unsent until a start that
      // would fail on it again; a copy is dropped.
      // Never over a file that took its name meanwhile; across file systems (the move was a copy,
      // its source removed) a copy, then a link: a bare link failed there (EXDEV). Its name taken,
      // or the copy failing: left here with its note, taken up at the next start.
      const back = !note.move || (await moveBack(tmp, source, transferId).catch(() => false));
      if (back) {
        rmSync(tmp, { force: true });
        this.accepted(transferId);
      }
      throw new FieldStreamError(isFieldStreamError(err) ? err.code : 'FIELD_FILE_UNREADABLE', `${source}: ${(err as Error).message}${back ? '' : ' (kept in the outbox, taken up again at the next start)'}`);
    }
  }

  /**
   * Syncs the taken file, gives it its transfer id as its name, and describes its transfer (hashed
   * from the outbox's copy). Refused (FIELD_FILE_GROWING) when it is larger than `limit` bytes: a
   * moved file a producer went on writing after its size was read (a move keeps the inode).
   */
  private async place(transferId: string, note: AcceptingNote, tmp: string, reservation?: Reservation, limit = Infinity): Promise<FileTransferRecord> {
    const target = join(this.dir, transferId);
    // The size first, then exactly that many bytes hashed, from one open file: a producer still
    // appending to the file it handed over (a move keeps the inode) gave a record whose size and
    // checksum disagreed, refused by the distributor (DISTRIBUTOR_FILE_CHECKSUM). Its chunks are
    // read within that size too.
    const fh = await open(tmp, 'r');
    let size: number;
    let mtimeMs: number;
    let sha256: string;
    try {
      await fh.sync();
      ({ size, mtimeMs } = await fh.stat());
      if (size > limit) throw growing('the file', limit);
      sha256 = await hashPrefix(fh, size);
    } finally {
      await fh.close();
    }
    renameSync(tmp, target);
    this.measured = undefined;
    reservation?.shrink(size); // counted as placed now, not twice
    syncDirSync(this.dir);
    const chunkBytes = chunkBytesFor(size, Math.min(this.chunkBytes, this.linkChunkBytes() ?? Infinity));
    return {
      transferId,
      filename: note.filename,
      contentType: note.contentType,
      size,
      sha256,
      chunkBytes,
      count: Math.max(1, Math.ceil(size / chunkBytes)),
      timestamp: new Date().toISOString(),
      mtimeMs,
    };
  }

  /** The file's queue record is written: its note goes. */
  accepted(transferId: string): void {
    removeNote(this.dir, transferId);
  }

  /** Files whose taking began and whose queue record may not have been written (a crash between): their notes (a damaged one is logged to `log` and removed). */
  unfinished(log: Logger): Map<string, AcceptingNote> {
    return readNotes(this.dir, log);
  }

  /**
   * Finishes taking a file a crash interrupted, when it had left where it was: returns its transfer,
   * or undefined when there is nothing here to send (not moved yet: it is still where it was; or a
   * copy, whose source is still there and whose producer was never answered).
   *
   * Under a transfer id of its own. Its record may have been written and lost: with
   * FIELD_QUEUE_SYNC at an interval a record is sent from before it is on disk, so its chunks may
   * have reached the distributor, and its progress been saved here, before a power cut. Under the
   * same id, at this start's chunk size (the link measured anew, FIELD_FILE_CHUNK_BYTES changed) and
   * with what the producer wrote since, that progress skipped bytes never sent, and the distributor
   * (its replay window of the transfer, the chunks it holds) took the new chunks for the old ones:
   * the file failed its checksum there, or was stored wrong. The old id's progress goes; its chunks
   * at the distributor stay in .partial/, as any transfer a device gave up on (docs/operations.md).
   * At worst, the file is stored twice.
   * Crash-safe: the new note is written before the file takes its name, the old note goes after.
   */
  async resume(transferId: string, note: AcceptingNote): Promise<FileTransferRecord | undefined> {
    const target = join(this.dir, transferId);
    const from = existsSync(target) ? target : `${target}.tmp`;
    this.measured = undefined;
    if (!existsSync(from)) return undefined;
    // A move across file systems cut between its copy and its source's removal: the source goes now
    // (unless it cannot leave: then it stays, to be taken again, and the copy is dropped).
    if (!note.move || (note.source !== undefined && !finishLeaving(note.source))) {
      rmSync(from, { force: true });
      return undefined;
    }
    const id = newTransferId();
    const tmp = join(this.dir, `${id}.tmp`); // hashed and synced again: the same steps either way
    writeNote(this.dir, id, note);
    renameSync(from, tmp);
    this.dropProgress(transferId);
    this.accepted(transferId); // durably: the folder synced, the rename with it
    return this.place(id, note, tmp);
  }

  /**
   * A file taken whose queue record could not be written (the queue refused it, or failed): it goes
   * back where it was, whole, so its producer (the watched folder's next look) has it again, rather
   * than lying here counted and unsent until a restart. Never over a file that took its name
   * meanwhile: linked (a copy, then a link, across file systems), not renamed. A copy, never moved,
   * is simply dropped. False (and it stays here with its note: queued at the next start) when it
   * cannot be put back.
   */
  async giveBack(transferId: string, source: string, moved: boolean): Promise<boolean> {
    if (moved && !(await moveBack(join(this.dir, transferId), source, transferId))) return false;
    this.remove(transferId);
    this.accepted(transferId);
    return true;
  }

  readChunk(rec: FileTransferRecord, index: number): Buffer {
    const fd = openSync(join(this.dir, rec.transferId), 'r');
    try {
      const start = index * rec.chunkBytes;
      const length = Math.max(0, Math.min(rec.chunkBytes, rec.size - start));
      return readUpToSync(fd, start, length);
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Chunks acknowledged in order so far (0: none saved). Read only as saveProgress writes it:
   * Number() took '1e3' or ' 12 ' (edited by hand, or damaged) for a count, and chunks never sent
   * were skipped. Damaged: FIELD_STATE_INVALID; something other than a file in its place:
   * FILE_NOT_REGULAR (a FIFO is not waited on). Either way the caller sends from the first chunk.
   */
  progress(transferId: string): number {
    const p = join(this.dir, `${transferId}.progress`);
    if (!existsSync(p)) return 0;
    const text = readRegularFileSync(p, 'utf8');
    const n = ProgressSchema.safeParse(text);
    if (!n.success) throw new FieldStreamError('FIELD_STATE_INVALID', `${p}: ${JSON.stringify(text.slice(0, 40))} is not a count of chunks`, { path: p });
    return n.data;
  }

  saveProgress(transferId: string, chunks: number): void {
    const p = join(this.dir, `${transferId}.progress`);
    writeFileSync(`${p}.tmp`, String(chunks));
    try {
      renameSync(`${p}.tmp`, p);
    } catch (err) {
      // Not over a folder in its place (EISDIR): the file aside goes, not left to the next start.
      rmSync(`${p}.tmp`, { force: true });
      throw err;
    }
  }

  /**
   * Removes a transfer's progress. A folder in its place is not the client's (saveProgress cannot
   * rename over it, progress() does not read it): it is left for its operator rather than failing
   * the removal of the file it sits beside (FIELD_FILE_NOT_REMOVED, the file kept until a restart).
   */
  private dropProgress(transferId: string): void {
    const p = join(this.dir, `${transferId}.progress`);
    if (lstatSync(p, { throwIfNoEntry: false })?.isDirectory() !== true) rmSync(p, { force: true });
  }

  has(transferId: string): boolean {
    return existsSync(join(this.dir, transferId));
  }

  /** Removes the file and its progress; returns the bytes it held (undefined: gone already, or its size unreadable). */
  remove(transferId: string): number | undefined {
    this.measured = undefined;
    const path = join(this.dir, transferId);
    let bytes: number | undefined;
    try {
      bytes = statSync(path).size;
    } catch {
      // Gone, or its size unreadable: removed all the same (the callers' policy), its size unsaid.
    }
    rmSync(path, { force: true });
    this.dropProgress(transferId);
    return bytes;
  }

  /**
   * Every chunk of a file is done: it leaves the outbox. Unless it was written to after it was
   * placed: a file moved in keeps its inode, and a producer that still held it open wrote on into
   * the outbox's file. Past the size its record says (`appended`), those bytes were never sent; over
   * its bytes, or cutting it shorter (`changed`: its size or its modification time is not what it
   * was when placed), what it wrote over chunks already sent was sent by none, and what was sent
   * no longer matches its record's checksum. Either way those bytes were deleted with the file,
   * unseen. Such a file is set aside whole instead (see setAside; named ID-appended-NAME or
   * ID-changed-NAME), counted against FIELD_QUEUE_MAX_BYTES there until its operator moves it off;
   * its producer's later writes go on landing in it. Returns where, its size and why, when it was
   * set aside. Its size unreadable (EIO): FIELD_FILE_UNREADABLE, and it is kept, as what it holds
   * is not known. Unchanged, but its removal failing (the disk): FIELD_FILE_NOT_REMOVED, and it is
   * kept (set aside at the next start, as no record names it then).
   */
  finish(rec: FileTransferRecord): { path: string; bytes: number; why: 'appended' | 'changed' } | undefined {
    // Measured again at every transfer's end, whatever comes of it: what producers wrote into files
    // here after they were placed counts against the bound from then on (the file kept here when
    // it cannot be set aside included), not only once a file comes or goes.
    this.measured = undefined;
    let st: { size: number; mtimeMs: number } | undefined;
    try {
      st = statSync(join(this.dir, rec.transferId));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new FieldStreamError('FIELD_FILE_UNREADABLE', `${rec.transferId}: ${(err as Error).message}`);
      // Gone (removed by hand): there is nothing more to keep of it here.
    }
    const why = st === undefined ? undefined : st.size > rec.size ? 'appended' : st.size < rec.size || (rec.mtimeMs !== undefined && st.mtimeMs !== rec.mtimeMs) ? 'changed' : undefined;
    if (st === undefined || why === undefined) {
      try {
        this.remove(rec.transferId);
      } catch (err) {
        throw new FieldStreamError('FIELD_FILE_NOT_REMOVED', `${rec.transferId}: ${(err as Error).message}`);
      }
      return undefined;
    }
    return { path: this.setAside(rec, why), bytes: st.size, why };
  }

  /**
   * A file the gateway refused for good leaves the outbox whole, into FIELD_DATA_DIR/rejected/
   * under its transfer id and name (and `why`, when given): set aside for its operator, never
   * deleted on the DMZ's word. Its queue record is let go on this return: so the move is made
   * durable first, the new name (and the folder's own, made now or after the operator moved it
   * off) and the old one's removal.
   */
  setAside(rec: FileTransferRecord, why?: string): string {
    return this.moveAside(rec.transferId, `${rec.transferId}-${why === undefined ? '' : `${why}-`}${basename(rec.filename)}`);
  }

  /**
   * A file here that no queue record names (see recoverOutbox) is set aside as ID-unqueued: its
   * name and type were in the record only. `taking`: a file being taken (ID.tmp) whose note is
   * gone, set aside as ID-unqueued-taking (it may be partial: a copy cut short).
   */
  setAsideUnqueued(transferId: string, taking = false): string {
    return this.moveAside(transferId, taking ? `${transferId}-unqueued-taking` : `${transferId}-unqueued`, taking ? `${transferId}.tmp` : transferId);
  }

  /** The transfer ids of files being taken (ID.tmp) with no note beside them (see recoverOutbox). */
  takingUnnoted(notes: ReadonlyMap<string, AcceptingNote>): string[] {
    return readdirSync(this.dir)
      .filter((f) => f.endsWith('.tmp') && !f.endsWith('.progress.tmp'))
      .map((f) => f.slice(0, -'.tmp'.length))
      .filter((id) => !id.includes('.') && !notes.has(id));
  }

  private moveAside(transferId: string, name: string, from = transferId): string {
    const dir = join(this.dir, '..', 'rejected');
    makeDirDurablySync(dir, 0o700);
    const target = join(dir, name);
    renameSync(join(this.dir, from), target);
    this.measured = undefined;
    syncDirSync(dir);
    this.dropProgress(transferId);
    syncDirSync(this.dir);
    return target;
  }
}
