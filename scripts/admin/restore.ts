import { createHash } from 'node:crypto';
import { chmodSync, closeSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import * as tar from 'tar';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import type { AdminPaths } from './paths.ts';
import { sha256File } from './backup.ts';
import {
  archiveName,
  BACKUP_VERSION,
  classify,
  FILES_PREFIX,
  isPrivateDir,
  isSafeRelativePath,
  MANIFEST_NAME,
  ManifestHeadSchema,
  ManifestSchema,
  type Manifest,
  type ManifestFile,
} from './backup-manifest.ts';

/** An archive entry unpacked to the staging folder: its size and sha256 as read. */
interface Staged {
  file: string;
  size: number;
  sha256: string;
}

export interface RestoreOptions {
  /** overwrite files that exist with other content */
  force?: boolean;
  /** the archive's own sha256, as printed by the backup and kept apart from it */
  expectSha256?: string;
}

export interface RestoreResult {
  manifest: Manifest;
  /** target paths written */
  written: string[];
  /** target paths that held the archive's content already */
  unchanged: string[];
}

/**
 * Unpacks every entry into a private staging folder, under a number rather than its name (so no
 * name can reach outside it), hashing as it goes. Refuses, before anything is written to the
 * installation: a name that is absolute, holds "..", or lies outside manifest.json and files/;
 * a link, device or other non-file; a name twice; more files or bytes than a backup can hold.
 */
async function unpack(archive: string, staging: string): Promise<{ manifest: Buffer | undefined; entries: Map<string, Staged> }> {
  const entries = new Map<string, Staged>();
  let manifest: Buffer | undefined;
  let refused: FieldStreamError | undefined;
  let total = 0;
  const refuse = (err: FieldStreamError) => {
    refused ??= err;
  };
  const onReadEntry = (entry: tar.ReadEntry) => {
    const name = entry.path;
    const plain = name.endsWith('/') && entry.type === 'Directory' ? name.slice(0, -1) : name;
    if (refused) return;
    if (!isSafeRelativePath(plain)) return refuse(new FieldStreamError('BACKUP_UNSAFE_PATH', `The archive holds an entry named ${JSON.stringify(name)}, outside its folder.`));
    if (entry.type === 'Directory') return;
    if (entry.type !== 'File' && entry.type !== 'OldFile' && entry.type !== 'ContiguousFile') {
      return refuse(new FieldStreamError('BACKUP_UNSAFE_PATH', `The archive holds ${JSON.stringify(name)} as a ${entry.type}${entry.linkpath ? ` to ${JSON.stringify(entry.linkpath)}` : ''}; a backup holds plain files only.`));
    }
    if (entries.has(plain) || (plain === MANIFEST_NAME && manifest)) return refuse(new FieldStreamError('BACKUP_INVALID', `The archive holds ${JSON.stringify(name)} twice.`));
    if (plain === MANIFEST_NAME) {
      const chunks: Buffer[] = [];
      let size = 0;
      entry.on('data', (c: Buffer) => {
        size += c.length;
        if (size > LIMITS.backupManifestMaxBytes) return refuse(new FieldStreamError('BACKUP_INVALID', `The manifest is larger than ${LIMITS.backupManifestMaxBytes} bytes.`));
        chunks.push(c);
      });
      entry.on('end', () => {
        manifest = Buffer.concat(chunks);
      });
      return;
    }
    if (!plain.startsWith(FILES_PREFIX)) return refuse(new FieldStreamError('BACKUP_INVALID', `The archive holds ${JSON.stringify(name)}, which a backup never holds.`));
    if (entries.size >= LIMITS.backupMaxFiles) return refuse(new FieldStreamError('BACKUP_INVALID', `The archive holds more than ${LIMITS.backupMaxFiles} files.`));
    const file = join(staging, String(entries.size));
    const fd = openSync(file, 'wx', 0o600);
    const hash = createHash('sha256');
    let size = 0;
    entries.set(plain, { file, size: 0, sha256: '' });
    entry.on('data', (c: Buffer) => {
      total += c.length;
      if (total > LIMITS.backupMaxBytes) return refuse(new FieldStreamError('BACKUP_INVALID', `The archive unpacks to more than ${LIMITS.backupMaxBytes} bytes.`));
      writeSync(fd, c);
      hash.update(c);
      size += c.length;
    });
    entry.on('end', () => {
      closeSync(fd);
      entries.set(plain, { file, size, sha256: hash.digest('hex') });
    });
  };
  try {
    // strict: a damaged header (checksum), a truncated archive or gzip stream is an error, not a
    // warning. tar's own bomb guard (a compression ratio above 1000) would refuse a real backup of
    // many empty replay windows; LIMITS.backupMaxBytes bounds what is unpacked instead.
    await tar.t({ file: archive, strict: true, maxDecompressionRatio: Infinity, onReadEntry });
  } catch (err) {
    throw new FieldStreamError('BACKUP_INVALID', `${archive} is not a readable gzip tar archive: ${(err as Error).message}`, undefined, { cause: err });
  }
  if (refused) throw refused;
  return { manifest, entries };
}

function parseManifest(raw: Buffer | undefined): Manifest {
  if (!raw) throw new FieldStreamError('BACKUP_INVALID', `The archive has no ${MANIFEST_NAME}: it is not a FieldStream backup.`);
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new FieldStreamError('BACKUP_INVALID', `${MANIFEST_NAME} is not JSON.`);
  }
  const head = ManifestHeadSchema.safeParse(value);
  if (!head.success) throw new FieldStreamError('BACKUP_INVALID', `${MANIFEST_NAME} is not the manifest of a FieldStream backup.`);
  if (head.data.version !== BACKUP_VERSION) {
    throw new FieldStreamError('BACKUP_INVALID', `The backup is of version ${head.data.version}; this version restores version ${BACKUP_VERSION}.`);
  }
  const parsed = ManifestSchema.safeParse(value);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new FieldStreamError('BACKUP_INVALID', `${MANIFEST_NAME} is not valid: ${i ? `${i.path.join('.')}: ${i.message}` : 'invalid'}.`);
  }
  for (const f of parsed.data.files) {
    if (!isSafeRelativePath(f.path)) throw new FieldStreamError('BACKUP_UNSAFE_PATH', `The manifest names ${JSON.stringify(f.path)}, outside its folder.`);
    if (classify(f.root, f.path) !== f.kind) {
      throw new FieldStreamError('BACKUP_INVALID', `The manifest names ${f.root}/${f.path} as ${f.kind}; a backup never holds that file as that.`);
    }
  }
  return parsed.data;
}

