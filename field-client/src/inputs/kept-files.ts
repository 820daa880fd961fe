import { closeSync, existsSync, fsyncSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';
import { removeLeftAsideSync, replaceFileDurablySync, syncDirSync, writeWholeSync } from '../../../shared/durable-fs.ts';
import { LIMITS } from '../../../shared/limits.ts';
import { readLinesSync } from '../../../shared/line-file.ts';
import type { Logger } from '../../../shared/logger.ts';

/**
 * The files of a watched folder sent as copies because the folder does not let them go
 * (FIELD_FILE_SOURCE_KEPT), each by its name and what it was (device, inode, size, modification
 * time): not taken again until that changes. Kept in FIELD_DATA_DIR/watched-kept.jsonl, so that a
 * restart of the field client does not send them all once more (a read-only archive of scans sent
 * again at every start, the link and the storage paying for each).
 *
 * A file is remembered only once it is taken in durably (its queue record written, `takeFile`
 * calls sourceKept after that): a file remembered is never one that was not taken. A memory that
 * cannot be written (a full disk) is logged and kept for this run only: a restart then sends the
 * file again, a copy, never a loss.
 *
 * One JSON line per file remembered, appended and fsynced; the file is written anew (durably, whole)
 * when it holds more than twice the lines it needs, or a torn line (a kill while appending, whose
 * file is then taken again: a copy). Forgetting a file gone from the folder is not written at once:
 * its line, read at the next start, names a file that is not there, or another one (another
 * inode), which is taken as any.
 */
export class KeptFiles {
  /** name → what it was when sent, the oldest remembered first */
  private readonly kept = new Map<string, string>();
  /** lines in the file */
  private lines = 0;

  constructor(
    /** the file; undefined: remembered for this run only */
    private readonly path: string | undefined,
    /** the watched folder: lines of another (FIELD_WATCH_DIR changed) are not this folder's files */
    private readonly dir: string,
    private readonly log: Logger,
  ) {
    if (path) removeLeftAsideSync(path);
    if (!path || !existsSync(path)) return;
    let damaged = false;
    try {
      for (const text of readLinesSync(path, LINE_MAX_BYTES)) {
        if (text === '') continue;
        this.lines++;
        const line = text === undefined ? undefined : parse(text); // undefined: a line too long to be ours
        if (!line) damaged = true;
        else if (line.dir === dir) this.add(line.name, line.sig);
      }
    } catch (err) {
      log.warn({ file: path, err: (err as Error).message }, 'cannot read the files of the watched folder sent already; those its folder kept are sent once more');
      return;
    }
    if (damaged || this.lines > this.kept.size * 2 + COMPACT_SLACK_LINES) this.rewrite();
  }

  /** Whether `name` was sent as it is now (`sig`); one that changed is forgotten (another file). */
  has(name: string, sig: string): boolean {
    const was = this.kept.get(name);
    if (was === undefined) return false;
    if (was === sig) return true;
    this.kept.delete(name);
    return false;
  }

  /** `name`, as `sig`, was taken in durably, and stays in the folder. */
  remember(name: string, sig: string): void {
    this.add(name, sig);
    if (!this.path) return;
    try {
      if (this.lines + 1 > this.kept.size * 2 + COMPACT_SLACK_LINES) {
        this.rewrite();
        return;
      }
      const created = !existsSync(this.path);
      const fd = openSync(this.path, 'a', 0o600);
      try {
        writeWholeSync(fd, Buffer.from(`${JSON.stringify({ dir: this.dir, name, sig } satisfies Line)}\n`), this.path);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      if (created) syncDirSync(dirname(this.path));
      this.lines++;
    } catch (err) {
      this.log.warn({ file: this.path, name, err: (err as Error).message }, 'cannot write down a watched file sent as a copy; it is sent once more after a restart');
    }
  }

  /** Forgets the files no longer in the folder (in memory: see the class). */
  keepOnly(present: ReadonlySet<string>): void {
    for (const name of this.kept.keys()) if (!present.has(name)) this.kept.delete(name);
  }

  private add(name: string, sig: string): void {
    this.kept.delete(name); // the latest last
    this.kept.set(name, sig);
    // Bounded: the oldest forgotten first (sent once more should it come back unchanged after a restart).
    if (this.kept.size > LIMITS.folderInputKeptMaxFiles) this.kept.delete(this.kept.keys().next().value as string);
  }

  /** The file written anew with what is remembered (of this folder: another's lines are dropped). */
  private rewrite(): void {
    if (!this.path) return;
    try {
      replaceFileDurablySync(this.path, [...this.kept].map(([name, sig]) => `${JSON.stringify({ dir: this.dir, name, sig } satisfies Line)}\n`));
      this.lines = this.kept.size;
    } catch (err) {
      this.log.warn({ file: this.path, err: (err as Error).message }, 'cannot write down the watched files sent as copies; they are sent once more after a restart');
    }
  }
}

const LineSchema = z.object({ dir: z.string(), name: z.string(), sig: z.string() });
type Line = z.infer<typeof LineSchema>;

/** bytes. Longest line: a folder's path (PATH_MAX, 4,096) and a file's name, quoted. */
const LINE_MAX_BYTES = 16 * 1024;
/** lines. Written anew only past twice what is remembered and this many more, so not at every file. */
const COMPACT_SLACK_LINES = 64;

function parse(text: string): Line | undefined {
  try {
    const r = LineSchema.safeParse(JSON.parse(text));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}
