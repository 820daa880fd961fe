import type { Dirent } from 'node:fs';
import { lstat, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { TIMINGS } from '../../shared/limits.ts';
import { entries, exists, ifGone } from './file-io.ts';

/**
 * Removes what killed processes leave in the storage and nothing else would ever remove:
 * - temporary files not modified for `staleMs` (TIMINGS.fileTempStaleMs): `.incoming-*` in a
 *   device's folder (a file sent whole), in a folder of chunks (a chunk, or their join, as large
 *   as the whole file, up to 10 GiB: removed with the folder when the transfer ends, but a
 *   transfer may never end), in .failed/DEVICE/ (a verdict), and a done marker's
 *   `ID.done.json.tmp-*`. Only their age tells that their writer is gone: distributors on other
 *   machines share the storage. None is ever the only copy of anything receipted (a file or chunk
 *   counts once it has its name), so removing one a live writer still holds costs a retry.
 * - the folder of chunks of a transfer whose done marker is there, whatever its age (a kill
 *   between the marker and the folder's removal, or a chunk that made the folder again after it):
 *   the file is stored, and the marker answers any chunk that comes again.
 * Never touched: stored files, a folder of chunks without a done marker (receipted chunks of a
 * file not stored yet), the chunks and verdicts in .failed/. Symbolic links are not followed.
 *
 * A folder it may not list, or an entry it cannot remove (a disk mounted as the storage has
 * lost+found, 0700 root's, and the distributor runs as a user of its own), is left as it is,
 * counted in `skipped`, and the sweep goes on: one such folder failed the whole sweep, at every
 * hour, and nothing after it was ever removed.
 */
export async function sweepFiles(root: string, o: { staleMs?: number; now?: number; signal?: AbortSignal } = {}): Promise<FileStoreSweep> {
  const swept: FileStoreSweep = { tempFiles: 0, tempBytes: 0, doneFolders: 0, skipped: 0 };
  const skip = (path: string, err: unknown) => {
    swept.skipped++;
    swept.firstSkipped ??= { path, error: (err as Error).message };
  };
  /** A folder's entries; one it cannot list, or stops listing, is skipped. */
  async function* listed(dir: string): AsyncGenerator<Dirent> {
    try {
      yield* entries(dir);
    } catch (err) {
      skip(dir, err);
    }
  }
  const before = (o.now ?? Date.now()) - (o.staleMs ?? TIMINGS.fileTempStaleMs);
  const removeIfStale = async (path: string) => {
    try {
      const s = await lstat(path).catch(ifGone);
      if (!s?.isFile() || s.mtimeMs > before) return;
      if ((await unlink(path).then(() => true, ifGone)) === undefined) return;
      swept.tempFiles++;
      swept.tempBytes += s.size;
    } catch (err) {
      skip(path, err);
    }
  };
  /** The folder of chunks of a file stored: true once removed; a failure to tell or to remove is skipped. */
  const removeIfDone = async (path: string) => {
    try {
      if (!(await exists(`${path}.done.json`))) return false;
      await rm(path, { recursive: true, force: true });
      swept.doneFolders++;
    } catch (err) {
      skip(path, err);
    }
    return true;
  };
  const aborted = () => o.signal?.aborted === true;
  for await (const top of listed(root)) {
    if (aborted()) break;
    if (!top.isDirectory()) continue;
    const topDir = join(root, top.name);
    if (top.name === '.partial' || top.name === '.failed') {
      for await (const device of listed(topDir)) {
        if (aborted()) break;
        if (!device.isDirectory()) continue;
        const deviceDir = join(topDir, device.name);
        for await (const e of listed(deviceDir)) {
          if (aborted()) break;
          const path = join(deviceDir, e.name);
          if (e.isFile() && (e.name.startsWith('.incoming-') || (top.name === '.partial' && e.name.includes('.done.json.tmp-')))) await removeIfStale(path);
          else if (e.isDirectory() && top.name === '.partial' && !(await removeIfDone(path))) {
            for await (const f of listed(path)) if (f.isFile() && f.name.startsWith('.incoming-')) await removeIfStale(join(path, f.name));
          }
        }
      }
    } else if (!top.name.startsWith('.')) {
      for await (const e of listed(topDir)) {
        if (aborted()) break;
        if (e.isFile() && e.name.startsWith('.incoming-')) await removeIfStale(join(topDir, e.name));
      }
    }
  }
  return swept;
}

/** What a sweep removed. */
export interface FileStoreSweep {
  /** temporary files left by killed processes, and their bytes */
  tempFiles: number;
  tempBytes: number;
  /** folders of chunks of files already stored (their done markers stay) */
  doneFolders: number;
  /** folders it could not list and entries it could not remove: left as they are */
  skipped: number;
  /** the first of them, for the log */
  firstSkipped?: { path: string; error: string };
}
