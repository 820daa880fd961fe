import { randomUUID } from 'node:crypto';
import { link, readFile, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { replaceFileDurablySync, syncDir } from '../../shared/durable-fs.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { io } from './file-io.ts';
import { StoredFileInfoSchema, type StoredFileInfo } from './points.ts';

/** The markers of chunked transfers in the file storage: a stored file's record (done), a verdict (failed). */

/** A transfer's done marker: the stored file's record, or undefined when there is none (yet). */
export function readDone(marker: string): Promise<StoredFileInfo | undefined> {
  return readMarker(marker, StoredFileInfoSchema, "a stored file's record");
}

/** A marker file read back and checked (`what` it should be), or undefined when there is none. */
async function readMarker<T>(marker: string, schema: z.ZodType<T>, what: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(marker, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot read ${marker}: ${(err as Error).message}`, { path: marker }, { cause: err });
  }
  try {
    return schema.parse(JSON.parse(text));
  } catch (err) {
    throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `${marker} is not ${what}: ${(err as Error).message}`, { path: marker });
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
 * Writes a failed marker unless the transfer has one already, and returns the one that stands.
 * Written aside, fsync'ed and linked to its name (which refuses an existing one), then its folder
 * synced: it is whole whenever it is there, and the first verdict is never replaced.
 */
export async function createFailedMarker(marker: string, verdict: FailedTransfer): Promise<FailedTransfer> {
  // A temporary name the sweep knows (a kill can leave it): .incoming-*.
  const tmp = join(dirname(marker), `.incoming-${randomUUID()}`);
  try {
    await io(tmp, async () => replaceFileDurablySync(tmp, JSON.stringify(verdict), 0o640));
    const linked = await link(tmp, marker).then(
      () => true,
      (err: NodeJS.ErrnoException) => {
        if (err.code === 'EEXIST') return false;
        throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot write ${marker}: ${err.message}`, { path: marker }, { cause: err });
      },
    );
    if (!linked) {
      const standing = await readFailed(marker);
      if (standing) return standing;
      throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `${marker} went while it was read; retried.`, { path: marker });
    }
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  await io(dirname(marker), () => syncDir(dirname(marker)));
  return verdict;
}
