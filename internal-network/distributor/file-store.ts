import { createHash, randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { extname, join, relative, resolve, sep } from 'node:path';
import type { FilePayload, FileTransfer } from '../../shared/contract/payloads.ts';
import { unsafeFilenameReason } from '../../shared/contract/filename.ts';
import { DeviceIdSchema } from '../../shared/contract/primitives.ts';
import { syncDir } from '../../shared/durable-fs.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { StoredFileInfoSchema, type StoredFileInfo } from './points.ts';

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
    const dir = await this.deviceDir(deviceId, payload.filename);
    const data = Buffer.from(payload.data, 'base64');
    const sha256 = createHash('sha256').update(data).digest('hex');
    const tmp = await this.writeTemp(dir, [data]);
    return this.place(dir, tmp, sha256, data.length, payload);
  }

  /**
   * One chunk of a file sent in chunks. Chunks are kept (fsync'ed) under ROOT/.partial/ until all
   * have arrived, from whichever distributor received them; the one that completes the set joins
   * them, checks size and SHA-256, and stores the file as `store` does. Returns the stored file
   * once complete, undefined before. A chunk arriving again after completion finds the record.
   */
  async storeChunk(deviceId: string, payload: FilePayload & { transfer: FileTransfer }): Promise<StoredFileInfo | undefined> {
    const dir = await this.deviceDir(deviceId, payload.filename);
    const t = payload.transfer;
    const partial = join(this.root, '.partial', deviceId, t.id);
    const doneMarker = `${partial}.done.json`;
    const done = await readFile(doneMarker, 'utf8').catch(() => undefined);
    if (done) {
      let info: StoredFileInfo | undefined;
      try {
        info = StoredFileInfoSchema.parse(JSON.parse(done));
      } catch (err) {
        throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `${doneMarker} is not a stored file's record: ${(err as Error).message}`);
      }
      return info;
    }

    await mkdir(partial, { recursive: true });
    const data = Buffer.from(payload.data, 'base64');
    if (data.length > t.size) throw new FieldStreamError('DISTRIBUTOR_FILE_CHECKSUM', `Chunk ${t.index} of ${t.id} is larger than the whole file.`);
    const chunkTmp = await this.writeTemp(partial, [data]);
    await rename(chunkTmp, join(partial, `${t.index}.chunk`));
    const have = (await readdir(partial)).filter((f) => f.endsWith('.chunk')).length;
    if (have < t.count) return undefined;

    // Join the chunks in order into one temporary file, hashing as we go: one chunk in memory at a time.
    const hash = createHash('sha256');
    let size = 0;
    const tmp = join(dir, `.incoming-${randomUUID()}`);
    const fh = await open(tmp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o640);
    try {
      for (let i = 0; i < t.count; i++) {
        const chunk = await readFile(join(partial, `${i}.chunk`));
        hash.update(chunk);
        size += chunk.length;
        await fh.write(chunk);
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    const sha256 = hash.digest('hex');
    if (sha256 !== t.sha256 || size !== t.size) {
      await unlink(tmp).catch(() => undefined);
      await rm(partial, { recursive: true, force: true });
      throw new FieldStreamError(
        'DISTRIBUTOR_FILE_CHECKSUM',
        `File ${t.id} (${payload.filename}) from ${deviceId} is ${size} bytes with SHA-256 ${sha256}; the device declared ${t.size} bytes and ${t.sha256}. Not stored.`,
        { transferId: t.id },
      );
    }
    const info = await this.place(dir, tmp, sha256, size, payload);
    await writeFile(doneMarker, JSON.stringify(info));
    await rm(partial, { recursive: true, force: true });
    return info;
  }

  private async deviceDir(deviceId: string, filename: string): Promise<string> {
    const reason = unsafeFilenameReason(filename);
    if (reason || !DeviceIdSchema.safeParse(deviceId).success) {
      throw new FieldStreamError('DISTRIBUTOR_UNSAFE_FILENAME', `Refused file name ${JSON.stringify(filename.slice(0, 100))}: ${reason ?? 'bad device id'}`);
    }
    const dir = join(this.root, deviceId);
    await mkdir(dir, { recursive: true });
    return dir;
  }

  /** Writes data to a new temporary file in `dir`, fsync'ed. */
  private async writeTemp(dir: string, parts: Buffer[]): Promise<string> {
    const tmp = join(dir, `.incoming-${randomUUID()}`);
    try {
      const fh = await open(tmp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o640);
      try {
        for (const p of parts) await fh.write(p);
        await fh.sync();
      } finally {
        await fh.close();
      }
      return tmp;
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot write in ${dir}: ${(err as Error).message}`, {}, { cause: err });
    }
  }

  /** Gives the temporary file its final name: the first free of NAME, NAME.SHA8.EXT, NAME.SHA256.EXT. */
  private async place(dir: string, tmp: string, sha256: string, size: number, payload: FilePayload): Promise<StoredFileInfo> {
    try {
      const ext = extname(payload.filename);
      const stem = payload.filename.slice(0, payload.filename.length - ext.length);
      for (const name of [payload.filename, `${stem}.${sha256.slice(0, 8)}${ext}`, `${stem}.${sha256}${ext}`]) {
        const target = this.inside(dir, name);
        if (await this.link(dir, tmp, target, sha256)) {
          return {
            filename: payload.filename,
            path: relative(this.root, target),
            size,
            sha256,
            contentType: payload.contentType ?? 'application/octet-stream',
            declaredSize: payload.metadata?.size,
            timestamp: payload.metadata?.timestamp,
          };
        }
      }
      throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `No free name for ${payload.filename}`);
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
  }

  /** Defence in depth: the resolved path must stay inside the device's folder. */
  private inside(dir: string, name: string): string {
    const target = resolve(dir, name);
    if (!target.startsWith(dir + sep)) {
      throw new FieldStreamError('DISTRIBUTOR_UNSAFE_FILENAME', `Refused file name ${JSON.stringify(name.slice(0, 100))}: leaves the storage folder`);
    }
    return target;
  }

  /** true: the name now holds our content (it did already, or we linked it); false: other content. */
  private async link(dir: string, tmp: string, target: string, sha256: string): Promise<boolean> {
    const existing = await hashOf(target);
    if (existing !== undefined) return existing === sha256;
    try {
      await link(tmp, target); // atomic, and refuses to replace an existing name
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return (await hashOf(target)) === sha256;
      throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot store ${target}: ${(err as Error).message}`, {}, { cause: err });
    }
    await syncDir(dir);
    return true;
  }
}

/** SHA-256 of a file, read in a stream (files can be large); undefined when it does not exist. */
async function hashOf(path: string): Promise<string | undefined> {
  const h = createHash('sha256');
  try {
    const fh = await open(path, 'r');
    try {
      for await (const chunk of fh.createReadStream({ highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
    } finally {
      await fh.close().catch(() => undefined);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot read ${path}: ${(err as Error).message}`);
  }
  return h.digest('hex');
}
