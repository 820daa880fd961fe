import { chmodSync, mkdirSync, rmdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { restoreMarkIn, restoreMarkText } from '../../pki/restore-mark.ts';
import { removeFileDurablySync, replaceFileDurablySync, syncDirSync } from '../../shared/durable-fs.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { RESTORE_MARK_NAME } from '../../shared/restore-marks.ts';
import type { AdminPaths } from './paths.ts';
import type { Manifest } from './backup-manifest.ts';

/**
 * The restore's marks on the folders the services read (shared/restore-marks.ts), beside the
 * certificates folder's own (pki/restore-mark.ts), which only the admin commands look at.
 *
 * Each mark is written durably (fsynced, its folder fsynced) into every such folder before the
 * restore's first write anywhere, and the marks are removed, each durably, only after its last
 * write. So, killed at any instant from the first mark on, every folder the restore was to write
 * that a service reads holds a mark until a later restore that writes that folder completes (one
 * of an archive without it leaves the mark, and says so): a mark made and nothing
 * written yet is a needless stop that the next run clears; a mark removed after every file was
 * written is a folder that is whole.
 */

/** The device keys' folder in the certificates folder, which every internal service mounts. */
export const deviceKeysDirOf = (certsDir: string) => join(certsDir, 'internal', 'device-keys');

/**
 * The folders a service reads that a restore of `manifest` writes: the device keys' folder when the
 * archive holds anything of the certificates folder (the distributor, the command API and the
 * console mount it; the revoked list and the stored-feed key they read are files of their own, not
 * a folder a mark could be put in), the state folder, the command journal's folder.
 */
export function foldersToMark(paths: AdminPaths, manifest: Manifest): string[] {
  const roots = new Set(manifest.files.map((f) => f.root));
  return [
    ...(roots.has('certs') ? [deviceKeysDirOf(paths.certsDir)] : []),
    ...(roots.has('distributor-state') ? [paths.stateDir] : []),
    ...(roots.has('command-state') ? [dirname(paths.commandState)] : []),
  ].map((d) => resolve(d));
}

/** Every folder a restore may have marked, whatever its archive held, each with the setting it is of. */
export function markableFolders(paths: AdminPaths): Array<{ setting: string; dir: string }> {
  return [
    { setting: 'the device keys of CERTS_DIR', dir: resolve(deviceKeysDirOf(paths.certsDir)) },
    { setting: 'DISTRIBUTOR_STATE_DIR', dir: resolve(paths.stateDir) },
    { setting: "COMMAND_STATE_PATH's folder", dir: resolve(dirname(paths.commandState)) },
  ];
}

/**
 * The folders that hold a restore's mark (the certificates folder's own among them): after a
 * restore completed, those another restore, killed, left half restored, which this one's archive
 * held nothing of.
 */
export function halfRestoredFolders(paths: AdminPaths): string[] {
  return [resolve(paths.certsDir), ...markableFolders(paths).map((f) => f.dir)].filter((dir) => restoreMarkIn(dir) !== 'none');
}

export interface FolderMarks {
  /** Done: takes away the marks of the folders this restore wrote (a killed restore's there too). */
  completed(): void;
  /**
   * Nothing written, or all put back: takes away the marks this restore made in a folder that had
   * none, and the folders made for them. A mark of a killed restore found there stays.
   */
  undone(): void;
}

/**
 * Marks `dirs` (making those missing: the device keys' folder 0700), each durably. A mark of a
 * restore that may still run refuses (PKI_RESTORE_RUNNING); a killed one's is overwritten, and kept
 * by undone().
 */
export function markFolders(paths: AdminPaths, dirs: readonly string[]): FolderMarks {
  const made: string[] = [];
  const fresh: string[] = [];
  const clean = () => {
    for (const d of fresh) removeFileDurablySync(join(d, RESTORE_MARK_NAME));
    for (const d of [...made].reverse()) {
      try {
        rmdirSync(d);
        syncDirSync(dirname(d));
      } catch {
        // not empty: kept
      }
    }
  };
  try {
    for (const dir of dirs) {
      const found = restoreMarkIn(dir);
      if (found === 'running') {
        throw new FieldStreamError('PKI_RESTORE_RUNNING', `A restore is writing ${dir} (its mark ${join(dir, RESTORE_MARK_NAME)}): nothing was restored; restore again once it is done. If no restore runs there, it was killed: remove the mark, then restore.`);
      }
      const first = mkdirSync(dir, { recursive: true, mode: 0o755 });
      if (first !== undefined) {
        for (let d = dir; ; d = dirname(d)) {
          made.push(d);
          if (d === resolve(first)) break;
        }
        made.reverse();
        if (dir === resolve(deviceKeysDirOf(paths.certsDir))) chmodSync(dir, 0o700);
        for (const d of made) syncDirSync(dirname(d));
      }
      replaceFileDurablySync(join(dir, RESTORE_MARK_NAME), restoreMarkText(), 0o600);
      if (found === 'none') fresh.push(dir);
    }
  } catch (err) {
    clean();
    if (err instanceof FieldStreamError) throw err;
    // e.g. a file where a folder to mark goes (ENOTDIR, EEXIST): the restore would fail there too
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new FieldStreamError('BACKUP_WRITE_FAILED', `Cannot mark ${dirs.join(', ')} as being restored (${code}); nothing was restored.`, undefined, { cause: err });
  }
  return {
    // Only the folders this restore wrote: a killed restore's mark in a folder this one did not
    // write (an archive without it) still tells of a folder half restored, and stays.
    completed: () => {
      for (const dir of dirs) removeFileDurablySync(join(dir, RESTORE_MARK_NAME));
    },
    undone: clean,
  };
}
