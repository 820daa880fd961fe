import { constants, linkSync, lstatSync, rmSync, type Stats } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FieldStreamError } from '../../../shared/errors.ts';
import { syncDirSync } from '../../../shared/durable-fs.ts';
import { writeNote, type AcceptingNote, type NotedSource } from './accepting-note.ts';
import { copyNoFollow } from './copy-no-follow.ts';
import { cannotLeave, removeSourceSync } from './taking-steps.ts';

/*
 * A file moved between its folder and the outbox (FileOutbox.accept and giveBack, file-outbox.ts):
 * taken in by a rename, or by a copy where it cannot leave, its note (accepting-note.ts) kept true
 * at each step; and put back where it was, never over a file that took its name meanwhile.
 */

/**
 * Moves `source` to `tmp` in the outbox `dir` for the transfer `transferId`, or copies it there
 * when it is on another file system or cannot leave its folder (then `note.move` is set false, and
 * `sourceKept` told why). Throws the file's failure; the caller removes `tmp` and the note.
 */
export async function moveIn(dir: string, transferId: string, source: string, tmp: string, note: AcceptingNote, limit: number, sourceKept?: (code: string) => void): Promise<void> {
  // Readable by this process before it leaves: a rename needs only write access to the
  // folder, so another user's 0600 file in a shared folder was moved out, failed to hash, and
  // lay in the outbox unsent and never given back. O_NONBLOCK: a FIFO swapped in is not waited on.
  const probe = await open(source, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  await probe.close();
  let moved = true;
  // Copied instead only when it is on another file system (EXDEV), or its folder does not let
  // it go (cannotLeave); any other failure (it vanished, an I/O error) is the file's failure.
  let kept: string | undefined;
  await rename(source, tmp).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EXDEV' && !cannotLeave(err)) throw err;
    moved = false;
    if (err.code !== 'EXDEV') kept = err.code;
  });
  if (moved && !lstatSync(tmp).isFile()) {
    // Swapped for a link (or another kind of file) since it was looked at: put back, not followed.
    await rename(tmp, source);
    throw new Error('not a regular file');
  }
  if (!moved) {
    // Another file system: until the copy is whole and synced, the source is the file.
    writeNote(dir, transferId, { ...note, move: false });
    const before = lstatSync(source);
    await copyNoFollow(source, tmp, limit);
    if (kept === undefined) {
      // Whole and synced: from now on the outbox's copy is the file, and the source goes. Noted
      // with it, so that a kill or a power cut before its removal does not leave both taken.
      writeNote(dir, transferId, { ...note, source: { path: source, dev: before.dev, ino: before.ino, size: before.size, mtimeMs: before.mtimeMs } });
      // Unless it changed since the copy began: the copy saw growth only until it read to the end,
      // and what its producer wrote after (while the copy was synced, seconds on an SD card) would
      // go with the source, in no copy. Looked at last, just before the removal.
      if (changedSince(source, before)) throw new FieldStreamError('FIELD_FILE_GROWING', `${source} changed while it was copied (still being written?); taken again once it holds still`);
      try {
        // unlink, not rmSync: that takes a file it may not remove (EPERM) for a folder, and
        // fails reading it as one (ENOTDIR), the reason lost.
        removeSourceSync(source);
      } catch (err) {
        if (!cannotLeave(err as NodeJS.ErrnoException)) throw err;
        // Back to a copy: the source stays (a crash before the record drops the copy, and
        // the source is taken again).
        writeNote(dir, transferId, { ...note, move: false });
        kept = (err as NodeJS.ErrnoException).code;
      }
    }
  }
  if (kept !== undefined) {
    // The source cannot leave its folder (read-only, another user's with the sticky bit,
    // append-only): the copy is sent, as a copy, and the caller told, so that it does not
    // take the same file again. Before, the copy was dropped and the whole file copied and
    // synced again at every other look of the watched folder, for ever (an SD card worn).
    note.move = false;
    sourceKept?.(kept);
  }
}

/**
 * At a start, for a move across file systems whose note says its copy is the file: removes its
 * source (`noted`) if it is still there and still that file (a kill or a power cut came between the
 * copy and the removal). True when the copy is the file to send (the source gone, now or before,
 * or replaced by another file, which is taken as any); false when the source cannot leave its
 * folder (EACCES, EPERM, EROFS): it stays and is taken again, and the copy is to be dropped.
 */
export function finishLeaving(noted: NotedSource): boolean {
  let now: Stats;
  try {
    now = lstatSync(noted.path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw err;
  }
  if (now.dev !== noted.dev || now.ino !== noted.ino || now.size !== noted.size || now.mtimeMs !== noted.mtimeMs) return true;
  try {
    removeSourceSync(noted.path);
  } catch (err) {
    if (cannotLeave(err as NodeJS.ErrnoException)) return false;
    throw err;
  }
  return true;
}

/** Whether the file at `path` is no longer the one `before` describes (its inode, size or modification time). */
function changedSince(path: string, before: Stats): boolean {
  const now = lstatSync(path);
  return now.ino !== before.ino || now.dev !== before.dev || now.size !== before.size || now.mtimeMs !== before.mtimeMs;
}

/**
 * Puts the outbox's file `target` back at `source` (FileOutbox.giveBack, and accept when it cannot place it): linked, not renamed, so
 * never over a file that took its name meanwhile; across file systems, a copy, then a link. False
 * when it cannot be put back.
 */
export async function moveBack(target: string, source: string, transferId: string): Promise<boolean> {
  try {
    linkSync(target, source);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') return false;
    // A hidden name first (the folder input skips dot names): a crash mid-copy leaves no partial file to take.
    const beside = join(dirname(source), `.${transferId}.returning`);
    try {
      await copyNoFollow(target, beside);
      linkSync(beside, source);
    } catch {
      return false;
    } finally {
      rmSync(beside, { force: true });
    }
  }
  syncDirSync(dirname(source));
  return true;
}