/** Where a file of the archive goes in this installation; never outside its root. */
export function targetOf(paths: AdminPaths, f: Pick<ManifestFile, 'root' | 'path'>): string {
  if (f.root === 'command-state') return paths.commandState;
  const root = f.root === 'certs' ? paths.certsDir : paths.stateDir;
  const target = resolve(root, ...f.path.split('/'));
  const rel = relative(root, target);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) throw new FieldStreamError('BACKUP_UNSAFE_PATH', `${f.root}/${f.path} would be written outside ${root}.`);
  return target;
}

/** Creates the folders above a file, the CA's and the key registry's readable by their owner only. */
function makeParents(paths: AdminPaths, f: ManifestFile, target: string): void {
  if (f.root === 'command-state') return void mkdirSync(dirname(target), { recursive: true });
  const root = f.root === 'certs' ? paths.certsDir : paths.stateDir;
  mkdirSync(root, { recursive: true });
  const segments = f.path.split('/').slice(0, -1);
  for (let i = 1; i <= segments.length; i++) {
    const rel = segments.slice(0, i).join('/');
    const dir = join(root, ...segments.slice(0, i));
    if (!existsSync(dir)) mkdirSync(dir, { mode: isPrivateDir(f.root, rel) ? 0o700 : 0o755 });
    if (isPrivateDir(f.root, rel)) chmodSync(dir, 0o700);
  }
}

