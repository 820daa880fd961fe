import { withDirLock } from '../shared/dir-lock.ts';
import { FieldStreamError } from '../shared/errors.ts';

/**
 * withDirLock for the locks the admin commands take in the certificates folder. Taking one is the
 * first thing revoke-device.sh and the other commands write there, so a user who may not write the
 * folder (the set made with sudo, the command run without) died on the lock's mkdir with a stack
 * trace. That is CONFIG_FILE_UNREADABLE, saying whose folder it is, as for an unreadable CA
 * (set-meta.ts caUnreadable). Only the lock's own mkdir is told so; what `fn` throws passes as it is.
 */
export function withPkiLock<T>(root: string, lock: string, waitMs: number, busy: () => FieldStreamError, fn: () => T, onWait?: () => void): T {
  let inside = false;
  try {
    return withDirLock(lock, waitMs, busy, () => {
      inside = true;
      return fn();
    }, onWait);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (inside || e.syscall !== 'mkdir' || !(e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EROFS')) throw err;
    throw new FieldStreamError(
      'CONFIG_FILE_UNREADABLE',
      `The certificates folder ${root} cannot be written by this user (${e.code}, making ${lock}): run this as the owner of ${root} (the user that ran scripts/generate-certificates.sh; with sudo if that was root).`,
      { path: root },
      { cause: err },
    );
  }
}
