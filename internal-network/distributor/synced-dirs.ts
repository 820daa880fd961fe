import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { syncDir } from '../../shared/durable-fs.ts';
import { LIMITS } from '../../shared/limits.ts';
import { io } from './file-io.ts';

/** The folders of FileStore (file-store.ts), made so that a power cut does not take them away once a chunk in them is receipted. */
export class SyncedDirs {
  /** folders whose chain of parents this process has synced (make) */
  private readonly dirsSynced = new Set<string>();

  /** `root`: the storage root, the highest level whose parent is synced */
  constructor(private readonly root: string) {}

  /**
   * mkdir -p whose folders survive a power cut: each new entry's parent is synced. A folder found
   * already there may have been made by a process killed before it synced its parent, so a level
   * this process has not synced the entry of yet, up to the storage root (and the root's own), has
   * its parent synced too, made now or not; a level it has synced (remembered) ends the walk.
   *
   * The levels are remembered only once the whole walk is done: remembered as each was synced, a
   * folder was taken as durable by another consumer (the next chunk of a transfer just begun) while
   * its parent's entry was still being synced, and its chunk receipted in a folder a power cut could
   * still take away. Meanwhile the other consumer walks the levels itself.
   */
  async make(dir: string): Promise<void> {
    const first = await io(dir, () => mkdir(dir, { recursive: true }));
    if (first === undefined && this.dirsSynced.has(dir)) return;
    const synced: string[] = [];
    for (let d = dir; ; d = dirname(d)) {
      const madeNow = first !== undefined && d.length >= first.length; // `first` and what is under it
      if (!madeNow && (this.dirsSynced.has(d) || d.length < this.root.length)) break;
      const parent = dirname(d);
      await io(parent, () => syncDir(parent));
      synced.push(d);
      if (parent === d) break;
    }
    // Bounded: one entry per transfer otherwise; forgetting them costs a few syncs again, nothing more.
    if (this.dirsSynced.size + synced.length > LIMITS.fileStoreSyncedDirsMax) this.dirsSynced.clear();
    for (const d of synced) this.dirsSynced.add(d);
  }
}
