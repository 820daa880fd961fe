import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import type { AdminPaths } from './paths.ts';
import { errnoOf, removeStaleTemps } from './backup.ts';
import { archiveName, contentProblem, isContentChecked, isPrivateDir, type Manifest, type ManifestFile } from './backup-manifest.ts';
import { readArchiveOnce, unpackFiles, verifyArchive } from './restore-archive.ts';
import { BACKUP_BOUNDS, type BackupBounds } from './backup-bounds.ts';
import { RESTORE_LEFTOVERS, RestoreWriter } from './restore-write.ts';
import { markRestoring } from '../../pki/restore-mark.ts';
import { foldersToMark, halfRestoredFolders, markFolders } from './restore-marks.ts';
import { WINDOWS_FILE } from '../../internal-network/distributor/security/replay-store.ts';
import { lockCommandState } from '../../internal-network/command-api/state-lock.ts';
import { slotHolder } from '../../internal-network/distributor/state-lease.ts';
import { TIMINGS } from '../../shared/limits.ts';

export interface RestoreOptions {
  /** overwrite files that exist with other content */
  force?: boolean;
  /** the archive's own sha256, as printed by the backup and kept apart from it */
  expectSha256?: string;
  /**
   * Called once the archive has been read (and its sha256 checked), before it is unpacked. For
   * tests: whatever happens to the file from then on (replaced, changed) must change nothing.
   */
  afterRead?: () => void | Promise<void>;
  /** Told of each lock of the certificates folder found held, before the restore waits for it. */
  onWait?: (lock: string) => void;
  /**
   * Called once the certificates folder is marked as being restored (pki/restore-mark.ts; when the
   * archive holds files of it), before anything is compared or written. For tests: what the
   * certificate commands do meanwhile.
   */
  whileMarked?: () => void | Promise<void>;
  /** Called after each file is written. For tests: a restore killed midway (SIGKILL). */
  afterWrite?: (target: string, count: number) => void;
  /** The bounds the archive is checked against (those of shared/limits.ts unless given: for tests). */
  bounds?: BackupBounds;
}

export interface RestoreResult {
  manifest: Manifest;
  /** target paths written */
  written: string[];
  /** target paths that held the archive's content already */
  unchanged: string[];
  /** replay window files of a newer generation than the archive's, removed (with `force`; newerGenerations) */
  setAside: string[];
  /**
   * Folders still marked once this restore is done: another restore, killed, left them half
   * restored, and this archive held nothing of them (restore-marks.ts, halfRestoredFolders).
   */
  stillHalfRestored: string[];
}

/** What the writing of a restore gives; what is found after it is added by restoreBackup. */
type Written = Omit<RestoreResult, 'stillHalfRestored'>;

/** Where a file of the archive goes in this installation; never outside its root. */
export function targetOf(paths: AdminPaths, f: Pick<ManifestFile, 'root' | 'path'>): string {
  if (f.root === 'command-state') return paths.commandState;
  const root = f.root === 'certs' ? paths.certsDir : paths.stateDir;
  const target = resolve(root, ...f.path.split('/'));
  const rel = relative(root, target);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) throw new FieldStreamError('BACKUP_UNSAFE_PATH', `${f.root}/${f.path} would be written outside ${root}.`);
  return target;
}

/**
 * Refuses, before anything is written, an archive whose files read with a schema (the CA's logs
 * and CRL number, fieldstream-pki.json, the device tokens file) do not read: their sha256 is the
 * manifest's, but the manifest is the archive's own word. Written, every later revocation, issue or
 * `devices` command stopped on them (contentProblem).
 */
async function refuseDamagedContent(bytes: Buffer, manifest: Manifest, bounds: BackupBounds): Promise<void> {
  const checked = new Map(manifest.files.filter((f) => isContentChecked(f.root, f.path)).map((f) => [archiveName(f), f]));
  await unpackFiles(bytes, checked, (f, data) => {
    const problem = contentProblem(f.root, f.path, data);
    if (problem !== undefined) throw new FieldStreamError('BACKUP_INVALID', `${f.root}/${f.path} in the archive is damaged (${problem}); nothing was restored.`);
  }, bounds);
}

