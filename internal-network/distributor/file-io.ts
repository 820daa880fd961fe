import { createHash, randomUUID } from 'node:crypto';
import { constants, type Dirent } from 'node:fs';
import { link, lstat, open, opendir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { FieldStreamError } from '../../shared/errors.ts';

/** File-system steps of the file storage, each failure a coded error (DISTRIBUTOR_WRITE_FAILED: retried). */

/**
 * One file-system step. Its failure (a full disk, a folder removed meanwhile, EIO) is
 * DISTRIBUTOR_WRITE_FAILED naming the path: transient, so the consumer retries the message rather
 * than leave it unacknowledged without a word.
 */
export async function io<T>(path: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (err instanceof FieldStreamError) throw err;
    throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `File storage failed at ${path}: ${(err as Error).message}`, { path }, { cause: err });
  }
}

/**
 * Defence in depth, after the fsync: the file holds exactly `expected` bytes. The SHA-256 and size
 * recorded (and receipted) are those of the data given, never read back from the file: a file cut
 * short by a write that reported success would otherwise be stored under them.
 */
export async function checkSize(fh: FileHandle, expected: number): Promise<void> {
  const { size } = await fh.stat();
  if (size !== expected) throw new Error(`the file holds ${size} bytes of ${expected} after its fsync (a short write)`);
}

/** For a `.catch`: a path that went meanwhile is undefined; any other failure is thrown on. */
export function ifGone(err: NodeJS.ErrnoException): undefined {
  if (err.code === 'ENOENT') return undefined;
  throw err;
}

/** A folder's entries one at a time (a device's folder may hold very many files); none when it is gone. */
export async function* entries(dir: string): AsyncGenerator<Dirent> {
  const d = await opendir(dir).catch(ifGone);
  if (d) yield* d;
}

/** Whether `path` exists; any failure to tell but its absence is DISTRIBUTOR_WRITE_FAILED (retried). */
export async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot look at ${path}: ${(err as Error).message}`, { path }, { cause: err });
  }
}

/**
 * Whether the file at `path` holds content of `size` bytes with SHA-256 `sha256`; undefined when
 * there is none. Sizes first: a file of another size (a device's large file under the name of a
 * small one) is never read, where hashing each name tried read all of it.
 */
export async function holds(path: string, sha256: string, size: number): Promise<boolean | undefined> {
  let found: number;
  try {
    const s = await stat(path);
    // Something other than a file under the name (a FIFO, a folder, a device) holds no content: the
    // name is taken. A FIFO of size 0, read for an empty file's hash, waited for ever.
    if (!s.isFile()) return false;
    found = s.size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot look at ${path}: ${(err as Error).message}`, { path }, { cause: err });
  }
  if (found !== size) return false;
  const hash = await hashOf(path);
  return hash === undefined ? undefined : hash === sha256;
}

/** What hashOf gives for something other than a file: equal to no SHA-256. */
const NOT_A_FILE = 'not a regular file';

/** SHA-256 of a file, read in a stream (files can be large); undefined when it does not exist. */
async function hashOf(path: string): Promise<string | undefined> {
  const h = createHash('sha256');
  try {
    // Never waiting on a FIFO put in its place since the look above.
    const fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      if (!(await fh.stat()).isFile()) return NOT_A_FILE;
      for await (const chunk of fh.createReadStream({ highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
    } finally {
      await fh.close().catch(() => undefined);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot read ${path}: ${(err as Error).message}`, { path }, { cause: err });
  }
  return h.digest('hex');
}

/**
 * Writes data to a new temporary file in `dir` (named `tmp`, a name the sweep knows: file-sweep.ts),
 * fsync'ed, and checks that it holds every byte. One write(2) may take only part of what it is given
 * and report no error (a disk filling up, the file size limit): the rest is written on until the
 * disk answers with the error itself. A short file that got this far anyway is refused too: its
 * name would be receipted with the size and SHA-256 of data it does not hold, and the device would
 * delete the only whole copy.
 * Every failure is DISTRIBUTOR_WRITE_FAILED: transient, the message is retried, never receipted.
 */
export async function writeTemp(dir: string, data: Buffer, tmp = join(dir, `.incoming-${randomUUID()}`)): Promise<string> {
  try {
    const fh = await open(tmp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o640);
    try {
      for (let at = 0; at < data.length; ) {
        const { bytesWritten } = await fh.write(data, at, data.length - at, at);
        if (bytesWritten <= 0) throw new Error(`the disk took none of the ${data.length - at} bytes left`);
        at += bytesWritten;
      }
      await fh.sync();
      await checkSize(fh, data.length);
    } finally {
      await fh.close();
    }
    return tmp;
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot write in ${dir}: ${(err as Error).message}`, { path: dir }, { cause: err });
  }
}

/**
 * Gives a chunk written to `tmp` its name `chunkPath`, unless one is there: returns undefined when
 * linked, or the length of the chunk found there, which stays. Never renamed over it: the one
 * received first stays. A copy of it (a redelivery) is the same length; one of another length is
 * the device contradicting a chunk receipted (deleted on its side), and put in its place it made
 * the bytes the store counts (each index once, chunks-present.ts) no longer the bytes held: a device
 * could send each chunk small, then large. `tmp` is gone either way.
 */
export async function linkChunk(tmp: string, chunkPath: string): Promise<number | undefined> {
  try {
    return await link(tmp, chunkPath).then(
      () => undefined,
      async (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
        const there = await lstat(chunkPath);
        if (!there.isFile()) throw new Error(`${chunkPath} is not a file`); // a storage gone wrong: retried
        return there.size;
      },
    );
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}
