import { createHash, randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { link, mkdir, open, readFile, unlink } from 'node:fs/promises';
import { extname, join, relative, resolve, sep } from 'node:path';
import type { FilePayload } from '../../shared/contract/payloads.ts';
import { unsafeFilenameReason } from '../../shared/contract/filename.ts';
import { DeviceIdSchema } from '../../shared/contract/primitives.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import type { StoredFileInfo } from './points.ts';

/**
 * Files from devices, stored as ROOT/DEVICE_ID/FILENAME.
 *
 * - A device's file name is checked again here (the DMZ is not trusted) and the final path must
 *   resolve inside the device's folder; anything else is refused with DISTRIBUTOR_UNSAFE_FILENAME.
 * - Nothing is ever overwritten: the file is written to a temporary name, fsync'ed, then linked to
 *   its final name, which fails if that name exists. The same content arriving again (a
 *   redelivery) is recognised by its SHA-256 and stored once; different content under a taken
 *   name is stored as NAME.SHA8.EXT.
 */
export class FileStore {
  private readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  async store(deviceId: string, payload: FilePayload): Promise<StoredFileInfo> {
    const reason = unsafeFilenameReason(payload.filename);
    if (reason || !DeviceIdSchema.safeParse(deviceId).success) {
      throw new FieldStreamError('DISTRIBUTOR_UNSAFE_FILENAME', `Refused file name ${JSON.stringify(payload.filename.slice(0, 100))}: ${reason ?? 'bad device id'}`);
    }
    const data = Buffer.from(payload.data, 'base64');
    const sha256 = createHash('sha256').update(data).digest('hex');
    const dir = join(this.root, deviceId);
    await mkdir(dir, { recursive: true });

    const ext = extname(payload.filename);
    const stem = payload.filename.slice(0, payload.filename.length - ext.length);
    const candidates = [payload.filename, `${stem}.${sha256.slice(0, 8)}${ext}`, `${stem}.${sha256}${ext}`];
    for (const name of candidates) {
      const target = this.inside(dir, name);
      const placed = await this.place(dir, target, data, sha256);
      if (placed) {
        return {
          filename: payload.filename,
          path: relative(this.root, target),
          size: data.length,
          sha256,
          contentType: payload.contentType ?? 'application/octet-stream',
          declaredSize: payload.metadata?.size,
          timestamp: payload.metadata?.timestamp,
        };
      }
    }
    throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `No free name for ${payload.filename}`);
  }

  /** Defence in depth: the resolved path must stay inside the device's folder. */
  private inside(dir: string, name: string): string {
    const target = resolve(dir, name);
    if (!target.startsWith(dir + sep)) {
      throw new FieldStreamError('DISTRIBUTOR_UNSAFE_FILENAME', `Refused file name ${JSON.stringify(name.slice(0, 100))}: leaves the storage folder`);
    }
    return target;
  }

  /** true: stored (or already there with the same content); false: the name holds other content. */
  private async place(dir: string, target: string, data: Buffer, sha256: string): Promise<boolean> {
    const existing = await readFile(target).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot read ${target}: ${err.message}`);
    });
    if (existing) return createHash('sha256').update(existing).digest('hex') === sha256;

    const tmp = join(dir, `.incoming-${randomUUID()}`);
    try {
      const fh = await open(tmp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o640);
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      try {
        await link(tmp, target); // atomic, and refuses to replace an existing name
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') return this.place(dir, target, data, sha256);
        throw err;
      }
      await syncDir(dir);
      return true;
    } catch (err) {
      if (err instanceof FieldStreamError) throw err;
      throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot store file in ${dir}: ${(err as Error).message}`, {}, { cause: err });
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
  }
}

/** The new directory entry itself must survive a power cut, not only the file's data. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