/**
 * Refuses a target reached through a symbolic link below its root: the check of targetOf is of the
 * path's text, and a folder below the certificates or state folder that is a link (one a service's
 * user can make in its own state folder) would take the restored keys, the files a restore chmods
 * and the leftovers it removes, wherever it points. The root itself may be a link (the operator's
 * setting); a folder missing is made by the restore, a file in the way fails its write.
 */
function refuseLinkedFolders(paths: AdminPaths, f: Pick<ManifestFile, 'root' | 'path'>): void {
  if (f.root === 'command-state') return;
  const root = f.root === 'certs' ? paths.certsDir : paths.stateDir;
  const segments = f.path.split('/').slice(0, -1);
  for (let i = 1; i <= segments.length; i++) {
    const dir = join(root, ...segments.slice(0, i));
    let st;
    try {
      st = lstatSync(dir);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') return;
      throw new FieldStreamError('BACKUP_UNREADABLE', `Cannot read ${dir} (${errnoOf(err) ?? (err as Error).message}); nothing was restored.`, undefined, { cause: err });
    }
    if (st.isSymbolicLink()) {
      throw new FieldStreamError('BACKUP_UNSAFE_PATH', `${dir} is a symbolic link: a restore writes below ${root} only, never through a link; nothing was restored (make it a folder, or point the setting at the real one).`);
    }
    if (!st.isDirectory()) return;
  }
}

/**
 * The mode a file is restored with: the archive's word (a backup of another machine, or a hostile
 * archive) never makes a private key readable by others, nor anything executable or unreadable by
 * its owner. A key (`*.key`, the device signing keys) is 0600 at most; anything else gives group
 * and others at most read.
 */
export function restoredMode(f: ManifestFile): number {
  const secret = f.path.endsWith('.key') || f.path.endsWith('.token') || f.kind === 'device-keys' || f.kind === 'device-tokens' || f.kind === 'stored-feed-key';
  return secret ? 0o600 : (f.mode & 0o644) | 0o600;
}

/** The folders a file's folder is made of below its root that are private (0700), as paths. */
function privateDirsOf(paths: AdminPaths, f: ManifestFile): Set<string> {
  if (f.root !== 'certs') return new Set();
  const segments = f.path.split('/').slice(0, -1);
  const dirs = segments.map((_, i) => segments.slice(0, i + 1).join('/')).filter((rel) => isPrivateDir(f.root, rel));
  return new Set(dirs.map((rel) => join(paths.certsDir, ...rel.split('/'))));
}

/** A replay window file in the archive: its folder below the state folder, and its name. */
const REPLAY_WINDOWS_PATH = /^((?:.+\/)?replay)\/([^/]+)$/;

/**
 * The replay window folders the archive restores (replay-store.ts): each as its folder here and the
 * archive's newest generation in it.
 */
function replayFolders(paths: AdminPaths, manifest: Manifest): Map<string, number> {
  const newest = new Map<string, number>();
  for (const f of manifest.files) {
    const m = f.root === 'distributor-state' ? REPLAY_WINDOWS_PATH.exec(f.path) : null;
    const generation = m ? WINDOWS_FILE.exec(m[2] as string) : null;
    if (!m || !generation) continue;
    const dir = join(paths.stateDir, ...(m[1] as string).split('/'));
    newest.set(dir, Math.max(newest.get(dir) ?? 0, Number(generation[1])));
  }
  return newest;
}

/** The names in `dir`, none when it does not exist. */
function namesIn(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') return [];
    throw new FieldStreamError('BACKUP_UNREADABLE', `Cannot read ${dir} (${errnoOf(err) ?? (err as Error).message}); nothing was restored.`, undefined, { cause: err });
  }
}

/**
 * The replay window files here of a newer generation than the archive's newest in their folder. A
 * distributor loads the newest intact snapshot and the journals from the generation before it on
 * (replay-store.ts), and begins a generation at every start: one started here before the restore
 * (a compose host brought up first, its distributor restarted) left newer ones, and the archive's
 * windows restored beside them were never read: every message they refuse was taken once more.
 */
