import { createHash } from 'node:crypto';
import { chmodSync, createReadStream, closeSync, existsSync, fsyncSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import * as tar from 'tar';
import { FieldStreamError } from '../../shared/errors.ts';
import type { AdminPaths } from './paths.ts';
import {
  archiveName,
  BACKUP_FORMAT,
  BACKUP_VERSION,
  classify,
  COMMAND_JOURNAL_NAME,
  FILES_PREFIX,
  KINDS,
  MANIFEST_NAME,
  type Kind,
  type Manifest,
  type ManifestFile,
  type Root,
} from './backup-manifest.ts';

/** The sha256 of a file, read in chunks (an archive may be large). */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** A file to back up: where it is, and where it goes in the archive. */
interface Source {
  root: Root;
  path: string;
  kind: Kind;
  file: string;
}

/** Regular files below `dir`, as "/"-separated paths; links are not followed (a backup takes what is there, not what it points to). */
function walk(dir: string, prefix = ''): string[] {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const e of entries) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...walk(join(dir, e.name), rel));
    else if (e.isFile()) out.push(rel);
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
  if (existsSync(paths.commandState) && lstatSync(paths.commandState).isFile()) {
    sources.push({ root: 'command-state', path: COMMAND_JOURNAL_NAME, kind: 'command-journal', file: paths.commandState });
  }
  return sources;
}

export interface BackupResult {
  file: string;
  manifest: Manifest;
  /** sha256 of the archive itself, to keep apart from it (restore --expect-sha256) */
  sha256: string;
}

/**
 * Writes one archive of everything that must survive the loss of the internal server (see
 * classify() for the list), with a manifest giving each file's size, mode and sha256. The archive
 * is mode 0600 from its first byte: it holds private keys. It is written beside its final name and
 * renamed into place, so an interrupted backup never leaves a partial archive under that name.
 *
 * Each file is read once, and the bytes read are the bytes hashed and archived: a file the
 * services change meanwhile (a replay window, the journal) is taken whole as it was at that read.
 */
export async function createBackup(paths: AdminPaths, out: string, o: { force?: boolean; now?: Date } = {}): Promise<BackupResult> {
  if (existsSync(out) && !o.force) throw new FieldStreamError('BACKUP_EXISTS', `${out} exists already; pass --force to replace it.`);
  const sources = collectSources(paths);
  if (sources.length === 0) {
    throw new FieldStreamError('BACKUP_EMPTY', `Nothing to back up in ${paths.certsDir}, ${paths.stateDir} or ${paths.commandState}.`);
  }
  const staging = mkdtempSync(join(tmpdir(), 'fieldstream-backup-'));
  const tmp = `${out}.tmp-${process.pid}`;
  try {
    const files: ManifestFile[] = [];
    for (const s of sources) {
      const data = readFileSync(s.file);
      const mode = lstatSync(s.file).mode & 0o777;
      const staged = join(staging, ...archiveName(s).split('/'));
      mkdirSync(dirname(staged), { recursive: true, mode: 0o700 });
      writeFileSync(staged, data, { mode: 0o600 });
      chmodSync(staged, mode | 0o400); // the archive's header carries the mode too; tar must still read it
      files.push({ root: s.root, path: s.path, kind: s.kind, size: data.length, mode, sha256: createHash('sha256').update(data).digest('hex') });
    }
    const contents = Object.fromEntries(KINDS.map((k) => [k, files.filter((f) => f.kind === k).length]).filter(([, n]) => (n as number) > 0));
    const manifest: Manifest = {
      format: BACKUP_FORMAT,
      version: BACKUP_VERSION,
      created: (o.now ?? new Date()).toISOString(),
      source: { certs: paths.certsDir, 'distributor-state': paths.stateDir, 'command-state': paths.commandState },
      contents,
      files,
    };
    writeFileSync(join(staging, MANIFEST_NAME), JSON.stringify(manifest, null, 1) + '\n', { mode: 0o600 });

    mkdirSync(dirname(out), { recursive: true });
    closeSync(openSync(tmp, 'w', 0o600)); // created private before any byte is written to it
    chmodSync(tmp, 0o600);
    // portable: no user or group names, ids or access times of this machine in the archive.
    await tar.c({ gzip: true, file: tmp, cwd: staging, portable: true }, [MANIFEST_NAME, FILES_PREFIX.slice(0, -1)]);
    const fd = openSync(tmp, 'r+');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    chmodSync(tmp, 0o600);
    renameSync(tmp, out);
    return { file: out, manifest, sha256: await sha256File(out) };
  } finally {
    rmSync(staging, { recursive: true, force: true });
    rmSync(tmp, { force: true });
  }
}
