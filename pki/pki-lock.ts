import { mkdirSync } from 'node:fs';
import { withDirLock } from '../shared/dir-lock.ts';
import { FieldStreamError } from '../shared/errors.ts';

/**
 * withDirLock for the locks the admin commands take in the certificates folder. Taking one is the
 * first thing revoke-device.sh and the other commands write there, so a user who may not write the
 * folder (the set made with sudo, the command run without) died on the lock's mkdir with a stack
 * trace. That is CONFIG_FILE_UNREADABLE, saying whose folder it is, as for an unreadable CA
 * (set-meta.ts caUnreadable). So is the folder's own mkdir, made here when missing (the lock is in
 * it): a CERTS_DIR not there, in a folder this user may not write. Only these are told so; what
 * `fn` throws passes as it is.
 */
export function withPkiLock<T>(root: string, lock: string, waitMs: number, busy: () => FieldStreamError, fn: () => T, onWait?: () => void): T {
  let inside = false;
  try {
    // 0755 whatever the umask: a folder others may write lets them rename the CA's or the keys' away.
    mkdirSync(root, { recursive: true, mode: 0o755 });
    return withDirLock(lock, waitMs, busy, () => {
      inside = true;
      return fn();
    }, onWait);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (inside || e.syscall !== 'mkdir' || !(e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EROFS')) throw err;
    throw new FieldStreamError(
      'CONFIG_FILE_UNREADABLE',
      `The certificates folder ${root} cannot be written by this user (${e.code}, making ${e.path ?? lock}): run this as the owner of ${root} (the user that ran scripts/generate-certificates.sh; with sudo if that was root).`,
      { path: root },
      { cause: err },
    );
  }
}
