import type { EnvelopeOf } from '../../shared/contract/envelope.ts';
import { isFieldStreamError, type FieldStreamError } from '../../shared/errors.ts';
import type { FileStore } from './file-store.ts';
import { filePoint, transferKey, type StoredFileInfo, type StoredPoint } from './points.ts';

/** A file message to store, as the distributor took it. */
export interface FileToStore {
  deviceId: string;
  message: EnvelopeOf<'file'>['messages'][number];
  /** its arrival (epoch ms), as the distributor took it */
  receivedAt: number;
  /** its message key (a whole file's record) */
  key: string | undefined;
}

/**
 * Stores each file in order and returns the records of those stored, to be written after them: a
 * record never names a file that is not there. A chunk that leaves its transfer incomplete is stored
 * and has no record: the chunk that completes it writes it. Used by the message handler and by the
 * dead-letter replay alike.
 *
 * `refused`: the first file the storage refused for good (`final` says which failures are: its
 * checksum, its name; the rest throw, retried whole, what was stored answered again as stored).
 * Each other file is stored still: the gateway joins a device's files and chunks into one envelope,
 * which goes whole to the dead letters and is receipted, so a file after the refused one was deleted
 * by its device unstored (a chunk of a transfer that then never completed).
 *
 * `openTransfers`: the bound on a device's unfinished transfers applies (open-transfers.ts; the
 * dead-letter replay gives none: a letter is the only copy of what it holds). A chunk it refuses
 * is in `deferred` (its index in `files`, with the refusal) when `deferrable` says its device is told
 * by receipts what is stored, and keeps it until then: stored nowhere, it must get none. Any other
 * (signed alone, or unsigned: its device let it go at the gateway's ack) is `refused`, kept whole as
 * a dead letter with its envelope.
 */
export async function storeFiles(
  store: FileStore,
  files: readonly FileToStore[],
  final: (err: unknown) => err is FieldStreamError,
  openTransfers?: { deferrable: (index: number) => boolean },
): Promise<{ points: StoredPoint[]; refused?: FieldStreamError; deferred?: Array<{ index: number; error: FieldStreamError }> }> {
  const points: StoredPoint[] = [];
  let refused: FieldStreamError | undefined;
  const deferred: Array<{ index: number; error: FieldStreamError }> = [];
  for (const [index, f] of files.entries()) {
    const { transfer } = f.message.payload;
    let stored: StoredFileInfo | undefined;
    try {
      stored = transfer
        ? await store.storeChunk(f.deviceId, { ...f.message.payload, transfer }, f.receivedAt, { bounded: openTransfers !== undefined })
        : await store.store(f.deviceId, f.message.payload);
    } catch (err) {
      if (isFieldStreamError(err, 'DISTRIBUTOR_FILE_TRANSFERS_OPEN') && openTransfers?.deferrable(index)) {
        deferred.push({ index, error: err });
        continue;
      }
      if (!final(err)) throw err;
      refused ??= err;
      continue;
    }
    // A chunked file's record is written again by any chunk that comes after the file was whole
    // (a resend after a lost receipt: its record may not have been written before a crash; or a
    // replay once the transfer's epoch left the replay windows): keyed by the transfer, so every
    // copy is the one record, not one per chunk.
    // Its own arrival, as every other kind's point (points.ts): a message of a later frame the
    // gateway joined into the envelope carries one, and at the envelope's time two records of a
    // device without timestamps were one point in InfluxDB, the second overwriting the first.
    // A chunked file's time is its record's (storeChunk keeps the completing chunk's arrival there
    // when the device gave none), so a later chunk does not make a second row at its own arrival.
    if (stored) points.push(filePoint(f.deviceId, f.receivedAt, stored, transfer ? transferKey(transfer.id) : f.key));
  }
  return { points, ...(refused ? { refused } : {}), ...(deferred.length > 0 ? { deferred } : {}) };
}
