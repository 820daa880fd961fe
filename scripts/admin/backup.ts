import { createHash } from 'node:crypto';
import { accessSync, closeSync, constants, type Dirent, existsSync, fchmodSync, fstatSync, fsyncSync, lstatSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { once } from 'node:events';
import { createGzip, gzipSync } from 'node:zlib';
import * as tar from 'tar';
import { makeDirDurablySync, processRuns, syncDirSync, writeWholeSync } from '../../shared/durable-fs.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { BACKUP_BOUNDS, type BackupBounds } from './backup-bounds.ts';
import { withDirLock } from '../../shared/dir-lock.ts';
import { refuseWhileRestoring } from '../../pki/restore-mark.ts';
import type { AdminPaths } from './paths.ts';
import { refuseHalfRestored } from '../../shared/restore-marks.ts';
import { markableFolders } from './restore-marks.ts';
import { refuseArchiveAsState, refuseOutputInSource } from './backup-output.ts';
import {
  archiveName,
  BACKUP_FORMAT,
  BACKUP_VERSION,
  classify,
  COMMAND_JOURNAL_NAME,
  contentProblem,
  KINDS,
  MANIFEST_NAME,
  type Kind,
  type Manifest,
  type ManifestFile,
  type Root,
} from './backup-manifest.ts';

/** The code of a failed system call (ENOENT, EACCES, ...), if it is one. */
export const errnoOf = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;

/** Whether a process with this id runs (this one included). */
function alive(pid: number): boolean {
  return pid === process.pid || processRuns(pid);
}

/**
 * Removes what a backup or restore killed midway (SIGKILL, a power cut) left in `dir` beside the
 * files named `bases`: a name BASE + one of `markers` + the id of a process that no longer runs. A
 * file of a live process (a backup running beside this one) is left alone. Returns what it removed.
 */
export function removeStaleTemps(dir: string, bases: ReadonlySet<string>, markers: readonly string[]): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const stale = markers.some((m) => {
      const at = name.lastIndexOf(m);
      const pid = name.slice(at + m.length);
      return at > 0 && bases.has(name.slice(0, at)) && /^[1-9][0-9]{0,9}$/.test(pid) && !alive(Number(pid));
    });
    if (!stale) continue;
    rmSync(join(dir, name), { force: true });
    removed.push(join(dir, name));
  }
  if (removed.length > 0) syncDirSync(dir);
  return removed;
}

/** The suffix of a backup's archive while it is written (then renamed to its name). */
const ARCHIVE_TMP = '.tmp-';

/** A file to back up: where it is, and where it goes in the archive. */
interface Source {
  root: Root;
  path: string;
  kind: Kind;
  file: string;
}

const linked = (path: string) =>
  new FieldStreamError('BACKUP_UNREADABLE', `${path} is a symbolic link: a backup follows none (point the setting at the real path, or copy what it holds there); nothing was written.`);

const unreadable = (what: string, err: unknown) =>
  new FieldStreamError('BACKUP_UNREADABLE', `Cannot read ${what} (${errnoOf(err) ?? (err as Error).message}): the backup would miss what it holds; nothing was written.`, undefined, { cause: err });

/**
 * Regular files below `dir`, as "/"-separated paths; links are not followed (a backup takes what
 * is there, not what it points to). A folder that does not exist is empty (a PKI without a CA, no
 * replay window yet); one that exists but cannot be read (EACCES, EIO, a path through a file) fails
 * the backup: an archive missing the CA key or the device keys must not look complete.
 */
function walk(dir: string, prefix = ''): string[] {
  let entries: Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return [];
    throw unreadable(`the folder ${dir}`, err);
  }
  const out: string[] = [];
  for (const e of entries) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...walk(join(dir, e.name), rel));
    else if (e.isFile()) out.push(rel);
    // Not followed, not skipped: a folder of keys moved elsewhere and linked back would be left out
    // of the archive without a word, and a restore would miss it.
    else if (e.isSymbolicLink()) throw linked(join(dir, e.name));
  }
  return out;
}

