import { createHash, type Hash } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import * as tar from 'tar';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { BACKUP_BOUNDS, type BackupBounds } from './backup-bounds.ts';
import { errnoOf } from './backup.ts';
import {
  archiveName,
  BACKUP_VERSION,
  classify,
  FILES_PREFIX,
  isRestoreMark,
  isSafeRelativePath,
  MANIFEST_NAME,
  ManifestHeadSchema,
  ManifestSchema,
  type Manifest,
  type ManifestFile,
} from './backup-manifest.ts';

/**
 * Reading a backup archive for a restore: once, into memory, then checked entry by entry before a
 * byte of any file is taken.
 */

/**
 * The archive's bytes, from one open and one read of the file. A restore hashes these bytes
 * (--expect-sha256) and unpacks these bytes, twice (check, then write), and never opens the file
 * again: whoever can replace the file meanwhile cannot make it unpack other bytes than those
 * hashed. Reading it whole into memory is the simplest way to that, bounded by
 * `bounds.archiveMaxBytes` (a backup never writes a larger one); it also leaves no copy of the
 * keys on disk (in /tmp or elsewhere) for a killed restore to leave behind.
 */
export function readArchiveOnce(archive: string, bounds: BackupBounds = BACKUP_BOUNDS): Buffer {
  let fd: number;
  try {
    fd = openSync(archive, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') throw new FieldStreamError('BACKUP_NOT_FOUND', `No archive at ${archive}.`);
    throw new FieldStreamError('BACKUP_UNREADABLE', `Cannot read the archive ${archive} (${errnoOf(err) ?? (err as Error).message}); nothing was restored.`, undefined, { cause: err });
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new FieldStreamError('BACKUP_INVALID', `${archive} is not a regular file; nothing was restored.`);
    if (st.size > bounds.archiveMaxBytes) {
      throw new FieldStreamError('BACKUP_TOO_LARGE', `${archive} holds ${st.size} bytes; a backup archive holds at most ${bounds.archiveMaxBytes}. Nothing was restored.`);
    }
    // What the file held at this read: a file growing meanwhile is read up to its size at the fstat.
    const bytes = Buffer.allocUnsafe(st.size);
    let at = 0;
    while (at < bytes.length) {
      const n = readSync(fd, bytes, at, bytes.length - at, at);
      if (n === 0) break;
      at += n;
    }
    return bytes.subarray(0, at);
  } catch (err) {
    if (isFieldStreamError(err)) throw err;
    throw new FieldStreamError('BACKUP_UNREADABLE', `Cannot read the archive ${archive} (${errnoOf(err) ?? (err as Error).message}); nothing was restored.`, undefined, { cause: err });
  } finally {
    closeSync(fd);
  }
}

/** What takes the content of one entry; a throw refuses the archive. */
interface EntrySink {
  data(chunk: Buffer): void;
  end(): void;
}

/**
 * Runs `onEntry` for each entry of the archive, in order, and the sink it returns on the entry's
 * content. The first throw (a refusal) stops the parser at once: nothing after it is decompressed.
 * tar's own bomb guard (a compression ratio above 1000) would refuse a real backup of many empty
 * replay windows; the ratio set here bounds the whole decompressed stream instead (the buffer is
 * given whole, so the ratio is that of everything decompressed to the archive's size) to what a
 * backup within the bounds can hold (`bounds.unpackedMaxBytes`, which the backup checks too).
 */
export async function scanArchive(bytes: Buffer, onEntry: (entry: tar.ReadEntry) => EntrySink | undefined, bounds: BackupBounds = BACKUP_BOUNDS): Promise<void> {
  const maxDecompressed = bounds.unpackedMaxBytes;
  const parser = new tar.Parser({ strict: true, maxDecompressionRatio: maxDecompressed / Math.max(bytes.length, 1) });
  let failed: unknown;
  const guard = (fn: () => void) => {
    if (failed !== undefined) return;
    try {
      fn();
    } catch (err) {
      failed = err;
      parser.abort(err as Error);
    }
  };
  parser.on('entry', (entry: tar.ReadEntry) => {
    let sink: EntrySink | undefined;
    guard(() => void (sink = onEntry(entry)));
    if (!sink) return void entry.resume();
    const s = sink;
    entry.on('data', (c: Buffer) => guard(() => s.data(c)));
    entry.on('end', () => guard(() => s.end()));
  });
  try {
    await new Promise<void>((resolve, reject) => {
      parser.on('error', reject);
      parser.on('end', resolve);
      parser.end(bytes);
    });
  } catch (err) {
    if (failed !== undefined) throw failed;
    if (/decompression ratio/.test((err as Error).message)) {
      throw new FieldStreamError('BACKUP_TOO_LARGE', `The archive unpacks to more than ${maxDecompressed} bytes, more than a backup holds; nothing was restored.`, undefined, { cause: err });
    }
    throw new FieldStreamError('BACKUP_INVALID', `The archive is not a readable gzip tar archive: ${(err as Error).message}`, undefined, { cause: err });
  }
  if (failed !== undefined) throw failed;
}

/** The manifest, from the bytes of manifest.json, against its schema, the paths and the limits. */
export function parseManifest(raw: Buffer, bounds: BackupBounds = BACKUP_BOUNDS): Manifest {
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
  if (parsed.data.files.length > bounds.maxFiles) throw new FieldStreamError('BACKUP_TOO_LARGE', `The manifest names ${parsed.data.files.length} files; a backup holds at most ${bounds.maxFiles}.`);
  let total = 0;
  const named = new Set<string>();
  for (const f of parsed.data.files) {
    if (!isSafeRelativePath(f.path)) throw new FieldStreamError('BACKUP_UNSAFE_PATH', `The manifest names ${JSON.stringify(f.path)}, outside its folder.`);
    if (isRestoreMark(f.path)) {
      // What a backup of a folder a restore had left half restored held (before backups refused one).
      throw new FieldStreamError('BACKUP_INVALID', `The archive holds a restore's mark (${f.root}/${f.path}): it was taken of a folder a restore was writing, or had left half restored when killed, so its files may be part of two states. Nothing was restored: restore an archive taken before that restore, or after it was run to its end.`);
    }
    if (classify(f.root, f.path) !== f.kind) {
      throw new FieldStreamError('BACKUP_INVALID', `The manifest names ${f.root}/${f.path} as ${f.kind}; a backup never holds that file as that.`);
    }
    const name = archiveName(f);
    if (named.has(name)) throw new FieldStreamError('BACKUP_INVALID', `The manifest names ${name} twice.`);
    named.add(name);
    if (f.size > bounds.archiveMaxBytes) throw new FieldStreamError('BACKUP_TOO_LARGE', `The manifest gives ${name} ${f.size} bytes; a backup holds no file over ${bounds.archiveMaxBytes}.`);
    total += f.size;
  }
  if (total > bounds.filesMaxBytes) throw new FieldStreamError('BACKUP_TOO_LARGE', `The manifest's files hold ${total} bytes; a backup holds at most ${bounds.filesMaxBytes}.`);
  return parsed.data;
}

/**
 * The checks of one file entry against its line of the manifest: the size its header declares is
 * the manifest's, before any of its content is read; its content never grows past that size; whole,
 * it has the manifest's sha256. `sink` (if any) gets the content as it comes, then `done` once all
 * of it passed.
 */
function checkedFile(f: ManifestFile, name: string, declared: number, sink?: { data(c: Buffer): void; done(): void }): EntrySink {
  if (declared !== f.size) {
    throw new FieldStreamError('BACKUP_TAMPERED', `${name} is not the file the manifest describes: its entry declares ${declared} bytes, the manifest ${f.size}.`);
  }
  const hash: Hash = createHash('sha256');
  let size = 0;
  return {
    data(c) {
      size += c.length;
      if (size > f.size) throw new FieldStreamError('BACKUP_TAMPERED', `${name} holds more than the ${f.size} bytes the manifest gives it.`);
      hash.update(c);
      sink?.data(c);
    },
    end() {
      const sha256 = hash.digest('hex');
      if (size !== f.size || sha256 !== f.sha256) {
        throw new FieldStreamError('BACKUP_TAMPERED', `${name} is not the file the manifest describes (size ${size}, expected ${f.size}; sha256 ${sha256}, expected ${f.sha256}).`);
      }
      sink?.done();
    },
  };
}

/**
 * Checks the whole archive, writing nothing anywhere: manifest.json first (only folders may come
 * before it), read within its limit and checked (parseManifest); then each entry: a safe name, a
 * plain file or folder (no link, device or other), below files/, named by the manifest and once
 * only, of the declared size the manifest gives (before its content is read), its content never
 * past that size and of the manifest's sha256; every file of the manifest present; at most
 * `bounds.maxFiles` folders.
 */
export async function verifyArchive(bytes: Buffer, bounds: BackupBounds = BACKUP_BOUNDS): Promise<Manifest> {
  let manifest: Manifest | undefined;
  const expected = new Map<string, ManifestFile>();
  const seen = new Set<string>();
  let folders = 0;
  await scanArchive(bytes, (entry) => {
    const name = entry.path;
    const plain = name.endsWith('/') && entry.type === 'Directory' ? name.slice(0, -1) : name;
    if (!isSafeRelativePath(plain)) throw new FieldStreamError('BACKUP_UNSAFE_PATH', `The archive holds an entry named ${JSON.stringify(name)}, outside its folder.`);
    if (entry.type === 'Directory') {
      if (++folders > bounds.maxFiles) throw new FieldStreamError('BACKUP_TOO_LARGE', `The archive holds more than ${bounds.maxFiles} folders.`);
      if (entry.size !== 0) throw new FieldStreamError('BACKUP_INVALID', `The folder ${JSON.stringify(name)} of the archive has content.`);
      return undefined;
    }
    if (entry.type !== 'File' && entry.type !== 'OldFile' && entry.type !== 'ContiguousFile') {
      throw new FieldStreamError('BACKUP_UNSAFE_PATH', `The archive holds ${JSON.stringify(name)} as a ${entry.type}${entry.linkpath ? ` to ${JSON.stringify(entry.linkpath)}` : ''}; a backup holds plain files only.`);
    }
    const declared = entry.size ?? 0;
    if (plain === MANIFEST_NAME) {
      if (manifest) throw new FieldStreamError('BACKUP_INVALID', `The archive holds ${JSON.stringify(name)} twice.`);
      if (declared > bounds.manifestMaxBytes) throw new FieldStreamError('BACKUP_INVALID', `The manifest is larger than ${bounds.manifestMaxBytes} bytes.`);
      const chunks: Buffer[] = [];
      let size = 0;
      return {
        data(c) {
          size += c.length;
          if (size > declared) throw new FieldStreamError('BACKUP_INVALID', `The manifest holds more than the ${declared} bytes its entry declares.`);
          chunks.push(Buffer.from(c)); // a copy: the parser's buffers are not ours to keep
        },
        end() {
          manifest = parseManifest(Buffer.concat(chunks), bounds);
          for (const f of manifest.files) expected.set(archiveName(f), f);
        },
      };
    }
    if (!manifest) throw new FieldStreamError('BACKUP_INVALID', `The archive holds ${JSON.stringify(name)} before ${MANIFEST_NAME}: it is not a FieldStream backup.`);
    if (!plain.startsWith(FILES_PREFIX)) throw new FieldStreamError('BACKUP_INVALID', `The archive holds ${JSON.stringify(name)}, which a backup never holds.`);
    if (seen.has(plain)) throw new FieldStreamError('BACKUP_INVALID', `The archive holds ${JSON.stringify(name)} twice.`);
    seen.add(plain);
    const f = expected.get(plain);
    if (!f) throw new FieldStreamError('BACKUP_TAMPERED', `The archive holds files the manifest does not name: ${plain}.`);
    return checkedFile(f, plain, declared);
  }, bounds);
  if (!manifest) throw new FieldStreamError('BACKUP_INVALID', `The archive has no ${MANIFEST_NAME}: it is not a FieldStream backup.`);
  const missing = [...expected.keys()].filter((n) => !seen.has(n));
  if (missing.length > 0) throw new FieldStreamError('BACKUP_TAMPERED', `${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ` and ${missing.length - 5} more` : ''} in the manifest but not in the archive.`);
  return manifest;
}

/**
 * Unpacks the files of `wanted` (an archive verifyArchive accepted, the same bytes), one at a time:
 * each file's content is gathered in memory (at most its manifest size), checked again against the
 * manifest, and handed to `write`; a throw of `write` stops the unpacking and is thrown.
 */
export async function unpackFiles(bytes: Buffer, wanted: Map<string, ManifestFile>, write: (f: ManifestFile, data: Buffer) => void, bounds: BackupBounds = BACKUP_BOUNDS): Promise<void> {
  await scanArchive(bytes, (entry) => {
    const f = wanted.get(entry.path);
    if (!f || entry.type === 'Directory') return undefined;
    const data = Buffer.alloc(f.size);
    let at = 0;
    return checkedFile(f, entry.path, entry.size ?? 0, {
      data: (c) => void (at += c.copy(data, at)),
      done: () => write(f, data),
    });
  }, bounds);
}