function newerGenerations(folders: Map<string, number>): string[] {
  const newer: string[] = [];
  for (const [dir, generation] of folders) {
    for (const name of namesIn(dir)) {
      const m = WINDOWS_FILE.exec(name);
      if (m && Number(m[1]) > generation) newer.push(join(dir, name));
    }
  }
  return newer.sort();
}

interface Step {
  f: ManifestFile;
  target: string;
  mode: number;
}

/**
 * Whether `target` holds the file of the manifest already; absent is no; unreadable is an error.
 * An empty folder is absent: what Docker makes where a file it bind-mounts is missing (ca.crt,
 * ca.crl, revoked-devices.txt on a compose host started before its restore). Taken for state in
 * the way, it stopped the restore (BACKUP_STATE_EXISTS), and --force then failed on it (EPERM).
 */
function inPlace(s: Step): boolean | 'absent' {
  try {
    const st = lstatSync(s.target);
    if (st.isDirectory() && readdirSync(s.target).length === 0) return 'absent';
    return st.isFile() && st.size === s.f.size && createHash('sha256').update(readFileSync(s.target)).digest('hex') === s.f.sha256;
  } catch (err) {
    // ENOTDIR: a file where a folder above it should be; the write finds it (and the restore is undone)
    if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') return 'absent';
    throw new FieldStreamError('BACKUP_UNREADABLE', `Cannot read ${s.target} to compare it with the archive (${errnoOf(err) ?? (err as Error).message}); nothing was restored.`, undefined, { cause: err });
  }
}

/**
 * Restores a backup onto this installation, in three steps.
 *
 * 1. Read: the archive file is read once, whole, into memory (readArchiveOnce) and its sha256
 *    checked when given; the file is never opened again.
 * 2. Check, writing nothing anywhere: every entry of those bytes against the manifest (first in
 *    the archive, schema, limits): its name, type, declared size before its content is read,
 *    content and sha256 (verifyArchive); then the installation: a file that exists with other
 *    content is overwritten only with `force`.
 * 3. Write: the same bytes unpacked again, one file at a time, each checked once more, written
 *    durably and with the mode it had (0600 for keys); a failure midway puts back every file as it
 *    was (RestoreWriter, which also says what a kill midway leaves and why running again finishes).
 *    The comparison with the installation and the writing are made with the certificates folder
 *    marked as being restored (pki/restore-mark.ts): the commands that issue, revoke or back up
 *    refuse meanwhile, and the one at work when the mark is made finishes first.
 */
export async function restoreBackup(paths: AdminPaths, archive: string, o: RestoreOptions = {}): Promise<RestoreResult> {
  const bounds = o.bounds ?? BACKUP_BOUNDS;
  const bytes = readArchiveOnce(archive, bounds);
  if (o.expectSha256 !== undefined) {
    const actual = createHash('sha256').update(bytes).digest('hex');
    if (actual !== o.expectSha256.toLowerCase()) {
      throw new FieldStreamError('BACKUP_TAMPERED', `The archive's sha256 is ${actual}, not the ${o.expectSha256} expected.`);
    }
  }
  await o.afterRead?.();
  const manifest = await verifyArchive(bytes, bounds);
  await refuseDamagedContent(bytes, manifest, bounds);
  const result = await restoreMarked(paths, bytes, manifest, o);
  return { ...result, stillHalfRestored: halfRestoredFolders(paths) };
}