/** Every file a backup of these paths takes, in a stable order. */
export function collectSources(paths: AdminPaths): Source[] {
  const sources: Source[] = [];
  for (const [root, dir] of [['certs', paths.certsDir], ['distributor-state', paths.stateDir]] as const) {
    for (const path of walk(dir).sort()) {
      const kind = classify(root, path);
      if (kind) sources.push({ root, path, kind, file: join(dir, ...path.split('/')) });
    }
  }
  let journal;
  try {
    journal = lstatSync(paths.commandState);
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') throw unreadable(`the command journal ${paths.commandState}`, err);
  }
  if (journal?.isSymbolicLink()) throw linked(paths.commandState);
  if (journal?.isFile()) sources.push({ root: 'command-state', path: COMMAND_JOURNAL_NAME, kind: 'command-journal', file: paths.commandState });
  return sources;
}

/**
 * One file's bytes, mode and time, from one open of it (the bytes hashed are the bytes archived,
 * and the mode is that file's, not of one renamed over it since). Undefined when it went away since
 * it was listed (a file the services replace); any other failure is BACKUP_UNREADABLE.
 */
function readSource(file: string, bounds: BackupBounds): { data: Buffer; mode: number; mtime: Date } | undefined {
  let fd: number;
  try {
    // O_NOFOLLOW: a link put there since the listing is not followed; O_NONBLOCK: nor does a FIFO block.
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    throw unreadable(file, err);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw unreadable(file, new Error('no longer a regular file'));
    if (st.size > bounds.archiveMaxBytes) throw new FieldStreamError('BACKUP_TOO_LARGE', `${file} is larger than ${bounds.archiveMaxBytes} bytes, more than a restore reads.`);
    return { data: readFileSync(fd), mode: st.mode & 0o777, mtime: st.mtime };
  } catch (err) {
    if (isFieldStreamError(err)) throw err;
    if (errnoOf(err) === 'ERR_FS_FILE_TOO_LARGE') throw new FieldStreamError('BACKUP_TOO_LARGE', `${file} grew past what one read takes.`, undefined, { cause: err });
    throw unreadable(file, err);
  } finally {
    closeSync(fd);
  }
}

/**
 * Runs `fn` holding the locks a revocation holds (CERTS/.revocations.lock, then the tokens file's
 * CERTS/.tokens.lock, in that order, as revokeDevice takes them), so that no revocation, device
 * certificate's issue or token change runs while the certificates folder is read. Read file by file
 * beside a revocation, an archive held ca.crl from before it (read first) and ca/revoked.jsonl,
 * the revoked serials and the revoked devices from after: restored, the brokers' CRL let the
 * revoked certificate through. A folder that does not exist, or that this user cannot write (a
 * read-only copy, which no admin command of this user changes either), is read without them.
 */
function underPkiLocks<T>(certsDir: string, fn: () => T, onWait?: (lock: string) => void): T {
  try {
    if (!statSync(certsDir).isDirectory()) return fn();
    accessSync(certsDir, constants.W_OK);
  } catch {
    return fn();
  }
  const busy = (lock: string) => () => new FieldStreamError('PKI_BUSY', `${join(certsDir, lock)} stayed in place for ${TIMINGS.adminLockWaitMs} ms: another command is revoking a device, issuing a certificate or changing the tokens file; back up again once it is done.`);
  const lock = (name: string, inner: () => T) => withDirLock(join(certsDir, name), TIMINGS.adminLockWaitMs, busy(name), inner, () => onWait?.(join(certsDir, name)));
  // A folder a restore is writing (or left half written, killed) is not backed up: its CA, CRL and
  // tokens file could be of the archive restored and its devices' files of before (restore-mark.ts).
  return lock('.revocations.lock', () =>
    lock('.tokens.lock', () => {
      refuseWhileRestoring(certsDir);
      return fn();
    }),
  );
}

/**
 * Refuses (RESTORE_INCOMPLETE) when a folder a restore writes and the services read holds a
 * restore's mark (shared/restore-marks.ts): a restore is writing it, or was killed while it did, and
 * an archive of it would hold part of one state and part of another as if it were whole. The
 * certificates folder's own mark is looked for under its locks (underPkiLocks).
 */
function refuseHalfRestoredFolders(paths: AdminPaths): void {
  // The certificates folder's mark first: when a restore writes it (or was killed), it says which
  // (PKI_RESTORE_RUNNING), where the device keys' folder's mark in it could only say RESTORE_INCOMPLETE.
  let certsFolder = false;
  try {
    certsFolder = statSync(paths.certsDir).isDirectory();
  } catch {
    // none, or not readable: the backup's reading of it says so
  }
  if (certsFolder) refuseWhileRestoring(paths.certsDir);
  refuseHalfRestored(markableFolders(paths), { notDone: 'No archive was written', then: 'then back up' });
}

