import { statSync } from 'node:fs';
import { FieldStreamError } from '../../../shared/errors.ts';
import { LIMITS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { DurableQueue, QueuedMessage } from '../queue/durable-queue.ts';
import type { FileOutbox } from './file-outbox.ts';
import type { Reservation } from './file-room.ts';
import { FILE_TRANSFER } from './transfers.ts';

/** What taking a file needs of the field client. */
export interface IntakeHost {
  readonly queue: DurableQueue;
  readonly outbox: FileOutbox;
  /** bytes: FIELD_QUEUE_MAX_BYTES */
  readonly maxBytes: number;
  /** bytes charged for refused messages set aside (SetAside.charge), and held by them (SetAside.bytes) */
  setAside(): { charge: number; bytes: number };
  readonly log: Logger;
}

/**
 * bytes a file (with its queue record's room, LIMITS.fileRecordRoomBytes) may still take within
 * FIELD_QUEUE_MAX_BYTES: less what the queue, the outbox (the room held for files being taken
 * included) and what is set aside hold.
 */
export function fileRoom(h: IntakeHost): number {
  return h.maxBytes - h.queue.bytesOnDisk - h.outbox.bytes() - h.setAside().charge;
}

/**
 * Holds room for `bytes` more of a file being taken (in `held`, or a new reservation), until it is
 * queued or released; FIELD_QUEUE_FULL when there is none (under drop-oldest, once the oldest
 * segments were dropped for it, as for a reading). Held room counts in every later check, the
 * queue's own included, so files taken at once cannot together pass a bound each fits alone.
 */
export function reserveFileRoom(h: IntakeHost, bytes: number, held?: Reservation): Reservation {
  if (bytes > fileRoom(h) && !h.queue.makeRoomFor(bytes)) {
    h.queue.stats.refused++;
    const taking = h.outbox.room.bytes;
    throw new FieldStreamError(
      'FIELD_QUEUE_FULL',
      `No room for ${bytes} bytes more of a file within FIELD_QUEUE_MAX_BYTES (${h.maxBytes}): the queue holds ${h.queue.bytesOnDisk}, files waiting to be sent ${h.outbox.bytes() - taking}, files being taken ${taking}, refused messages set aside ${h.setAside().bytes}.`,
    );
  }
  if (!held) return h.outbox.room.reserve(bytes);
  held.grow(bytes);
  return held;
}

/**
 * Holds room for a file about to arrive, `bytes` long by its sender's word (an HTTP upload's
 * Content-Length), before a byte of it came. Under reject, all of it, or FIELD_QUEUE_FULL at once.
 * Under drop-oldest, only what fits without dropping anything: the rest is made room for as the
 * bytes arrive (reserveFileRoom, dropping then). Held whole, an upload that announced a large
 * length and sent nothing had the device drop its oldest data for bytes that never came. A length
 * past FIELD_QUEUE_MAX_BYTES can never fit: refused at once under either policy.
 */
export function holdAnnouncedRoom(h: IntakeHost, bytes: number): Reservation {
  if (!h.queue.dropsOldest || bytes > h.maxBytes) return reserveFileRoom(h, bytes);
  return h.outbox.room.reserve(Math.min(bytes, Math.max(0, fileRoom(h))));
}

/**
 * Takes a file into the outbox and queues its record, within the room it is given first.
 * `reservation`: room the caller already holds for it (the HTTP input, while the file arrived).
 * `sourceKept`: told, once the file is queued, that it was to be moved but was copied, as its
 * folder does not let it go (the error's code: EACCES, EPERM, EROFS): it is still where it was.
 */
export async function takeFile(h: IntakeHost, path: string, options: { filename?: string; contentType?: string; move?: boolean; reservation?: Reservation; sourceKept?: (code: string) => void }): Promise<QueuedMessage> {
  let size: number;
  try {
    size = statSync(path).size;
  } catch (err) {
    throw new FieldStreamError('FIELD_FILE_UNREADABLE', `${path}: ${(err as Error).message}`);
  }
  const held = options.reservation?.bytes ?? 0;
  const reservation = reserveFileRoom(h, Math.max(0, size + LIMITS.fileRecordRoomBytes - held), options.reservation);
  try {
    let kept: string | undefined;
    // Never more than `size` taken: a file grown since (still being written) is refused, whole
    // where it was (FIELD_FILE_GROWING), rather than passing the room held for it.
    const rec = await h.outbox.accept(path, { ...options, reservation, expectedSize: size, sourceKept: (code) => (kept = code) });
    // The file is counted in the outbox now; what is left held is its record's room, which the append takes.
    reservation.release();
    let m: QueuedMessage | undefined;
    try {
      [m] = await h.queue.append([{ dataType: FILE_TRANSFER, payload: rec }]);
    } catch (err) {
      // Never stranded in the outbox, counted and unsent: back where it came from, to be taken again.
      // A copy whose source stayed (kept) is dropped, as any copy: the source is still there.
      if (!(await h.outbox.giveBack(rec.transferId, path, options.move === true && kept === undefined).catch(() => false))) {
        h.log.error({ code: 'FIELD_QUEUE_WRITE_FAILED', transferId: rec.transferId, file: path }, 'a file whose queue record failed cannot be put back; kept in the outbox, queued at the next start');
      }
      throw err;
    }
    // On disk before the outbox forgets the file's note and a kept source is remembered as sent:
    // with FIELD_QUEUE_SYNC at an interval the append answers before its fsync, and a power cut
    // then would lose the record while the file stayed out of the outbox's recovery, or skipped.
    try {
      await h.queue.durable();
    } catch (err) {
      // Written, its record is queued and sendable in this run all the same (the sender may have
      // begun on it): given back, its file was gone from under it, and queued again as another.
      // So it stays, and so does its note: the next start queues it again should the record be
      // lost (outbox-recovery.ts). A kept source is not remembered as sent: taken again, a copy at
      // worst, never a loss. The queue itself logs the failed fsync and takes a new epoch.
      h.log.error(
        { code: 'FIELD_QUEUE_WRITE_FAILED', transferId: rec.transferId, file: path, err: (err as Error).message },
        'a file is queued, but its queue record could not be synced: its outbox note stays, and the next start queues it again should the record be lost',
      );
      return m as QueuedMessage;
    }
    h.outbox.accepted(rec.transferId);
    if (kept !== undefined) options.sourceKept?.(kept);
    return m as QueuedMessage;
  } finally {
    reservation.release();
  }
}
