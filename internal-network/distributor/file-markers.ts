import { randomUUID } from 'node:crypto';
import { link, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';
import { readRegularFile, syncDir } from '../../shared/durable-fs.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { io, writeTemp } from './file-io.ts';
import type { FileTransfer } from '../../shared/contract/payloads.ts';
import { StoredFileInfoSchema, type StoredFileInfo } from './points.ts';

/** The markers of chunked transfers in the file storage: a stored file's record (done), a verdict (failed). */

/** A transfer's done marker: the stored file's record, or undefined when there is none (yet). */
export function readDone(marker: string): Promise<StoredFileInfo | undefined> {
  return readMarker(marker, StoredFileInfoSchema, "a stored file's record");
}

/**
 * A marker file read back and checked (`what` it should be), or undefined when there is none.
 * One that cannot be read is DISTRIBUTOR_WRITE_FAILED (retried: a failing disk may answer later).
 * One read whole that is not what it should be (edited by hand, damaged on disk: a marker is linked
 * into place only once written and fsync'ed), or something other than a file in its place (opened
 * without blocking: a FIFO is not waited on), is DISTRIBUTOR_FILE_MARKER_DAMAGED, final: it reads
 * the same at every retry, and retried, each chunk of the transfer stalled its consumer connection
 * for good. Its chunk is then kept whole as a dead letter, and receipted.
 */
async function readMarker<T>(marker: string, schema: z.ZodType<T>, what: string): Promise<T | undefined> {
  let text: string;
  try {
    text = (await readRegularFile(marker)).toString('utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    // A folder or a FIFO in its place reads the same at every retry (a FIFO held the read for ever):
    // damaged, as a marker edited by hand.
    if (isFieldStreamError(err, 'FILE_NOT_REGULAR')) throw new FieldStreamError('DISTRIBUTOR_FILE_MARKER_DAMAGED', `${marker} is not a file (a folder, a FIFO, a device): not read. The chunk is kept whole as a dead letter; move it away, then replay it.`, { path: marker });
    throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot read ${marker}: ${(err as Error).message}`, { path: marker }, { cause: err });
  }
  try {
    return schema.parse(JSON.parse(text));
  } catch (err) {
    throw new FieldStreamError('DISTRIBUTOR_FILE_MARKER_DAMAGED', `${marker} is not ${what} (damaged, or edited by hand): ${(err as Error).message}. The chunk is kept whole as a dead letter; put the marker right, then replay it.`, { path: marker });
  }
}

/** A transfer failed for good, as its failed marker keeps it: the error its chunks get from then on. */
export const FailedTransferSchema = z.object({
  code: z.enum(['DISTRIBUTOR_FILE_CHECKSUM', 'DISTRIBUTOR_FILE_NAME_TAKEN']),
  message: z.string(),
  details: z.record(z.string(), z.unknown()).optional(),
});
export type FailedTransfer = z.infer<typeof FailedTransferSchema>;

/** A transfer's failed marker, or undefined when it has none. */
export function readFailed(marker: string): Promise<FailedTransfer | undefined> {
  return readMarker(marker, FailedTransferSchema, "a failed transfer's record");
}

/**
 * Writes a transfer's done marker unless it has one already, and returns the record that stands.
 * Consumers (or distributors sharing the storage) completing a transfer at once each store the file;
 * a file without `metadata.timestamp` is recorded at its completing chunk's arrival, so each had a
 * record of its own time, and a marker replacing another left two records of the one file (two
 * rows, two points). The first marker stands, and every completing chunk answers with it.
 */
export function createDoneMarker(marker: string, info: StoredFileInfo): Promise<StoredFileInfo> {
  // Aside as ID.done.json.tmp-*, a name the sweep knows, of this write's own: replicas sharing the
  // storage are each pid 1 in their containers.
  return createMarker(marker, info, readDone, `${marker}.tmp-${randomUUID()}`);
}

/**
 * Writes a failed marker unless the transfer has one already, and returns the one that stands:
 * consumers failing it at once agree on the first verdict.
 */
export function createFailedMarker(marker: string, verdict: FailedTransfer): Promise<FailedTransfer> {
  // Aside as .incoming-*, a name the sweep knows (a kill can leave it).
  return createMarker(marker, verdict, readFailed);
}

/**
 * Writes `content` to `marker` unless it is there already, and returns what stands there. Written
 * aside, fsync'ed and linked to its name (which refuses an existing one), then its folder synced:
 * it is whole whenever it is there, and the first one is never replaced.
 */
async function createMarker<T>(marker: string, content: T, read: (marker: string) => Promise<T | undefined>, aside?: string): Promise<T> {
  const dir = dirname(marker);
  const tmp = await writeTemp(dir, Buffer.from(JSON.stringify(content)), aside);
  try {
    const linked = await link(tmp, marker).then(
      () => true,
      (err: NodeJS.ErrnoException) => {
        if (err.code === 'EEXIST') return false;
        throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot write ${marker}: ${err.message}`, { path: marker }, { cause: err });
      },
    );
    if (!linked) {
      const standing = await read(marker);
      if (standing) return standing;
      throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `${marker} went while it was read; retried.`, { path: marker });
    }
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  await io(dir, () => syncDir(dir));
  return content;
}

/**
 * `done`, the record of the file transfer `t.id` stored, when it is the file `t` declares (its size
 * and SHA-256, which every chunk carries); DISTRIBUTOR_FILE_TRANSFER_REUSED otherwise. The done
 * marker is found by the transfer id alone, and a device may send other content under an id it
 * used before (one restored from a backup, or faulty): answered with the record, each chunk of the
 * new file was receipted as stored, and its device deleted a file the storage never held. Refused
 * for good instead, each chunk is kept whole as a dead letter and receipted. The earlier file's own
 * chunks, delivered again, match and are answered with its record as before.
 */
export function sameFile(deviceId: string, t: Pick<FileTransfer, 'id' | 'size' | 'sha256'>, done: StoredFileInfo): StoredFileInfo {
  if (done.sha256 === t.sha256 && done.size === t.size) return done;
  throw new FieldStreamError(
    'DISTRIBUTOR_FILE_TRANSFER_REUSED',
    `File transfer ${t.id} from ${deviceId} declares ${t.size} bytes with SHA-256 ${t.sha256}, but that transfer id stored other content already (${done.path}: ${done.size} bytes, SHA-256 ${done.sha256}). The device used the id again; this chunk is not stored, and is kept whole as a dead letter.`,
    { transferId: t.id, size: t.size, sha256: t.sha256, storedPath: done.path, storedSize: done.size, storedSha256: done.sha256 },
  );
}