/** One tar entry of a regular file: a pax header first when its name does not fit ustar's fields. */
export function tarEntry(path: string, mode: number, mtime: Date, data: Buffer): Buffer {
  // No owner (as tar's `portable`): no user or group name or id of this machine in the archive.
  const header = new tar.Header({ path, mode, size: data.length, mtime, type: 'File' });
  const block = Buffer.alloc(512);
  header.encode(block, 0);
  const pax = header.needPax ? [new tar.Pax({ path, size: data.length }).encode()] : [];
  return Buffer.concat([...pax, block, data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}

/** The end of a tar archive: two empty blocks. */
const TAR_END = Buffer.alloc(1024);

export interface BackupResult {
  file: string;
  manifest: Manifest;
  /** sha256 of the archive itself, to keep apart from it (restore --expect-sha256) */
  sha256: string;
}

/**
 * Writes one archive of everything that must survive the loss of the internal server (see
 * classify() for the list), with a manifest giving each file's size, mode and sha256.
 *
 * Nothing is staged on disk: no plaintext copy of a key is ever written, so a backup killed midway
 * leaves none behind. Each file is read once, hashed and compressed at once into memory (one gzip
 * member of all the files' entries); the manifest, which must come first for a restore to check
 * every entry's size before it reads it, is then its own gzip member in front (gzip allows several
 * members in a row, read as one stream by gzip, GNU tar and node-tar). The bytes read are the bytes
 * hashed and archived: a file the services change meanwhile (a replay window, the journal) is taken
 * whole as it was at that read.
 *
 * The archive is then written beside its final name (mode 0600 from its creation: it holds private
 * keys), synced, and renamed into place, so an interrupted backup never leaves a partial archive
 * under that name. What a killed backup leaves beside it (FILE.tmp-PID, its own mode 0600) is
 * removed by the next backup to the same name.
 */
export async function createBackup(paths: AdminPaths, out: string, o: { force?: boolean; now?: Date; onWait?: (lock: string) => void; bounds?: BackupBounds } = {}): Promise<BackupResult> {
  // those of shared/limits.ts unless given (for tests): the restore's own (backup-bounds.ts)
  const bounds = o.bounds ?? BACKUP_BOUNDS;
  // before BACKUP_EXISTS: --force would not make such a path right
  refuseOutputInSource(paths, out);
  if (existsSync(out) && !o.force) throw new FieldStreamError('BACKUP_EXISTS', `${out} exists already; pass --force to replace it.`);
  refuseHalfRestoredFolders(paths);
  // The certificates folder is listed and read whole between two changes of the admin commands'
  // (see underPkiLocks); the other roots are read file by file below, as the services change them.
  const { sources, certs } = underPkiLocks(paths.certsDir, () => {
    const listed = collectSources(paths);
    return { sources: listed, certs: new Map(listed.filter((s) => s.root === 'certs').map((s) => [s, readSource(s.file, bounds)])) };
  }, o.onWait);
  if (sources.length === 0) {
    throw new FieldStreamError('BACKUP_EMPTY', `Nothing to back up in ${paths.certsDir}, ${paths.stateDir} or ${paths.commandState}.`);
  }
  if (sources.length > bounds.maxFiles) throw new FieldStreamError('BACKUP_TOO_LARGE', `${sources.length} files to back up; a restore takes at most ${bounds.maxFiles}.`);
  const created = o.now ?? new Date();

  const gzip = createGzip();
  const body: Buffer[] = [];
  let compressed = 0;
  gzip.on('data', (c: Buffer) => {
    body.push(c);
    compressed += c.length;
  });
  const tooLarge = () => new FieldStreamError('BACKUP_TOO_LARGE', `The archive would be larger than ${bounds.archiveMaxBytes} bytes, more than a restore reads.`);
  // What the archive decompresses to (every tar block), which a restore bounds too.
  let unpacked = TAR_END.length;
  const unpacksTooLarge = () => new FieldStreamError('BACKUP_TOO_LARGE', `The archive would unpack to more than ${bounds.unpackedMaxBytes} bytes, more than a restore unpacks.`);
  const add = async (bytes: Buffer) => {
    unpacked += bytes.length;
    if (unpacked > bounds.unpackedMaxBytes) throw unpacksTooLarge();
    // Waits for the compressor, so that at most one file is held uncompressed at a time.
    if (!gzip.write(bytes)) await once(gzip, 'drain');
    if (compressed > bounds.archiveMaxBytes) throw tooLarge();
  };
  const files: ManifestFile[] = [];
  let total = 0;
  try {
    for (const s of sources) {
      const read = s.root === 'certs' ? certs.get(s) : readSource(s.file, bounds);
      if (!read) continue;
      if (s.root === 'distributor-state') refuseArchiveAsState(s.file, paths.stateDir, read.data);
      const problem = contentProblem(s.root, s.path, read.data);
      if (problem !== undefined) {
        throw new FieldStreamError('BACKUP_UNREADABLE', `${s.file} is damaged (${problem}): a restore of it would stop every later revocation; mend it (docs/operations.md) and back up again. Nothing was written.`);
      }
      total += read.data.length;
      if (total > bounds.filesMaxBytes) throw new FieldStreamError('BACKUP_TOO_LARGE', `The files to back up hold more than ${bounds.filesMaxBytes} bytes, more than a restore unpacks.`);
      files.push({ root: s.root, path: s.path, kind: s.kind, size: read.data.length, mode: read.mode, sha256: createHash('sha256').update(read.data).digest('hex') });
      // the archive's header carries the mode too; it is never less than readable by its owner
      await add(tarEntry(archiveName(s), read.mode | 0o400, read.mtime, read.data));
    }
    gzip.end(TAR_END);
    await once(gzip, 'end');
  } finally {
    gzip.destroy();
  }
  if (compressed > bounds.archiveMaxBytes) throw tooLarge();
  // Again once everything is read: a restore that began to write these folders meanwhile.
  refuseHalfRestoredFolders(paths);
  if (files.length === 0) throw new FieldStreamError('BACKUP_EMPTY', `Every file to back up went away while it was read.`);

  const contents = Object.fromEntries(KINDS.map((k) => [k, files.filter((f) => f.kind === k).length]).filter(([, n]) => (n as number) > 0));
  const manifest: Manifest = {
    format: BACKUP_FORMAT,
    version: BACKUP_VERSION,
    created: created.toISOString(),
    source: { certs: paths.certsDir, 'distributor-state': paths.stateDir, 'command-state': paths.commandState },
    contents,
    files,
  };
  // The manifest counts against the bounds as the restore counts it: its own size, its entry in
  // what the archive unpacks to, its gzip member in the archive's size. Counted for the files
  // alone, an archive just within them was written and then refused by every restore.
  const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 1) + '\n', 'utf8');
  if (manifestBytes.length > bounds.manifestMaxBytes) {
    throw new FieldStreamError('BACKUP_TOO_LARGE', `The manifest of ${files.length} files would be ${manifestBytes.length} bytes, more than the ${bounds.manifestMaxBytes} a restore reads.`);
  }
  const manifestEntry = tarEntry(MANIFEST_NAME, 0o600, created, manifestBytes);
  if (unpacked + manifestEntry.length > bounds.unpackedMaxBytes) throw unpacksTooLarge();
  const head = gzipSync(manifestEntry);
  if (head.length + compressed > bounds.archiveMaxBytes) throw tooLarge();
  const archive = [head, ...body];
  return { file: writeArchive(out, archive), manifest, sha256: archive.reduce((h, c) => h.update(c), createHash('sha256')).digest('hex') };
}

/** Writes the archive's bytes to `out` whole or not at all (see createBackup). */
function writeArchive(out: string, chunks: Buffer[]): string {
  const tmp = `${out}${ARCHIVE_TMP}${process.pid}`;
  try {
    // Each folder made here synced into its parent: the archive's rename and fsync alone left a new
    // folder's entry, and the archive with it, to be lost at a power cut after the backup reported it.
    makeDirDurablySync(dirname(out));
    removeStaleTemps(dirname(out), new Set([basename(out)]), [ARCHIVE_TMP]);
    // A file left under this name is not reused: O_EXCL creates the file, 0600 from its first byte.
    rmSync(tmp, { force: true });
    const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    try {
      fchmodSync(fd, 0o600); // whatever the umask
      for (const c of chunks) writeWholeSync(fd, c, tmp);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, out);
    syncDirSync(dirname(out));
    return out;
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new FieldStreamError('BACKUP_WRITE_FAILED', `Cannot write the archive ${out} (${errnoOf(err) ?? (err as Error).message}); no archive was written.`, undefined, { cause: err });
  }
}
