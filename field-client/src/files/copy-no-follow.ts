import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { FieldStreamError } from '../../../shared/errors.ts';

/** bytes read and written at a time */
const COPY_PIECE_BYTES = 256 * 1024;

/**
 * Copies a regular file to `target` (created, never overwritten) and syncs the copy, so that once
 * this resolves the copy survives a power cut and its source may go. Never through a link: opened
 * with O_NOFOLLOW, and checked on the open handle.
 *
 * `maxBytes`: the size room was held for. A source with more than that (a producer still writing
 * it) is refused (FIELD_FILE_GROWING) with no more than that written: copied whatever its length,
 * the outbox passed its bound; cut at the size, the copy would be sent as the whole file and the
 * rest lost once its source went. The caller drops the partial target.
 *
 * O_NONBLOCK: the source lies in a folder others may write into, and what it names may change
 * between the caller's lstat and this open. A FIFO swapped in would otherwise block the open until
 * a writer came — forever, holding one of libuv's four pool threads; four such names stop every
 * file operation of the process, the queue's writes included. Opened without blocking, it is then
 * refused by its fstat (as a device or socket would be); O_NONBLOCK changes nothing for the read
 * of a regular file.
 */
export async function copyNoFollow(source: string, target: string, maxBytes = Infinity): Promise<void> {
  const from = await open(source, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    if (!(await from.stat()).isFile()) throw new FieldStreamError('FIELD_FILE_UNREADABLE', `${source}: not a regular file`);
    const to = await open(target, 'wx', 0o600);
    try {
      const buf = Buffer.allocUnsafe(COPY_PIECE_BYTES);
      let copied = 0;
      for (;;) {
        const { bytesRead } = await from.read(buf, 0, buf.length, null);
        if (bytesRead === 0) break;
        copied += bytesRead;
        if (copied > maxBytes) throw new FieldStreamError('FIELD_FILE_GROWING', `more than the ${maxBytes} bytes room was held for: it grew while it was copied (still being written?)`);
        for (let at = 0; at < bytesRead; ) at += (await to.write(buf, at, bytesRead - at)).bytesWritten;
      }
      await to.sync();
    } finally {
      await to.close();
    }
  } finally {
    await from.close();
  }
}
