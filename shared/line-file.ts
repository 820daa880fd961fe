import { closeSync, constants, existsSync, fstatSync, fsyncSync, ftruncateSync, openSync, readSync } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { makeDirDurablySync, syncDir, syncDirSync, writeWholeSync } from './durable-fs.ts';
import { FieldStreamError } from './errors.ts';

/**
 * Files of lines (JSON Lines) that hold what was acknowledged: the distributor's dead letters and
 * local store, the field client's refused messages. Each append is written whole and synced before
 * it resolves, and:
 *
 * - starts on a line of its own. A crash or a failed write in the middle of an append leaves a torn
 *   last line without its newline; the next append, glued to it, would make one line no parser
 *   reads, and lose what was acknowledged after the crash. The torn line is lost either way (it was
 *   never acknowledged), the next one is not. The file's last byte is looked at before every append,
 *   not remembered from the last one: other processes may append to the same file (the compose
 *   files mount one local store into the distributor, the console and each --scale replica), and
 *   one of them cut short (a full disk, killed) leaves its torn line after ours.
 * - is written whole: a write may take fewer bytes than asked and report no error (a full disk, a
 *   file size limit; write(2)), so the rest is written again.
 * - makes a new file's name durable: a new directory entry survives a power cut only once its
 *   directory is synced (durable-fs.ts). Once per file and process, as an earlier process may have
 *   crashed before its sync.
 * - goes to the file that has the name: one removed or renamed since the last append (an operator
 *   moving letters away) is let go, and the name made again; so is its folder, if that went too.
 */
/** The file a LineFile holds open, and its identity when opened. */
interface Held {
  path: string;
  fh: FileHandle;
  ino: number;
  dev: number;
}

export class LineFile {
  /** the appends so far, in order: one at a time, as Node writes a large line in pieces that concurrent appends would interleave */
  private chain: Promise<void> = Promise.resolve();
  private handle: Held | undefined;
  private readonly named = new Set<string>();

  constructor(private readonly mode: number) {}

  /**
   * Appends `lines` (each ending in "\n") to the file at `path`, resolving once they are synced.
   * Given as a function, they are made only when their turn comes, after the appends before them:
   * the appends waiting meanwhile do not each hold their text (a dead letter's is up to 21 MiB).
   */
  append(path: string, lines: string | (() => string)): Promise<void> {
    const done = this.chain.then(() => this.write(path, typeof lines === 'string' ? lines : lines()));
    this.chain = done.catch(() => undefined);
    return done;
  }

  /**
   * Appends to the file that has the name, checked before the append and after its sync: one
   * removed or renamed away (an operator clearing the day's dead letters) while held open would
   * take the lines with it unseen, and every later append too. Lines that went to a file that lost
   * its name meanwhile are appended again to the name: a line twice is the same letter or points
   * twice, which the replay and the stores take once.
   */
  private async write(path: string, lines: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      if (this.handle?.path === path && !(await this.holdsName(this.handle))) await this.letGo(path);
      await this.appendOnce(path, lines);
      if (await this.holdsName(this.handle as Held)) return;
      await this.letGo(path);
      if (attempt >= 3) throw new Error(`${path} lost its name at every append (removed or renamed ${attempt} times while written)`);
    }
  }

  private async appendOnce(path: string, lines: string): Promise<void> {
    if (this.handle?.path !== path) {
      await this.close();
      const fh = await open(path, 'a+', this.mode).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
        // The folder itself went (moved away to make room in a full dead-letter folder): made again,
        // as at the start, rather than every append refused until a restart (letters with data then
        // left unacknowledged, their consumers stalled). The new file's name is synced below.
        makeDirDurablySync(dirname(path));
        this.named.delete(path);
        return open(path, 'a+', this.mode);
      });
      const { ino, dev } = await fh.stat();
      this.handle = { path, fh, ino, dev };
    }
    const h = this.handle;
    const text = Buffer.from((await endsWithNewline(h.fh)) ? lines : `\n${lines}`, 'utf8');
    for (let at = 0; at < text.length; ) {
      const { bytesWritten } = await h.fh.write(text, at, text.length - at);
      if (bytesWritten <= 0) throw new Error(`the disk took none of the bytes of ${path}`);
      at += bytesWritten;
    }
    await h.fh.datasync();
    if (!this.named.has(path)) {
      await syncDir(dirname(path));
      this.named.add(path);
    }
  }

  /** Whether the held file is still the one named by its path; an error other than its absence is thrown. */
  private async holdsName(h: Held): Promise<boolean> {
    const named = await stat(h.path).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    return named !== undefined && named.ino === h.ino && named.dev === h.dev;
  }

  /** Closes a file that lost its name; the next append makes the name again (and syncs its folder). */
  private async letGo(path: string): Promise<void> {
    await this.close();
    this.named.delete(path);
  }

  private async close(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    await h?.fh.close();
  }

  /** Waits for every append made so far, then closes the file. */
  async end(): Promise<void> {
    await this.chain;
    await this.close();
  }
}

