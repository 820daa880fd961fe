import { createHash } from 'node:crypto';
import { unlinkSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { FieldStreamError } from '../../../shared/errors.ts';
import { syncDirSync } from '../../../shared/durable-fs.ts';

/*
 * The small steps FileOutbox.accept and place (file-outbox.ts, source-moves.ts) take a file into the outbox with:
 * its source's removal once moved, whether a folder lets its file go, the refusal of a file that
 * grew, and the hash of exactly the bytes its record names.
 */

/** Removes a file (gone already: nothing to do) and syncs its folder. */
export function removeSourceSync(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  syncDirSync(dirname(path));
}

/**
 * Whether a file's rename or removal failed because its folder does not let it go: no write
 * permission there (EACCES), the sticky bit and another user's file, or an append-only or
 * immutable flag (EPERM), a read-only mount (EROFS). The file can still be copied.
 */
export function cannotLeave(err: NodeJS.ErrnoException): boolean {
  return err.code === 'EACCES' || err.code === 'EPERM' || err.code === 'EROFS';
}

/** A file larger than the `limit` bytes room was held for: still being written (see FileOutbox.accept). */
export function growing(what: string, limit: number): FieldStreamError {
  return new FieldStreamError('FIELD_FILE_GROWING', `${what} has more than the ${limit} bytes room was held for: it grew while it was taken (still being written?); taken again once it holds still`);
}

/** SHA-256 of the first `size` bytes of an open file (hex). */
export async function hashPrefix(fh: FileHandle, size: number): Promise<string> {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(Math.min(Math.max(size, 1), 1024 * 1024));
  for (let at = 0; at < size; ) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - at), at);
    if (bytesRead === 0) throw new Error(`the file is shorter than its ${size} bytes (cut while it was taken?)`);
    h.update(buf.subarray(0, bytesRead));
    at += bytesRead;
  }
  return h.digest('hex');
}
