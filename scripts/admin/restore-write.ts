import { chmodSync, linkSync, lstatSync, mkdirSync, readdirSync, renameSync, rmdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { replaceFileDurablySync, syncDirSync } from '../../shared/durable-fs.ts';
import { errnoOf } from './backup.ts';

/**
 * The writing half of a restore: every change it makes to the installation can be taken back
 * until the restore is done.
 *
 * Each file is written durably (shared/durable-fs.ts: written aside, fsynced, renamed over its
 * place, its folder fsynced), so each file is at any instant, even after a power cut, either its
 * old content or its new content, whole. A replaced file's old content is kept under a second name
 * (a hard link, NAME.tmp-restore-PID: no copy, and the name holds the old file until the link is
 * renamed back) until every file is written; then those links are removed. If a write fails midway
 * (disk full, a folder in the way), rollback() renames each kept file back over its new content,
 * removes the files that did not exist before and the folders it created, so the installation is
 * as it was.
 *
 * The restore as a whole is not atomic: killed (SIGKILL, a power cut) midway, it leaves some files
 * new and the others old, the old content of the files it replaced under NAME.tmp-restore-PID, and
 * perhaps a NAME.tmp-PID half written. Running the same restore again finishes the job (the files
 * already restored are in place and left as they are; the others are written, with --force if the
 * first run needed it) and first removes what the dead run left (removeStaleTemps).
 */

/** Suffix of the link to a replaced file's old content, kept until the restore is done. */
export const PREVIOUS_MARKER = '.tmp-restore-';
/** What a restore killed midway may leave beside a file it writes: the link above, a file of
 * replaceFileDurablySync half written (NAME.tmp-PID), or one of a restore of an older version
 * (NAME.restore-PID). */
export const RESTORE_LEFTOVERS = [PREVIOUS_MARKER, '.tmp-', '.restore-'] as const;

/** `emptyDir`: the target was an empty folder (Docker's, see restore.ts inPlace), put back on rollback. */
type Undo = { target: string; previous?: string; mode?: number; emptyDir?: true };

export class RestoreWriter {
  private readonly undo: Undo[] = [];
  private readonly madeDirs: string[] = [];

  /**
   * Creates `dir` and the folders above it that are missing (mode 0755, or 0700 for `privateDirs`),
   * each made durable with an fsync of its parent, and remembers them for rollback(). A private
   * folder that exists is made 0700 (never undone: it only takes access away from others).
   */
  mkdirs(dir: string, privateDirs: ReadonlySet<string> = new Set()): void {
    const missing: string[] = [];
    for (let d = dir; ; d = dirname(d)) {
      try {
        lstatSync(d);
        break;
      } catch (err) {
        if (errnoOf(err) !== 'ENOENT' || dirname(d) === d) throw err;
        missing.unshift(d);
      }
    }
    for (const d of missing) {
      mkdirSync(d, { mode: privateDirs.has(d) ? 0o700 : 0o755 });
      this.madeDirs.push(d);
      syncDirSync(dirname(d));
    }
    for (const d of privateDirs) chmodSync(d, 0o700);
  }

  /** Writes `data` to `target` (see the class), with `mode` whatever the umask. */
  replace(target: string, data: Buffer, mode: number): void {
    let existed = true;
    try {
      const st = lstatSync(target);
      if (st.isDirectory() && readdirSync(target).length === 0) {
        // Docker's folder in the file's place: removed (a folder not empty fails here, ENOTEMPTY)
        rmdirSync(target);
        this.undo.push({ target, emptyDir: true });
        replaceFileDurablySync(target, data, mode);
        return;
      }
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw err;
      existed = false;
    }
    if (existed) {
      const previous = `${target}${PREVIOUS_MARKER}${process.pid}`;
      rmSync(previous, { force: true });
      linkSync(target, previous); // a link (not followed) or a file alike; a folder in the way fails here
      this.undo.push({ target, previous });
    } else this.undo.push({ target });
    replaceFileDurablySync(target, data, mode); // exactly `mode`, whatever the umask, before its first byte
  }

  /**
   * Takes `target` (a file) out of its place, kept under the name replace() keeps an old content
   * under until the restore is done (commit() removes it, rollback() puts it back); its folder
   * synced, so that the file does not come back at a power cut after the restore reported done.
   */
  remove(target: string): void {
    const previous = `${target}${PREVIOUS_MARKER}${process.pid}`;
    rmSync(previous, { force: true });
    renameSync(target, previous);
    this.undo.push({ target, previous });
    syncDirSync(dirname(target));
  }

  /** Sets the mode of a file in place already, remembering the old one. */
  setMode(target: string, mode: number): void {
    const old = lstatSync(target).mode & 0o7777;
    if (old === mode) return;
    this.undo.push({ target, mode: old });
    chmodSync(target, mode);
  }

  /** Done: the kept old contents go (best effort; a leftover is removed by the next restore). */
  commit(): void {
    const dirs = new Set<string>();
    for (const u of this.undo) {
      if (!u.previous) continue;
      try {
        rmSync(u.previous, { force: true });
        dirs.add(dirname(u.previous));
      } catch {
        // left for the next restore (removeStaleTemps)
      }
    }
    for (const d of dirs) {
      try {
        syncDirSync(d);
      } catch {
        // the links' removal only; the restored files are synced already
      }
    }
  }

  /** Puts back what was there before, latest change first; returns what could not be put back. */
  rollback(): string[] {
    const failed: string[] = [];
    const dirs = new Set<string>();
    for (const u of [...this.undo].reverse()) {
      try {
        if (u.mode !== undefined) chmodSync(u.target, u.mode);
        else if (u.emptyDir) {
          rmSync(u.target, { force: true });
          mkdirSync(u.target);
        } else if (u.previous) renameSync(u.previous, u.target);
        else rmSync(u.target, { force: true });
        dirs.add(dirname(u.target));
      } catch (err) {
        failed.push(`${u.target} (${errnoOf(err) ?? (err as Error).message})`);
      }
    }
    for (const d of [...this.madeDirs].reverse()) {
      try {
        rmdirSync(d);
        dirs.delete(d);
        dirs.add(dirname(d));
      } catch {
        // not empty (a file put back, or made meanwhile by someone else): it stays
      }
    }
    for (const d of dirs) {
      try {
        syncDirSync(d);
      } catch (err) {
        failed.push(`${d} (${errnoOf(err) ?? (err as Error).message})`);
      }
    }
    return failed;
  }
}
