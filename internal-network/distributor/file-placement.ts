import { link, unlink } from 'node:fs/promises';
import { relative, resolve, sep } from 'node:path';
import type { FilePayload } from '../../shared/contract/payloads.ts';
import { syncDir } from '../../shared/durable-fs.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { holds, io } from './file-io.ts';
import { candidateNames } from './file-names.ts';
import type { StoredFileInfo } from './points.ts';

/**
 * Gives the temporary file its final name: the first of {@link candidateNames} that is free or
 * already holds this content. When each holds other content (names a device can take in advance:
 * it chooses its names and knows its content), DISTRIBUTOR_FILE_NAME_TAKEN: final, a dead letter,
 * since sending the file again finds the same names taken.
 */
export async function placeFile(root: string, dir: string, tmp: string, sha256: string, size: number, payload: FilePayload): Promise<StoredFileInfo> {
  try {
    for (const name of candidateNames(payload.filename, sha256)) {
      const target = inside(dir, name);
      if (await linkOurs(dir, tmp, target, sha256, size)) {
        return {
          filename: payload.filename,
          path: relative(root, target),
          size,
          sha256,
          contentType: payload.contentType ?? 'application/octet-stream',
          declaredSize: payload.metadata?.size,
          timestamp: payload.metadata?.timestamp,
        };
      }
    }
    throw new FieldStreamError(
      'DISTRIBUTOR_FILE_NAME_TAKEN',
      `Not stored: ${JSON.stringify(payload.filename.slice(0, 100))} (SHA-256 ${sha256}) and each fallback name for it hold other content in ${dir}.`,
      { sha256 },
    );
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/** Defence in depth: the resolved path must stay inside the device's folder. */
function inside(dir: string, name: string): string {
  const target = resolve(dir, name);
  if (!target.startsWith(dir + sep)) {
    throw new FieldStreamError('DISTRIBUTOR_UNSAFE_FILENAME', `Refused file name ${JSON.stringify(name.slice(0, 100))}: leaves the storage folder`);
  }
  return target;
}

/**
 * true: the name now holds our content (it did already, or we linked it); false: other content.
 * The folder is synced whenever the answer is true, also when the name was there already: it may
 * have been linked by a process killed before its sync (whose message was never acknowledged, so
 * this is its redelivery), and this answer is what gets the message receipted.
 */
async function linkOurs(dir: string, tmp: string, target: string, sha256: string, size: number): Promise<boolean> {
  let ours: boolean;
  const existing = await holds(target, sha256, size);
  if (existing !== undefined) ours = existing;
  else {
    try {
      await link(tmp, target); // atomic, and refuses to replace an existing name
      ours = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot store ${target}: ${(err as Error).message}`, {}, { cause: err });
      ours = (await holds(target, sha256, size)) === true;
    }
  }
  if (ours) await io(dir, () => syncDir(dir));
  return ours;
}