/**
 * LineFile's append in one synchronous call: opens, appends `lines` whole on a line of their own,
 * syncs (the file and, once per process and whenever this append makes the file, its name) and
 * closes. A file made again after its first append here (the operator moved the field client's
 * rejected.jsonl off the device) needs its name synced too: its lines are let go on this return.
 *
 * Throws when the lines are not appended: with the write's or the sync's own error when none of
 * them is left (all or none); with FILE_APPEND_UNCERTAIN when cutting them back off failed too, and
 * some or all of them may be in the file, read back at the next start: the caller must then not
 * tell anyone they were refused. Returns the close's error when only the close failed after the
 * sync (NFS reports a write-back error at close too): the lines are on the disk then, and read back
 * at the next start, so the caller must count them as appended. Told otherwise in either case, a
 * caller refused what it would act on after a restart (the command API: a command refused, retried
 * by its operator, and dispatched twice).
 */
export function appendLinesSync(path: string, lines: string, mode: number, named: Set<string>): Error | undefined {
  if (!existsSync(path)) named.delete(path);
  const fd = openSync(path, 'a+', mode);
  try {
    const size = fstatSync(fd).size;
    const last = Buffer.alloc(1);
    const whole = size === 0 || (readSync(fd, last, 0, 1, size - 1) === 1 && last[0] === 0x0a);
    const text = Buffer.from(whole ? lines : `\n${lines}`, 'utf8');
    try {
      writeWholeSync(fd, text, path);
      fsyncSync(fd);
      // The name too, before the caller is told: a failure here as well takes the lines back (the
      // caller, told they were not appended, must not find them at its next start).
      if (!named.has(path)) {
        syncDirSync(dirname(path));
        named.add(path);
      }
    } catch (err) {
      // All or none: the lines written before the disk refused the rest would otherwise be read
      // back as appended, though the caller was told they were not. The cut is synced: a failed
      // fsync may have put some of them on the disk, and a power cut must not bring them back.
      try {
        ftruncateSync(fd, size);
        fsyncSync(fd);
      } catch (cutErr) {
        // What was written may stay, whole lines read back at the next start (a torn one is skipped,
        // and the next append starts on a line of its own). Told only "not appended", a caller
        // refused what it would act on after a restart: it is told so, to keep them as appended.
        throw new FieldStreamError(
          'FILE_APPEND_UNCERTAIN',
          `Appending to ${path} failed (${(err as Error).message}), and cutting it back failed too (${(cutErr as Error).message}): some or all of the lines may be in the file.`,
          { path },
          { cause: err },
        );
      }
      throw err;
    }
  } catch (err) {
    try {
      closeSync(fd);
    } catch {
      // the append's own failure is the one to tell
    }
    throw err;
  }
  try {
    closeSync(fd);
  } catch (err) {
    return err as Error;
  }
  return undefined;
}

/**
 * The lines of the file at `path`, read in chunks of `chunkBytes`: never the whole file at once, so
 * a file larger than the longest string (512 MiB in V8) or than the memory at hand is read too. A
 * line longer than `maxLineBytes` is not held: it yields `undefined` (damaged, no line of ours). The
 * last line is yielded even without its newline (a torn write; the caller's parser refuses it).
 * Anything but a regular file in its place is FILE_NOT_REGULAR (see notRegular).
 */
