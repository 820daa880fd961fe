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
 */
export async function sweepFiles(root: string, o: { staleMs?: number; now?: number; signal?: AbortSignal } = {}): Promise<FileStoreSweep> {
  const swept: FileStoreSweep = { tempFiles: 0, tempBytes: 0, doneFolders: 0 };
  const before = (o.now ?? Date.now()) - (o.staleMs ?? TIMINGS.fileTempStaleMs);
  const removeIfStale = async (path: string) => {
    const s = await lstat(path).catch(ifGone);
    if (!s?.isFile() || s.mtimeMs > before) return;
    if ((await unlink(path).then(() => true, ifGone)) === undefined) return;
    swept.tempFiles++;
    swept.tempBytes += s.size;
  };
  const aborted = () => o.signal?.aborted === true;
  for await (const top of entries(root)) {
    if (aborted()) break;
    if (!top.isDirectory()) continue;
    const topDir = join(root, top.name);
    if (top.name === '.partial' || top.name === '.failed') {
      for await (const device of entries(topDir)) {
        if (!device.isDirectory()) continue;
        const deviceDir = join(topDir, device.name);
        for await (const e of entries(deviceDir)) {
          if (aborted()) break;
          const path = join(deviceDir, e.name);
          if (e.isFile() && (e.name.startsWith('.incoming-') || (top.name === '.partial' && e.name.includes('.done.json.tmp-')))) await removeIfStale(path);
          else if (e.isDirectory() && top.name === '.partial') {
            if (await exists(`${path}.done.json`)) {
              await rm(path, { recursive: true, force: true });
              swept.doneFolders++;
            } else {
              for await (const f of entries(path)) if (f.isFile() && f.name.startsWith('.incoming-')) await removeIfStale(join(path, f.name));
            }
          }
        }
      }
    } else if (!top.name.startsWith('.')) {
      for await (const e of entries(topDir)) {
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
}
