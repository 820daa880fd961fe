import { realpathSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { constants, gunzipSync } from 'node:zlib';
import * as tar from 'tar';
import { FieldStreamError } from '../../shared/errors.ts';
import { MANIFEST_NAME } from './backup-manifest.ts';
import type { AdminPaths } from './paths.ts';

/**
 * Where a backup's archive may go: never into what the backup reads. Every file of the state
 * folder is taken as state (backup-manifest.ts, classify), so an archive written there was taken
 * into the next backup, each holding the one before it; one written over the command journal
 * (--force) replaced the journal; and either sat on the disk it is meant to outlive, beside the keys.
 * Refused rather than skipped: an archive the next backup leaves out would still be there, beside
 * the state, where an operator believes it safe.
 */

/** `path` with the links of the part of it that exists resolved; what does not exist yet, as named. */
function realPathOf(path: string): string {
  const rest: string[] = [];
  for (let at = resolve(path); ; at = dirname(at)) {
    try {
      return join(realpathSync(at), ...rest.reverse());
    } catch {
      // not there yet (or not readable): its parent says where it would be
    }
    if (dirname(at) === at) return resolve(path);
    rest.push(basename(at));
  }
}

/** Whether `child` is `parent` or below it. */
function isWithin(child: string, parent: string): boolean {
  const rel = relative(parent, child);
  return rel === '' || (rel !== '..' && !rel.startsWith('../') && !isAbsolute(rel));
}

/**
 * Refuses (BACKUP_OUTPUT_IN_SOURCE) an archive path inside the certificates folder or the state
 * folder, or at the command journal, whatever links lead there. The archive's own name is not
 * resolved: the rename that puts it in place replaces a link there, not what it points to.
 */
export function refuseOutputInSource(paths: AdminPaths, out: string): void {
  const target = join(realPathOf(dirname(out)), basename(out));
  const journal = join(realPathOf(dirname(paths.commandState)), basename(paths.commandState));
  if (target === journal || target === realPathOf(paths.commandState)) {
    throw new FieldStreamError('BACKUP_OUTPUT_IN_SOURCE', `${out} is the command journal (COMMAND_STATE_PATH, ${paths.commandState}): the archive would replace it. Nothing was written: write the archive outside the folders the backup reads, on another disk or host.`);
  }
  for (const [setting, dir, why] of [
    ['DISTRIBUTOR_STATE_DIR', paths.stateDir, 'every file there is taken into the next backup as state, so each archive would hold the one before it'],
    ['CERTS_DIR', paths.certsDir, 'the archive, with every private key in it, would sit beside the keys, on the disk it is meant to outlive, and could take the place of a file the folder is read for'],
  ] as const) {
    if (isWithin(target, realPathOf(dir))) {
      throw new FieldStreamError('BACKUP_OUTPUT_IN_SOURCE', `${out} is inside ${dir} (${setting}), which the backup reads: ${why}. Nothing was written: write the archive outside ${dir}, on another disk or host.`);
    }
  }
}

/** Compressed bytes read to find an archive's first header: enough for a gzip member's start, little to decompress. */
const HEAD_PROBE_BYTES = 4096;

/** Whether `data` is a FieldStream backup archive: gzip, its first entry the manifest. */
function isBackupArchive(data: Buffer): boolean {
  if (data.length < 2 || data[0] !== 0x1f || data[1] !== 0x8b) return false;
  try {
    const head = gunzipSync(data.subarray(0, HEAD_PROBE_BYTES), { finishFlush: constants.Z_SYNC_FLUSH });
    return head.length >= 512 && new tar.Header(head.subarray(0, 512)).path === MANIFEST_NAME;
  } catch {
    return false;
  }
}

/**
 * Refuses (BACKUP_OUTPUT_IN_SOURCE) a backup archive among the state folder's files: one written
 * there by a version that did not refuse it, which every backup since has taken in.
 */
export function refuseArchiveAsState(file: string, stateDir: string, data: Buffer): void {
  if (!isBackupArchive(data)) return;
  throw new FieldStreamError('BACKUP_OUTPUT_IN_SOURCE', `${file} is a backup archive in ${stateDir} (DISTRIBUTOR_STATE_DIR), written there earlier: taken as state, each backup would hold it, and the ones before it. Nothing was written: move it out of ${stateDir}, then back up.`);
}
