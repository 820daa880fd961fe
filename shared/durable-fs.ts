import { closeSync, constants, fchmodSync, fstatSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { FieldStreamError } from './errors.ts';

/**
 * Writes that must survive a power cut, not only a killed process: a file's data reaches the disk
 * with fsync, but a new, renamed or removed directory entry only with an fsync of its directory
 * (on ext4 and XFS; POSIX leaves it to the file system, fsync(2)).
 */

/** fsync of a directory: its entries (files created, renamed or removed in it) are on disk. */
export function syncDirSync(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** syncDirSync without blocking the event loop. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Makes `dir` (and its missing parents) so that it outlives a power cut: a folder made is an entry of
 * its parent, on disk only once that parent is synced (as a file's name, syncDirSync). Without it a
 * file synced in a folder just made may be lost with the folder, though its fsync returned. Each
 * parent of a folder made now is synced, and the parent of `dir` always: a process killed between
 * its mkdir and that sync leaves a folder the next start finds and would otherwise trust.
 */
export function makeDirDurablySync(dir: string, mode?: number): void {
  const made = makeDirsSync(dir, mode);
  if (made === undefined) {
    // Found, not made: its parent may be one this process may not read (a home folder of mode 711),
    // and a folder found there was made by a process that could.
    try {
      syncDirSync(dirname(resolve(dir)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EACCES') throw err;
    }
    return;
  }
  for (let d = resolve(dir); ; d = dirname(d)) {
    syncDirSync(dirname(d));
    if (d === resolve(made) || dirname(d) === d) break;
  }
}

/**
 * `mkdir -p`, a folder at a time: the first folder it made (the one nearest the root), or undefined
 * when `dir` was there. Not mkdirSync's recursive mode: where mkdir(2) refuses the folder, that looks
 * the path up again and throws what the look-up says, so a read-only disk (EROFS) is reported as
 * ENOENT, "no such file or directory", which sends the reader after the wrong fault; and where
 * mkdir(2) says ENOENT under a folder that exists (/proc) it tries again for ever.
 */
function makeDirsSync(dir: string, mode?: number): string | undefined {
  const missing: string[] = [];
  for (let d = resolve(dir); statSync(d, { throwIfNoEntry: false }) === undefined; d = dirname(d)) {
    missing.push(d);
    if (dirname(d) === d) break;
  }
  for (const d of missing.reverse()) {
    try {
      mkdirSync(d, mode);
    } catch (err) {
      // Made meanwhile by another process: as good as made here.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !statSync(d).isDirectory()) throw err;
    }
  }
  // `dir` that is there but no folder: what mkdirSync's recursive mode throws for it too.
  if (missing.length === 0 && !statSync(dir).isDirectory()) mkdirSync(dir, mode);
  return missing[0];
}

/**
 * Writes all of `bytes` at the file's position (its end with O_APPEND): write(2) may take fewer
 * bytes than asked and report no error (a disk filling up, a file size limit), so the rest is
 * written again, until the disk answers with the error itself. `what` names the file in that error.
 */
export function writeWholeSync(fd: number, bytes: Buffer, what: string): void {
  for (let at = 0; at < bytes.length; ) {
    const n = writeSync(fd, bytes, at, bytes.length - at);
    if (n <= 0) throw new Error(`the disk took none of the bytes of ${what}`);
    at += n;
  }
}

/**
 * The whole of the state file at `path` (one FieldStream wrote), as readFileSync reads it, and as
 * it throws (ENOENT when there is none). Only a regular file is read: opened without blocking and
 * looked at first, so a FIFO in its place does not hold the open and the read for ever, nor is a
 * link to a device (/dev/zero) read until the memory runs out: FILE_NOT_REGULAR, naming the path.
 */
export function readRegularFileSync(path: string): Buffer;
export function readRegularFileSync(path: string, encoding: 'utf8'): string;
export function readRegularFileSync(path: string, encoding?: 'utf8'): Buffer | string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    if (!fstatSync(fd).isFile()) {
      throw new FieldStreamError('FILE_NOT_REGULAR', `${path} is not a regular file (a folder, a FIFO, a device, or a link to one): not read. Move it away.`, { path });
    }
    return encoding === undefined ? readFileSync(fd) : readFileSync(fd, encoding);
  } finally {
    closeSync(fd);
  }
}

/**
 * readRegularFileSync without blocking the event loop: the file at `path` read whole, as readFile
 * reads it and throws (ENOENT), only if it is a regular file. Read with readFile, a FIFO in its place
 * held the open, one of libuv's few threads with it, and the caller (a consumer of the broker) for ever.
 */
export async function readRegularFile(path: string): Promise<Buffer> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    if (!(await fh.stat()).isFile()) {
      throw new FieldStreamError('FILE_NOT_REGULAR', `${path} is not a regular file (a folder, a FIFO, a device, or a link to one): not read. Move it away.`, { path });
    }
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

/**
 * Up to `n` bytes of the file open as `fd` from `pos` (fewer only where the file ends): read(2) may
 * return fewer bytes than asked before the end, so it is read on until it has them or reads none.
 */
export function readUpToSync(fd: number, pos: number, n: number): Buffer {
  const buf = Buffer.allocUnsafe(n);
  let got = 0;
  while (got < n) {
    const k = readSync(fd, buf, got, n - got, pos + got);
    if (k === 0) break;
    got += k;
  }
  return buf.subarray(0, got);
}

/**
 * Replaces `path` with `data` (or its pieces, one after the other): written aside, synced, renamed
 * over it, and the directory synced. After a crash or a power cut at any instant the file holds the old content or the new, whole. A write
 * the disk takes only part of (write(2) may, without an error, when the disk fills) is written on;
 * if the disk refuses the rest, the file aside is removed and `path` keeps its old content.
 * The file gets exactly `mode`, set before its first byte: neither the umask nor a file aside left
 * by a killed writer (whose mode open(2) would keep) decides who may read a private key.
 */
export function replaceFileDurablySync(path: string, data: string | Buffer | Iterable<string>, mode = 0o600): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, mode & 0o600);
  try {
    fchmodSync(fd, mode);
    // An iterable is written piece by piece: a file larger than one string may be (V8's longest is
    // 512 MiB) is never held whole.
    const pieces = typeof data === 'string' || Buffer.isBuffer(data) ? [data] : data;
    for (const piece of pieces) writeWholeSync(fd, typeof piece === 'string' ? Buffer.from(piece, 'utf8') : piece, tmp);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, path);
  syncDirSync(dirname(path));
}

/**
 * Removes what a replaceFileDurablySync of `path` killed before its rename left aside
 * (`PATH.tmp-PID`): never read, and the next rewrite, of another process id, is written beside it,
 * so each such kill left up to the file's size on the disk for good. Called where a start first
 * reads `path`. The aside of another process still running is left to it (`fieldstream-field
 * doctor` opens some of the client's files while the client runs); this process's own is not being
 * written now. Not fatal if it fails: `path` itself is read, and its failures reported, as before.
 * Returns the paths it removed.
 */
export function removeLeftAsideSync(path: string): string[] {
  const prefix = `${basename(path)}.tmp-`;
  const removed: string[] = [];
  try {
    for (const name of readdirSync(dirname(path))) {
      const pid = name.startsWith(prefix) ? name.slice(prefix.length) : '';
      if (!/^[1-9]\d*$/.test(pid) || anotherRunning(Number(pid))) continue;
      rmSync(join(dirname(path), name), { force: true });
      removed.push(join(dirname(path), name));
    }
  } catch {
    // A folder not made yet (the first start), or one that cannot be listed: nothing to remove here.
  }
  return removed;
}

/** Whether a process of this id runs now (EPERM: it runs, as another user). */
export function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether `pid` is a process running now other than this one. */
function anotherRunning(pid: number): boolean {
  return pid !== process.pid && processRuns(pid);
}

/**
 * replaceFileDurablySync without holding the event loop: the pieces are written as they come (an
 * async iterable may compute each when asked), each write awaited. `tmp` names the file aside: a
 * name of the writer's own where several processes, one pid each in its container, share a folder.
 */
export async function replaceFileDurably(path: string, pieces: Iterable<string | Buffer> | AsyncIterable<string | Buffer>, tmp: string, mode = 0o600): Promise<void> {
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, mode & 0o600);
  try {
    await fh.chmod(mode);
    for await (const piece of pieces) {
      const bytes = typeof piece === 'string' ? Buffer.from(piece, 'utf8') : piece;
      // A write may take fewer bytes than asked without an error (writeWholeSync): written on.
      for (let at = 0; at < bytes.length; ) {
        const { bytesWritten } = await fh.write(bytes, at, bytes.length - at);
        if (bytesWritten <= 0) throw new Error(`the disk took none of the bytes of ${tmp}`);
        at += bytesWritten;
      }
    }
    await fh.sync();
  } catch (err) {
    await fh.close();
    rmSync(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await rename(tmp, path);
  await syncDir(dirname(path));
}

/** Removes `path` (if there) for good: the removal itself survives a power cut. */
export function removeFileDurablySync(path: string): void {
  rmSync(path, { force: true });
  syncDirSync(dirname(path));
}