/**
 * Restores a backup onto this installation. Everything is checked before anything is written: the
 * archive (and its own sha256 when given), every name in it, the manifest against its schema, each
 * file against the manifest (present, nothing extra, size and sha256), and the installation (a
 * file that exists with other content is overwritten only with `force`). Each file is then
 * written beside its place and renamed over it, with the mode it had (0600 for keys).
 */
export async function restoreBackup(paths: AdminPaths, archive: string, o: RestoreOptions = {}): Promise<RestoreResult> {
  if (!existsSync(archive)) throw new FieldStreamError('BACKUP_NOT_FOUND', `No archive at ${archive}.`);
  if (o.expectSha256 !== undefined) {
    const actual = await sha256File(archive);
    if (actual !== o.expectSha256.toLowerCase()) {
      throw new FieldStreamError('BACKUP_TAMPERED', `The archive's sha256 is ${actual}, not the ${o.expectSha256} expected.`);
    }
  }
  const staging = mkdtempSync(join(tmpdir(), 'fieldstream-restore-'));
  try {
    const { manifest: raw, entries } = await unpack(archive, staging);
    const manifest = parseManifest(raw);
    const named = new Set<string>();
    for (const f of manifest.files) {
      const name = archiveName(f);
      if (named.has(name)) throw new FieldStreamError('BACKUP_INVALID', `The manifest names ${name} twice.`);
      named.add(name);
      const staged = entries.get(name);
      if (!staged) throw new FieldStreamError('BACKUP_TAMPERED', `${name} is in the manifest but not in the archive.`);
      if (staged.size !== f.size || staged.sha256 !== f.sha256) {
        throw new FieldStreamError('BACKUP_TAMPERED', `${name} is not the file the manifest describes (size ${staged.size}, expected ${f.size}; sha256 ${staged.sha256}, expected ${f.sha256}).`);
      }
    }
    const extra = [...entries.keys()].filter((n) => !named.has(n));
    if (extra.length > 0) throw new FieldStreamError('BACKUP_TAMPERED', `The archive holds files the manifest does not name: ${extra.slice(0, 5).join(', ')}.`);

    const plan = manifest.files.map((f) => ({ f, target: targetOf(paths, f), staged: entries.get(archiveName(f)) as Staged }));
    const unchanged: string[] = [];
    const conflicts: string[] = [];
    for (const p of plan) {
      if (!existsSync(p.target)) continue;
      const st = lstatSync(p.target);
      const same = st.isFile() && st.size === p.f.size && createHash('sha256').update(readFileSync(p.target)).digest('hex') === p.f.sha256;
      if (same) unchanged.push(p.target);
      else conflicts.push(p.target);
    }
    if (conflicts.length > 0 && !o.force) {
      throw new FieldStreamError(
        'BACKUP_STATE_EXISTS',
        `${conflicts.length} file(s) exist with other content, e.g. ${conflicts.slice(0, 3).join(', ')}; nothing was restored (--force overwrites them).`,
      );
    }
    const keep = new Set(unchanged);
    const written: string[] = [];
    for (const p of plan) {
      if (keep.has(p.target)) {
        chmodSync(p.target, restoredMode(p.f));
        continue;
      }
      makeParents(paths, p.f, p.target);
      const tmp = `${p.target}.restore-${process.pid}`;
      copyFileSync(p.staged.file, tmp);
      chmodSync(tmp, restoredMode(p.f));
      // rename replaces whatever is at the target (a file, or a link, which is not followed)
      renameSync(tmp, p.target);
      written.push(p.target);
    }
    return { manifest, written, unchanged };
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

/**
 * The mode a file is restored with: the archive's word (a backup of another machine, or a hostile
 * archive) never makes a private key readable by others, nor anything executable or unreadable by
 * its owner. A key (`*.key`, the device signing keys) is 0600 at most; anything else gives group
 * and others at most read.
 */
export function restoredMode(f: ManifestFile): number {
  const secret = f.path.endsWith('.key') || f.kind === 'device-keys';
  return secret ? 0o600 : (f.mode & 0o644) | 0o600;
}