/** Steps 2 (the installation) and 3 of restoreBackup, under the journal's lock and the restore's marks. */
async function restoreMarked(paths: AdminPaths, bytes: Buffer, manifest: Manifest, o: RestoreOptions): Promise<Written> {
  const steps: Step[] = manifest.files.map((f) => ({ f, target: targetOf(paths, f), mode: restoredMode(f) }));
  for (const s of steps) refuseLinkedFolders(paths, s.f);
  refuseHeldSlots(paths, manifest);
  // The command journal's lock (command-api/state-lock.ts), held while it is written: a command API
  // running on it would go on from the commands it holds, and its next compaction would write the
  // journal again without the restored ones.
  const journalLock = manifest.files.some((f) => f.root === 'command-state') ? await lockJournal(paths.commandState) : undefined;
  try {
    // From here to the last file, no certificate, token or revocation is made in the certificates
    // folder, and what is there is compared and written as it stays (restore-mark.ts).
    const unmark = manifest.files.some((f) => f.root === 'certs') ? markCertsDir(paths.certsDir, o.onWait) : () => undefined;
    let halfRestored = false;
    try {
      // The folders the services read, marked before anything is written (restore-marks.ts); and a
      // distributor that took a slot since the check above, before seeing the mark, refuses the
      // restore now: one that takes it from here on sees the mark and does not start.
      const marks = markFolders(paths, foldersToMark(paths, manifest));
      let result: Written;
      try {
        refuseHeldSlots(paths, manifest);
        await o.whileMarked?.();
        result = await writeSteps(paths, bytes, manifest, steps, o, () => (halfRestored = true));
      } catch (err) {
        // Kept by a restore that could not put back what it wrote: the services refuse to start.
        if (!halfRestored) marks.undone();
        throw err;
      }
      marks.completed();
      return result;
    } finally {
      // Kept by a restore that could not put back what it wrote: the commands refuse until it is run again.
      if (!halfRestored) unmark();
    }
  } finally {
    journalLock?.release();
  }
}

/** The slot of the distributor state folder (state-lease.ts) each file of the archive belongs to. */
const SLOT_PATH = /^instances\/(\d{1,9})\//;

/**
 * Refuses, before anything is written, to restore the replay windows of a slot a distributor holds
 * (its lease renewed within TIMINGS.stateLeaseExpiryMs): it keeps its windows in memory and its
 * journal open, so it would never read the restored ones, append to a journal renamed away, and at
 * its next compaction or start leave the restored windows or its own behind. As the command API's
 * lock keeps a restore off its journal (lockJournal).
 */
function refuseHeldSlots(paths: AdminPaths, manifest: Manifest): void {
  const slots = new Set(manifest.files.filter((f) => f.root === 'distributor-state').map((f) => Number(SLOT_PATH.exec(f.path)?.[1] ?? 1)));
  for (const slot of [...slots].sort((a, b) => a - b)) {
    const held = slotHolder(paths.stateDir, slot);
    if (!held) continue;
    const who = held.unreadable !== undefined
      ? `cannot be read (${errnoOf(held.unreadable) ?? String(held.unreadable)}), so it is not known to be free`
      : `names process ${held.pid ?? '?'} on ${held.host ?? '?'}, renewed ${Math.round(held.ageMs / 1000)} s ago`;
    throw new FieldStreamError(
      'BACKUP_STATE_IN_USE',
      `A distributor holds the replay windows of ${dirname(held.path)}: its lease ${held.path} ${who}. Restored under it, they would never be read, and its own would be lost. Stop the distributors, then restore (a killed one's lease is free ${TIMINGS.stateLeaseExpiryMs / 1000} s after its last renewal); nothing was restored.`,
    );
  }
}

/** Takes the command journal's lock; one a command API holds refuses the restore (API_STATE_IN_USE). */
async function lockJournal(journal: string): Promise<{ release(): void }> {
  try {
    return await lockCommandState(journal, () => undefined, 'Stop the command API, then restore; nothing was restored.');
  } catch (err) {
    if (isFieldStreamError(err)) throw err;
    throw new FieldStreamError('BACKUP_WRITE_FAILED', `Cannot lock the command journal ${journal} (${errnoOf(err) ?? (err as Error).message}); nothing was restored.`, undefined, { cause: err });
  }
}

/** Marks the certificates folder as being restored; a failure to (a folder this user cannot write) restores nothing. */
function markCertsDir(certsDir: string, onWait?: (lock: string) => void): () => void {
  try {
    return markRestoring(certsDir, onWait);
  } catch (err) {
    if (isFieldStreamError(err)) throw err;
    throw new FieldStreamError('BACKUP_WRITE_FAILED', `Cannot mark ${certsDir} as being restored (${errnoOf(err) ?? (err as Error).message}); nothing was restored.`, undefined, { cause: err });
  }
}

