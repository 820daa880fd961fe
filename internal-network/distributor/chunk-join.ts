import { createHash, randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { readRegularFile } from '../../shared/durable-fs.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { checkSize } from './file-io.ts';

// The join of a chunked transfer's chunks into the file FileStore (file-store.ts) checks and stores.

/**
 * Joins the chunks in order into one temporary file, hashing as it goes: one chunk in memory at a
 * time. undefined when a chunk is missing (another consumer completed the transfer); `passed` (the
 * join removed) as soon as the chunks hold more than the `declared` size: they can never pass the
 * check, and joined whole first, chunks each no larger than a small file declared, but many (up to
 * the contract's count), made a temporary file as large as all of them.
 *
 * The join is made in the chunks' own folder (linked from there to its name, on the same file
 * system): a distributor killed while joining leaves its copy, as large as the whole file, where
 * the transfer's end removes it, the folder going once the file is stored or set aside with its
 * verdict, rather than in the device's folder until a sweep finds it stale.
 */
export async function joinChunks(partial: string, count: number, declared: number): Promise<{ tmp: string; sha256: string; size: number } | { passed: { index: number; bytes: number } } | undefined> {
  const hash = createHash('sha256');
  let size = 0;
  const tmp = join(partial, `.incoming-${randomUUID()}`);
  let complete = true;
  let passed: { index: number; bytes: number } | undefined;
  let notRegular: string | undefined;
  try {
    const fh = await open(tmp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o640);
    try {
      for (let i = 0; i < count; i++) {
        const chunkPath = join(partial, `${i}.chunk`);
        const chunk = await readRegularFile(chunkPath).catch((err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') return undefined;
          // Put there by hand (a FIFO held the read, and the consumer, for ever): the same at every
          // retry, so final, as a damaged marker: the completing chunk is kept as a dead letter.
          if (isFieldStreamError(err, 'FILE_NOT_REGULAR')) notRegular = chunkPath;
          throw err;
        });
        if (!chunk) {
          complete = false;
          break;
        }
        if (size + chunk.length > declared) {
          passed = { index: i, bytes: size + chunk.length };
          break;
        }
        hash.update(chunk);
        size += chunk.length;
        await fh.writeFile(chunk); // writes on after a short write(2), until all of it is in or the disk errs
      }
      if (complete && !passed) {
        await fh.sync();
        await checkSize(fh, size);
      }
    } finally {
      await fh.close();
    }
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    if (notRegular !== undefined) {
      throw new FieldStreamError('DISTRIBUTOR_FILE_MARKER_DAMAGED', `${notRegular} is not a file (a folder, a FIFO, a device): the transfer cannot be joined. The chunk is kept whole as a dead letter; put the chunk right, then replay it.`, { path: notRegular });
    }
    throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot join the chunks of ${partial} into ${tmp}: ${(err as Error).message}`, { path: partial }, { cause: err });
  }
  if (!complete || passed) {
    await unlink(tmp).catch(() => undefined);
    return passed ? { passed } : undefined;
  }
  return { tmp, sha256: hash.digest('hex'), size };
}
