import { lstatSync } from 'node:fs';
import { join } from 'node:path';
import { FieldStreamError } from './errors.ts';

/**
 * A restore's mark on a folder it writes (scripts/admin/restore-marks.ts), seen by the services that
 * read the folder.
 *
 * `fieldstream-admin restore` writes the mark into each folder it is about to write (the
 * distributor's state folder, the command journal's folder, the device keys' folder), synced, before
 * its first file there, and removes them all once its last file is written. A restore killed between
 * (SIGKILL, a power cut) leaves some files restored and others not: replay windows partly restored
 * (what the missing windows refused would be taken again), device keys of two times. The services
 * mount these folders, not the certificates folder's root that the admin commands' mark is in, so
 * each looks for the mark in its own folders at its start and does not start while it is there.
 */
export const RESTORE_MARK_NAME = '.restore-running';

/** What was not done for a half-restored folder, and what to do once the restore is run to its end. */
export interface HalfRestoredRefusal {
  notDone: string;
  then: string;
}

const NOT_STARTED: HalfRestoredRefusal = { notDone: 'Not started', then: 'then start this service' };

/**
 * Throws RESTORE_INCOMPLETE when a restore's mark is in one of `folders` (each named by its
 * setting); `refusal` says what was not done (a service's start by default, or a backup's archive). Anything at the mark's name counts: the mark's content (which process made it) is not
 * read, because a container sees neither the restore's host nor its processes, and a mark of a
 * killed restore is as much a reason to stay down as one of a running restore. One that cannot be
 * looked at (EACCES, EIO) refuses too: the folder is not known to be whole.
 */
export function refuseHalfRestored(folders: ReadonlyArray<{ setting: string; dir: string }>, refusal: HalfRestoredRefusal = NOT_STARTED): void {
  for (const { setting, dir } of folders) {
    const mark = join(dir, RESTORE_MARK_NAME);
    let problem: string | undefined;
    try {
      lstatSync(mark);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOTDIR: a file where the folder should be; the service's own reading of it says so
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      problem = code ?? (err as Error).message;
    }
    throw new FieldStreamError(
      'RESTORE_INCOMPLETE',
      problem === undefined
        ? `${mark} is there (${setting}): a restore is writing ${dir}, or was killed while it did, so it may hold part of the backup and part of what was there. ${refusal.notDone}: run the restore again to its end (fieldstream-admin restore ARCHIVE), which removes the mark, ${refusal.then}.`
        : `Cannot look for a restore's mark ${mark} (${setting}: ${problem}), so ${dir} is not known to be whole. ${refusal.notDone}: make it readable; if a restore was killed there, run it again to its end (fieldstream-admin restore ARCHIVE); ${refusal.then}.`,
    );
  }
}
