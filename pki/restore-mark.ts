import { mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { withPkiLock } from './pki-lock.ts';
import { removeFileDurablySync, replaceFileDurablySync } from '../shared/durable-fs.ts';
import { bootId, processStart } from '../shared/process-identity.ts';
import { FieldStreamError } from '../shared/errors.ts';
import { TIMINGS } from '../shared/limits.ts';
import { pkiPaths } from './layout.ts';

/**
 * A restore's mark on the certificates folder (CERTS/.restore-running), which keeps every other
 * admin command's change out of the folder while a restore writes it.
 *
 * A restore writes the CA, its logs, the CRL, the tokens file and each device's files one at a
 * time, for as long as the archive takes: seconds, more for a large fleet. A certificate issued,
 * a token or a revocation written meanwhile mixed with it: a certificate of the CA replaced, a CRL
 * or tokens file of the restore without the revocation made beside it. The admin commands' locks
 * (.revocations.lock, .tokens.lock: shared/dir-lock.ts) cannot be held that long: each is held for
 * milliseconds, and one older than TIMINGS.adminLockWaitMs is taken for a killed holder's and taken
 * over, so the next command would take them from a restore still writing. So a restore holds them
 * only to put its mark in place (once whichever command holds them is done), and every holder of
 * either checks the mark under it (refuseWhileRestoring) and changes nothing while it is there.
 *
 * The mark goes when the restore is done, or has put everything back. One killed midway (SIGKILL,
 * a power cut) leaves it, with some files restored and others not: the commands refuse until the
 * restore is run again, which finishes it and takes the mark over (its process is gone).
 */

/**
 * `boot`: the boot of the host the restore ran in (Linux's boot_id; absent where there is none). A
 * restore cut off by a power cut leaves its mark, and after the reboot its pid may well be another
 * process's (pids start again from 1): taken as running, its mark refused every command and the
 * restore run again to finish it, until removed by hand. `procStart`: when its process started
 * (clock ticks after boot, proc(5) /proc/PID/stat field 22; absent where there is no /proc), for a
 * pid reused within one boot.
 */
const MarkSchema = z.object({
  pid: z.number().int().positive(),
  host: z.string(),
  startedAt: z.string(),
  boot: z.string().max(64).optional(),
  procStart: z.string().regex(/^\d{1,20}$/).optional(),
});
type Mark = z.infer<typeof MarkSchema>;

/** The mark on `root`, 'damaged' when it is there but not one, undefined when there is none. */
function readMark(root: string): Mark | 'damaged' | undefined {
  let text: string;
  try {
    text = readFileSync(pkiPaths(root).restoreMark, 'utf8');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? undefined : 'damaged';
  }
  try {
    const r = MarkSchema.safeParse(JSON.parse(text));
    return r.success ? r.data : 'damaged';
  } catch {
    return 'damaged';
  }
}

/**
 * Whether the restore that made `mark` may still run: its process, if of this host, is there.
 * Another host's (a certificates folder on NFS) cannot be looked at and is taken as running.
 */
function mayRun(mark: Mark | 'damaged'): boolean {
  if (mark === 'damaged') return false;
  if (mark.host !== hostname()) return true;
  // Made before this host last started: its process is gone, whoever holds its pid now.
  if (mark.boot !== undefined && bootId() !== undefined && mark.boot !== bootId()) return false;
  // A process of that id that started at another time is not the restore's: process ids are
  // reused, and a killed restore's mark would otherwise keep every command out for as long as an
  // unrelated process held its id.
  if (mark.procStart !== undefined) {
    const now = processStart(mark.pid);
    if (now !== undefined) return now === mark.procStart;
  }
  try {
    process.kill(mark.pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // another user's process
  }
}

function markError(root: string, mark: Mark | 'damaged'): FieldStreamError {
  const file = pkiPaths(root).restoreMark;
  if (mark === 'damaged' || !mayRun(mark)) {
    const who = mark === 'damaged' ? '' : ` (pid ${mark.pid}, started ${mark.startedAt})`;
    return new FieldStreamError(
      'PKI_RESTORE_RUNNING',
      `A restore of ${root} was killed while it wrote it${who}: some files are restored and others not (${file}). Nothing was changed; run it again to finish it (fieldstream-admin restore ARCHIVE), then this command.`,
    );
  }
  return new FieldStreamError(
    'PKI_RESTORE_RUNNING',
    `A restore is writing ${root} (pid ${mark.pid} on ${mark.host}, since ${mark.startedAt}): nothing was changed; run this command again once it is done. If no restore runs there, it was killed: run it again to finish it, or remove ${file}.`,
  );
}

/**
 * The restore mark in `dir` (any folder a restore marks, scripts/admin/restore-marks.ts): none, one
 * of a restore that may still run, or one of a killed restore (or damaged).
 */
export function restoreMarkIn(dir: string): 'none' | 'running' | 'killed' {
  const mark = readMark(dir);
  return mark === undefined ? 'none' : mayRun(mark) ? 'running' : 'killed';
}

/** The text of this process's restore mark: who, where, since when. */
export function restoreMarkText(): string {
  return JSON.stringify({ pid: process.pid, host: hostname(), startedAt: new Date().toISOString(), boot: bootId(), procStart: processStart(process.pid) }) + '\n';
}

/** Throws PKI_RESTORE_RUNNING when a restore's mark is on `root`; called under the admin commands' locks. */
export function refuseWhileRestoring(root: string): void {
  const mark = readMark(root);
  if (mark !== undefined) throw markError(root, mark);
}

/**
 * Marks `root` as being restored by this process: under .revocations.lock, then .tokens.lock (the
 * order every command takes them in), each waited for as long as a command may hold it, so that
 * the command holding one finishes first (PKI_BUSY past that; `onWait` is told of each wait). A
 * mark of a restore that may still run refuses (PKI_RESTORE_RUNNING); a killed one's is taken over.
 * Makes `root` when missing. Returns what takes the mark away (and the folders made for it, left
 * empty by a restore that failed and put everything back).
 */
export function markRestoring(root: string, onWait?: (lock: string) => void): () => void {
  const made = mkdirSync(root, { recursive: true, mode: 0o755 });
  const unmake = () => {
    if (made === undefined) return;
    try {
      for (let d = resolve(root); d !== dirname(d); d = dirname(d)) {
        rmdirSync(d); // not empty: the restore's files are there, and the folder stays
        if (d === resolve(made)) break;
      }
    } catch {
      // kept
    }
  };
  const p = pkiPaths(root);
  const busy = (lock: string) => () =>
    new FieldStreamError('PKI_BUSY', `${lock} stayed in place for ${TIMINGS.adminLockWaitMs} ms: another command is revoking a device, issuing a certificate or changing the tokens file; nothing was restored: restore again once it is done.`);
  const locked = (lock: string, fn: () => void) => withPkiLock(root, lock, TIMINGS.adminLockWaitMs, busy(lock), fn, () => onWait?.(lock));
  try {
    locked(p.revocationsLock, () =>
      locked(p.tokensLock, () => {
        const mark = readMark(root);
        if (mark !== undefined && mayRun(mark)) throw markError(root, mark);
        replaceFileDurablySync(p.restoreMark, restoreMarkText(), 0o600);
      }),
    );
  } catch (err) {
    unmake();
    throw err;
  }
  return () => {
    removeFileDurablySync(p.restoreMark);
    unmake();
  };
}

/**
 * Refuses (PKI_BUSY) to record or write what `caPem` signed once ca/ca.crt is another CA's: called
 * under the revocation lock by what loaded the CA before it (a key takes a while to make). A
 * restore, or a --new-ca, run start to end in between put another CA in place, and the certificate
 * written into that folder was of none of its CAs.
 */
export function refuseChangedCa(root: string, caPem: string): void {
  const p = pkiPaths(root);
  let now: string | undefined;
  try {
    now = readFileSync(p.caCert, 'utf8');
  } catch {
    now = undefined;
  }
  if (now !== caPem) {
    throw new FieldStreamError('PKI_BUSY', `The CA in ${p.caDir} changed while the certificate was made (a restore or a new CA meanwhile); nothing was written: run the command again.`);
  }
}