/** The restore's comparison and writing (step 3 of restoreBackup), the certificates folder marked. */
async function writeSteps(paths: AdminPaths, bytes: Buffer, manifest: Manifest, steps: Step[], o: RestoreOptions, halfRestored: () => void): Promise<Written> {
  const unchanged: Step[] = [];
  const conflicts: string[] = [];
  for (const s of steps) {
    const state = inPlace(s);
    if (state === true) unchanged.push(s);
    else if (state === false) conflicts.push(s.target);
  }
  if (conflicts.length > 0 && !o.force) {
    throw new FieldStreamError(
      'BACKUP_STATE_EXISTS',
      `${conflicts.length} file(s) exist with other content, e.g. ${conflicts.slice(0, 3).join(', ')}; nothing was restored (--force overwrites them).`,
    );
  }
  const folders = replayFolders(paths, manifest);
  const newer = newerGenerations(folders);
  if (newer.length > 0 && !o.force) {
    throw new FieldStreamError(
      'BACKUP_STATE_EXISTS',
      `${newer.length} replay window file(s) of a newer generation than the archive's, e.g. ${newer.slice(0, 3).join(', ')} (a distributor started here before the restore), would be read instead of the restored windows; nothing was restored (--force sets them aside).`,
    );
  }

  const keep = new Set(unchanged);
  const toWrite = new Map(steps.filter((s) => !keep.has(s)).map((s) => [archiveName(s.f), s]));
  const written: string[] = [];
  const writer = new RestoreWriter();
  try {
    // What a restore killed midway left beside these files (see RestoreWriter).
    const byDir = new Map<string, Set<string>>();
    for (const s of steps) byDir.set(dirname(s.target), (byDir.get(dirname(s.target)) ?? new Set()).add(basename(s.target)));
    // And what it left of the newer replay windows it was setting aside (below), by their names.
    for (const dir of folders.keys()) {
      const bases = byDir.get(dir) ?? new Set<string>();
      for (const name of namesIn(dir)) {
        const base = /^windows-\d{1,15}\.(?:snap|log)/.exec(name)?.[0];
        if (base !== undefined) bases.add(base);
      }
      byDir.set(dir, bases);
    }
    for (const [dir, bases] of byDir) removeStaleTemps(dir, bases, RESTORE_LEFTOVERS);
    for (const s of unchanged) writer.setMode(s.target, s.mode);
    await unpackFiles(bytes, new Map([...toWrite].map(([name, s]) => [name, s.f])), (f, data) => {
      const s = toWrite.get(archiveName(f)) as Step;
      writer.mkdirs(dirname(s.target), privateDirsOf(paths, f));
      writer.replace(s.target, data, s.mode);
      written.push(s.target);
      o.afterWrite?.(s.target, written.length);
    }, o.bounds);
    if (written.length !== toWrite.size) throw new Error(`${toWrite.size - written.length} file(s) of the manifest were not found on the second reading`);
    for (const file of newer) writer.remove(file);
  } catch (err) {
    const notPutBack = writer.rollback();
    if (notPutBack.length > 0) halfRestored();
    const at = written.length < toWrite.size ? ` after ${written.length} of ${toWrite.size} files` : '';
    const undone = notPutBack.length === 0
      ? 'every file written was put back as it was'
      : `these could not be put back: ${notPutBack.slice(0, 5).join(', ')}${notPutBack.length > 5 ? ` and ${notPutBack.length - 5} more` : ''}; some files are restored and others not: run the restore again to finish it`;
    if (isFieldStreamError(err) && notPutBack.length === 0) throw err;
    throw new FieldStreamError('BACKUP_WRITE_FAILED', `The restore failed${at}: ${(err as Error).message}; ${undone}.`, undefined, { cause: err });
  }
  writer.commit();
  return { manifest, written, unchanged: unchanged.map((s) => s.target), setAside: newer };
}
