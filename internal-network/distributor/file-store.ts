import { createHash } from 'node:crypto';
import { rename, rm, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { FilePayload, FileTransfer } from '../../shared/contract/payloads.ts';
import { unsafeFilenameReason } from '../../shared/contract/filename.ts';
import { DeviceIdSchema } from '../../shared/contract/primitives.ts';
import { syncDir } from '../../shared/durable-fs.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { joinChunks } from './chunk-join.ts';
import { ChunksPresent } from './chunks-present.ts';
import { entries, exists, ifGone, io, linkChunk, writeTemp } from './file-io.ts';
import { createDoneMarker, createFailedMarker, readDone, readFailed, sameFile, type FailedTransfer } from './file-markers.ts';
import { placeFile } from './file-placement.ts';
import { OpenTransfers } from './open-transfers.ts';
import { sweepFiles, type FileStoreSweep } from './file-sweep.ts';
import { StorageReadiness } from './storage-readiness.ts';
import { SyncedDirs } from './synced-dirs.ts';
import type { StoredFileInfo } from './points.ts';

export type { FileStoreSweep } from './file-sweep.ts';

/**
 * Files from devices, stored as ROOT/DEVICE_ID/FILENAME.
 *
 * - A device's file name is checked again here (the DMZ is not trusted) and the final path must
 *   resolve inside the device's folder; anything else is refused with DISTRIBUTOR_UNSAFE_FILENAME.
 * - Nothing is ever overwritten: the file is written to a temporary name, fsync'ed, then linked to
 *   its final name, which fails if that name exists. The same content arriving again (a
 *   redelivery) is recognised by its size and SHA-256 and stored once; different content under a
 *   taken name is stored as NAME.SHA8.EXT, then NAME.SHA256.EXT, NAME.SHA256-2.EXT … (candidateNames),
 *   each within the file system's 255-byte limit; when all hold other content, the file is a dead
 *   letter (DISTRIBUTOR_FILE_NAME_TAKEN; file-placement.ts).
 * - What a killed process leaves (temporary `.incoming-*` files, the chunks of a file stored just
 *   before the kill) is removed by `sweep`, which the distributor runs at start and hourly.
 */
export class FileStore {
  private readonly root: string;
  /** folders made so that a power cut leaves them (synced-dirs.ts) */
  private readonly dirs: SyncedDirs;
  /** the chunks of transfers in progress this process knows are there */
  private readonly present = new ChunksPresent();

  /** the /readyz check `files`: the writes' verdict and a look at the folder */
  private readonly readiness: StorageReadiness;

  /** the bound on a device's unfinished transfers */
  private readonly openTransfers: OpenTransfers;

  constructor(root: string, o: { openTransfersMax?: number } = {}) {
    this.root = resolve(root);
    this.openTransfers = new OpenTransfers(o.openTransfersMax);
    this.readiness = new StorageReadiness(this.root);
    this.dirs = new SyncedDirs(this.root);
  }

  /** Whether file storage can take a file, for the distributor's /readyz (StorageReadiness). */
  ready(): Promise<boolean> {
    return this.readiness.ready();
  }

  async store(deviceId: string, payload: FilePayload): Promise<StoredFileInfo> {
    return this.readiness.track(async () => {
      const dir = await this.deviceDir(deviceId, payload.filename);
      const data = Buffer.from(payload.data, 'base64');
      const sha256 = createHash('sha256').update(data).digest('hex');
      const tmp = await writeTemp(dir, data);
      return { result: await placeFile(this.root, dir, tmp, sha256, data.length, payload), wrote: true };
    });
  }

  /**
   * One chunk of a file sent in chunks. Chunks are kept (fsync'ed) under ROOT/.partial/DEVICE/ID/
   * until all have arrived, from whichever distributor received them; the one that completes the set
   * joins them, checks size and SHA-256, and stores the file as `store` does. Returns the stored file
   * once complete, undefined before. A chunk arriving again after completion finds the record (the
   * done marker ROOT/.partial/DEVICE/ID.done.json).
   *
   * Every chunk returned from here is receipted, and its device deletes it: so every step that makes
   * it durable syncs its folder too, and a file whose checksum fails keeps its chunks, moved aside to
   * ROOT/.failed/DEVICE/ID-TIME/ (the last chunk's envelope alone becomes the dead letter).
   *
   * That verdict is final, and kept before the chunks move: ROOT/.failed/DEVICE/ID.json (the failed
   * marker) holds the error. A chunk of the transfer arriving after it (the last one delivered again
   * because the distributor was killed before its dead letter was written, or one the device sent
   * again) fails with that same error and becomes a dead letter too: without the marker it would
   * start a new folder of chunks and be receipted, the verdict lost with its letter.
   *
   * `receivedAt`: the arrival of this chunk's message (epoch ms). A file whose chunks carry no
   * `metadata.timestamp` is recorded at the arrival of the chunk that completed it (the first of
   * chunks completing it at once), kept in the done marker: every chunk answered from the marker
   * later (a resend, a replay), or completing it at the same time, then gives the
   * record the same time, so it is the one row (PostgreSQL's key holds the time) and the one point,
   * not one more at each chunk's own arrival.
   *
   * A chunk that would open a transfer (no folder of chunks for it yet) while its device has
   * as many unfinished as it may is DISTRIBUTOR_FILE_TRANSFERS_OPEN, and nothing of it is written
   * (open-transfers.ts); chunks of transfers open are taken whatever their number. `bounded: false`
   * (the dead-letter replay: a letter is the only copy of chunks receipted) takes it all the same.
   */
  async storeChunk(deviceId: string, payload: FilePayload & { transfer: FileTransfer }, receivedAt?: number, o: { bounded?: boolean } = {}): Promise<StoredFileInfo | undefined> {
    return this.readiness.track(() => this.storeChunkUntracked(deviceId, payload, receivedAt, o.bounded ?? true));
  }

  /** `wrote`: the chunk was written (not answered from the transfer's done marker) */
  private async storeChunkUntracked(deviceId: string, payload: FilePayload & { transfer: FileTransfer }, receivedAt: number | undefined, bounded: boolean): Promise<{ result: StoredFileInfo | undefined; wrote: boolean }> {
    const dir = await this.deviceDir(deviceId, payload.filename);
    const t = payload.transfer;
    const partial = this.partialDir(deviceId, t.id);
    const doneMarker = `${partial}.done.json`;
    const done = await readDone(doneMarker);
    if (done) return { result: sameFile(deviceId, t, done), wrote: false };
    const failed = await readFailed(this.failedMarker(deviceId, t.id));
    if (failed) throw await this.failedAgain(deviceId, t.id, partial, failed);
    // After the markers: a chunk of a transfer finished is answered, never refused. Before anything is
    // written: a refused chunk leaves nothing behind.
    if (bounded && !(await exists(partial))) await this.openTransfers.mayOpen(dirname(partial), deviceId, t.id);
    try {
      return { result: await this.addChunk(dir, deviceId, partial, doneMarker, payload, receivedAt), wrote: true };
    } catch (err) {
      // Another consumer may have completed this transfer meanwhile (the last chunks arrive together,
      // or a chunk again): it removes the folder once the file and its marker are stored, and a step
      // here then fails for want of it. Or failed it (a checksum), moving the folder aside: the
      // failure, ENOENT from a system call, would count as a fault of the storage (ready()) until
      // another file came, the retry answered with the verdict. Either marker answers; without
      // one, the consumer retries.
      if (!isFieldStreamError(err, 'DISTRIBUTOR_WRITE_FAILED')) throw err;
      const record = await readDone(doneMarker).catch(() => undefined);
      if (record) return { result: sameFile(deviceId, t, record), wrote: false };
      const failed = await readFailed(this.failedMarker(deviceId, t.id)).catch(() => undefined);
      if (failed) throw await this.failedAgain(deviceId, t.id, partial, failed);
      throw err;
    }
  }

  /**
   * The record of a chunked transfer's file once stored (its done marker), or undefined; nothing is
   * written. For a dry run of the dead-letter replay. `declared`: the transfer as a chunk declares
   * it; a record of other content is DISTRIBUTOR_FILE_TRANSFER_REUSED, as storeChunk answers it.
   */
  async recordOf(deviceId: string, transferId: string, declared?: Pick<FileTransfer, 'size' | 'sha256'>): Promise<StoredFileInfo | undefined> {
    if (!DeviceIdSchema.safeParse(deviceId).success) throw new FieldStreamError('DISTRIBUTOR_UNSAFE_FILENAME', `Refused device id ${JSON.stringify(deviceId.slice(0, 100))}`);
    const done = await readDone(`${this.partialDir(deviceId, transferId)}.done.json`);
    return done && declared ? sameFile(deviceId, { id: transferId, ...declared }, done) : done;
  }

  private async addChunk(dir: string, deviceId: string, partial: string, doneMarker: string, payload: FilePayload & { transfer: FileTransfer }, receivedAt: number | undefined): Promise<StoredFileInfo | undefined> {
    const t = payload.transfer;
    await this.makeDir(partial);
    const data = Buffer.from(payload.data, 'base64');
    const chunkTmp = await writeTemp(partial, data);
    const chunkPath = join(partial, `${t.index}.chunk`);
    const heldBefore = await io(chunkPath, () => linkChunk(chunkTmp, chunkPath));
    await io(partial, () => syncDir(partial)); // the link is what makes the receipted chunk findable
    // Another consumer may have failed the transfer meanwhile, and moved the folder this chunk went
    // to, or made it again after the move: looked at after the chunk is in, so this chunk is either
    // in the folder set aside or answered with the transfer's verdict (and set aside with it).
    const failed = await readFailed(this.failedMarker(deviceId, t.id));
    if (failed) throw await this.failedAgain(deviceId, t.id, partial, failed);
    // A chunk larger than the whole file: the transfer can never pass its checksum. Failed for good
    // now, as at its join: refused alone (no verdict kept), the chunks after it were receipted into
    // a folder that never completes, and the chunks before it never set aside.
    if (data.length > t.size) {
      throw await this.setAside(deviceId, t.id, partial, (aside) => ({
        code: 'DISTRIBUTOR_FILE_CHECKSUM',
        message: `File ${t.id} (${payload.filename}) from ${deviceId}: chunk ${t.index} is ${data.length} bytes, larger than the whole file the device declared (${t.size} bytes). Not stored; its chunks, as received, are kept in ${aside}.`,
        details: { transferId: t.id, chunksKeptIn: aside },
      }));
    }
    if (heldBefore !== undefined && heldBefore !== data.length) {
      throw await this.setAside(deviceId, t.id, partial, (aside) => ({
        code: 'DISTRIBUTOR_FILE_CHECKSUM',
        message: `File ${t.id} (${payload.filename}) from ${deviceId}: chunk ${t.index} came again with ${data.length} bytes, where the one received had ${heldBefore}. Not stored; its chunks, as received (the first chunk ${t.index}), are kept in ${aside}.`,
        details: { transferId: t.id, chunksKeptIn: aside },
      }));
    }
    // Complete when every index below `count` is there: not when enough files are (chunks of one id
    // that disagree on `count` would be counted, and the join would miss one on every redelivery).
    // Known from what this process saw (chunks-present.ts): a listing of the folder at each arrival
    // was quadratic, some two billion entries read for a file of 65,536 chunks.
    const known = await io(partial, () => this.present.add(partial, t.index, t.count, data.length));
    // Chunks holding more than the whole file: it can never pass its checksum. Refused now, not at
    // the join, which waits for every index: a device that never sends one (chunk 0) had each of up
    // to 65,536 chunks, each as large as the file, receipted and kept for good.
    if (known.held > t.size) {
      throw await this.setAside(deviceId, t.id, partial, (aside) => ({
        code: 'DISTRIBUTOR_FILE_CHECKSUM',
        message: `File ${t.id} (${payload.filename}) from ${deviceId}: its chunks received hold ${known.held} bytes, more than the whole file the device declared (${t.size} bytes). Not stored; its chunks, as received, are kept in ${aside}.`,
        details: { transferId: t.id, chunksKeptIn: aside },
      }));
    }
    if (!known.complete) return undefined;

    const joined = await joinChunks(partial, t.count, t.size);
    if (!joined) {
      // A chunk known present is gone: the transfer completed or set aside elsewhere meanwhile (the
      // markers answer), or its folder moved away by hand: listed again at the retry.
      this.present.forget(partial);
      throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `A chunk of ${t.id} from ${deviceId} left ${partial} while it was joined; retried.`, { path: partial });
    }
    if ('passed' in joined) {
      throw await this.setAside(deviceId, t.id, partial, (aside) => ({
        code: 'DISTRIBUTOR_FILE_CHECKSUM',
        message: `File ${t.id} (${payload.filename}) from ${deviceId}: its chunks 0 to ${joined.passed.index} hold ${joined.passed.bytes} bytes, more than the whole file the device declared (${t.size} bytes). Not stored; its chunks, as received, are kept in ${aside}.`,
        details: { transferId: t.id, chunksKeptIn: aside },
      }));
    }
    const { tmp, sha256, size } = joined;
    if (sha256 !== t.sha256 || size !== t.size) {
      await unlink(tmp).catch(() => undefined);
      throw await this.setAside(deviceId, t.id, partial, (aside) => ({
        code: 'DISTRIBUTOR_FILE_CHECKSUM',
        message: `File ${t.id} (${payload.filename}) from ${deviceId} is ${size} bytes with SHA-256 ${sha256}; the device declared ${t.size} bytes and ${t.sha256}. Not stored; its chunks, as received, are kept in ${aside}.`,
        details: { transferId: t.id, chunksKeptIn: aside },
      }));
    }
    const placed = await placeFile(this.root, dir, tmp, sha256, size, payload).catch(async (err: unknown) => {
      if (!isFieldStreamError(err, 'DISTRIBUTOR_FILE_NAME_TAKEN')) throw err;
      // Receipted chunks, deleted by the device: kept as they came, as for a failed checksum.
      throw await this.setAside(deviceId, t.id, partial, (aside) => ({
        code: 'DISTRIBUTOR_FILE_NAME_TAKEN',
        message: `${err.message} Its chunks, as received, are kept in ${aside}.`,
        details: { ...err.details, transferId: t.id, chunksKeptIn: aside },
      }));
    });
    // Durable before the folder goes: chunks receipted from now on rely on this record alone. Written
    // aside under a name of this write's own (replicas sharing the storage are each pid 1 in their
    // containers), and never replacing a marker there: chunks completing the transfer at once, here
    // or in another replica, all answer with the first record (file-markers.ts createDoneMarker).
    const info = await createDoneMarker(doneMarker, placed.timestamp === undefined && receivedAt !== undefined ? { ...placed, timestamp: receivedAt } : placed);
    await io(partial, () => rm(partial, { recursive: true, force: true }));
    this.present.forget(partial);
    this.openTransfers.forget(dirname(partial));
    return info;
  }

  /** Removes what killed processes leave in the storage and nothing else would ever remove (file-sweep.ts). */
  sweep(o: { staleMs?: number; now?: number; signal?: AbortSignal } = {}): Promise<FileStoreSweep> {
    return sweepFiles(this.root, o);
  }

  /**
   * ROOT/.partial/DEVICE/ID, refused unless it is a folder of its own right inside the device's:
   * the contract refuses ids that are path tricks ("..", a done marker's name), and this holds
   * whatever crossed the DMZ.
   */
  private partialDir(deviceId: string, id: string): string {
    const parent = join(this.root, '.partial', deviceId);
    const target = resolve(parent, id);
    if (dirname(target) !== parent || basename(target) !== id || id.startsWith('.') || id.includes('.done.json')) {
      throw new FieldStreamError('DISTRIBUTOR_UNSAFE_FILENAME', `Refused transfer id ${JSON.stringify(id.slice(0, 100))}: not a folder of its own in ${parent}`);
    }
    return target;
  }

  /**
   * Fails a transfer for good: its failed marker written (durably, and only if there is none yet:
   * consumers failing it at once agree on the first verdict), then its chunks, as they came, moved
   * to ROOT/.failed/DEVICE/ID-TIME/. Returns the error to throw, the marker's. A kill between the
   * two leaves the chunks in their folder with the marker: the next chunk of the transfer (the
   * unacknowledged one, delivered again) moves them (failedAgain).
   */
  private async setAside(deviceId: string, id: string, partial: string, verdict: (aside: string) => FailedTransfer): Promise<FieldStreamError> {
    const failedDir = join(this.root, '.failed', deviceId);
    await this.makeDir(failedDir);
    const marker = this.failedMarker(deviceId, id);
    const recorded = await createFailedMarker(marker, verdict(this.asideName(deviceId, id)));
    return this.failedAgain(deviceId, id, partial, recorded);
  }

  /**
   * The error of a transfer failed for good (its marker), after moving what is left of its chunks
   * folder, if anything, to the folder the marker names (a move a kill cut off) or, when that is
   * taken, to one of its own (chunks that came after the move).
   */
  private async failedAgain(deviceId: string, id: string, partial: string, failed: FailedTransfer): Promise<FieldStreamError> {
    const named = typeof failed.details?.chunksKeptIn === 'string' ? failed.details.chunksKeptIn : undefined;
    let later = '';
    if (await exists(partial)) {
      // Joins of the chunks (a killed joiner's, or a live one's that would fail anyway) are of no use
      // to the verdict: only the chunks, as they came, are kept.
      await io(partial, async () => {
        for await (const e of entries(partial)) if (e.name.startsWith('.incoming-')) await unlink(join(partial, e.name)).catch(ifGone);
      });
      const taken = named === undefined || (await exists(named));
      const aside = taken ? this.asideName(deviceId, id) : named;
      this.present.forget(partial);
      this.openTransfers.forget(dirname(partial));
      // Gone meanwhile (ENOENT): another consumer answering a chunk of the same transfer moved it
      // aside first. Not a fault of the storage (ready()), and the verdict stands as it is.
      const moved = await io(aside, () => rename(partial, aside).then(() => true, ifGone));
      if (moved) {
        await io(dirname(aside), () => syncDir(dirname(aside)));
        await io(dirname(partial), () => syncDir(dirname(partial)));
        if (taken) later = ` Chunks that came after that are kept in ${aside}.`;
      }
    }
    return new FieldStreamError(failed.code, `${failed.message}${later}`, failed.details);
  }

  /** ROOT/.failed/DEVICE/ID.json: the verdict on a transfer failed for good (no folder set aside ends in ".json"). */
  private failedMarker(deviceId: string, id: string): string {
    return join(this.root, '.failed', deviceId, `${id}.json`);
  }

  /** ROOT/.failed/DEVICE/ID-TIME: where a transfer's chunks are set aside. */
  private asideName(deviceId: string, id: string): string {
    return join(this.root, '.failed', deviceId, `${id}-${new Date().toISOString().replace(/[-:]/g, '')}`);
  }

  /** mkdir -p whose folders survive a power cut (SyncedDirs.make). */
  private makeDir(dir: string): Promise<void> {
    return this.dirs.make(dir);
  }

  private async deviceDir(deviceId: string, filename: string): Promise<string> {
    const reason = unsafeFilenameReason(filename);
    if (reason || !DeviceIdSchema.safeParse(deviceId).success) {
      throw new FieldStreamError('DISTRIBUTOR_UNSAFE_FILENAME', `Refused file name ${JSON.stringify(filename.slice(0, 100))}: ${reason ?? 'bad device id'}`);
    }
    const dir = join(this.root, deviceId);
    await this.makeDir(dir);
    return dir;
  }
}