export function* readLinesSync(path: string, maxLineBytes: number, chunkBytes = 1024 * 1024): Generator<string | undefined> {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    if (!fstatSync(fd).isFile()) throw notRegular(path);
    const chunk = Buffer.allocUnsafe(chunkBytes);
    const lines = new LineSplitter(maxLineBytes);
    for (;;) {
      const n = readSync(fd, chunk, 0, chunkBytes, null);
      if (n === 0) break;
      yield* lines.push(chunk.subarray(0, n));
    }
    yield* lines.end();
  } finally {
    closeSync(fd);
  }
}

/**
 * readLinesSync without holding the event loop: for a service that reads a file as it serves (the
 * console's history from the local store). A line longer than `maxLineBytes` yields `undefined`
 * and is not held; read with a line reader that holds a line whole (node:readline), a damaged file
 * without line breaks took all the memory there was.
 */
export async function* readLines(path: string, maxLineBytes: number, chunkBytes = 1024 * 1024): AsyncGenerator<string | undefined> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    if (!(await fh.stat()).isFile()) throw notRegular(path);
    const chunk = Buffer.allocUnsafe(chunkBytes);
    const lines = new LineSplitter(maxLineBytes);
    for (;;) {
      const { bytesRead } = await fh.read(chunk, 0, chunkBytes, null);
      if (bytesRead === 0) break;
      yield* lines.push(chunk.subarray(0, bytesRead));
    }
    yield* lines.end();
  } finally {
    await fh.close();
  }
}

/**
 * The files of lines are all regular files FieldStream writes. Something else in the place of one
 * is refused: a FIFO held the open, then the read, for ever (opened here without blocking, and
 * looked at before any read); a link to a device (/dev/zero) was read for ever; a folder failed
 * with a bare EISDIR that named no path.
 */
function notRegular(path: string): FieldStreamError {
  return new FieldStreamError('FILE_NOT_REGULAR', `${path} is not a regular file (a folder, a FIFO, a device, or a link to one): not read. Move it away.`, { path });
}

/** Cuts a file read in chunks into its lines, holding none longer than `maxLineBytes` (readLinesSync). */
class LineSplitter {
  /** the line begun in earlier chunks (copies: the chunk is read into again) */
  private parts: Buffer[] = [];
  private held = 0;
  private tooLong = false;

  constructor(private readonly maxLineBytes: number) {}

  /** The lines `data` ends, `undefined` for one too long; taken before `data` is read into again. */
  *push(data: Buffer): Generator<string | undefined> {
    for (let at = 0; ; ) {
      const nl = data.indexOf(0x0a, at);
      const end = nl === -1 ? data.length : nl;
      if (!this.tooLong && this.held + (end - at) > this.maxLineBytes) {
        this.tooLong = true;
        this.parts = [];
        this.held = 0;
      }
      if (nl === -1) {
        // The line goes on in the next chunk: kept, unless too long already.
        if (!this.tooLong && end > at) {
          this.parts.push(Buffer.from(data.subarray(at, end)));
          this.held += end - at;
        }
        return;
      }
      if (this.tooLong) yield undefined;
      else if (this.parts.length === 0) yield data.toString('utf8', at, end);
      else yield Buffer.concat([...this.parts, data.subarray(at, end)]).toString('utf8');
      this.parts = [];
      this.held = 0;
      this.tooLong = false;
      at = nl + 1;
    }
  }

  /** The last line, when the file does not end with a newline. */
  *end(): Generator<string | undefined> {
    if (this.tooLong) yield undefined;
    else if (this.held > 0) yield Buffer.concat(this.parts).toString('utf8');
  }
}

async function endsWithNewline(fh: FileHandle): Promise<boolean> {
  const { size } = await fh.stat();
  if (size === 0) return true;
  const last = Buffer.alloc(1);
  const { bytesRead } = await fh.read(last, 0, 1, size - 1);
  return bytesRead === 1 && last[0] === 0x0a;
}

/**
 * For the operator's scripts (the CA's, the dead-letter replay), which log only errors: a close
 * that failed after the sync (appendLinesSync's return) is said on stderr, as a line with its code.
 * The lines are on the disk and count as written.
 */
export function closeFailedOnStderr(path: string, err: Error | undefined): void {
  if (err) process.stderr.write(`${JSON.stringify({ level: 'warn', code: 'FILE_CLOSE_FAILED', path, err: err.message, msg: 'synced, the close failed; the lines count as written' })}\n`);
}
