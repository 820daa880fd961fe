import { isFieldStreamError } from '../../../shared/errors.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { DurableQueue } from '../queue/durable-queue.ts';
import { FileTransferRecordSchema, type FileOutbox } from './file-outbox.ts';
import { FILE_TRANSFER } from './transfers.ts';

/**
 * At a start, the files whose taking into the outbox a crash interrupted (FileOutbox.accept leaves a
 * note until the file's queue record is written). A file moved from the watched folder (or the HTTP
 * input's upload) has left where it was as soon as it is moved, and hashing a large one takes a while:
 * a crash before its record would leave it here, counted, never sent. So:
 *
 * - its record is in the queue: only the note goes;
 * - it was moved here, and no record names it: its taking is finished and it is queued now;
 * - it was not moved yet (or was being copied): it is still where it was, and its producer was
 *   never answered; only the note goes.
 *
 * The queue is read back only when a note is found, i.e. after such a crash. A file that cannot be
 * queued now (the queue refuses it) keeps its note, for the next start: it does not keep the client
 * from starting.
 */
export async function recoverOutbox(outbox: FileOutbox, queue: DurableQueue, log: Logger): Promise<void> {
  const unfinished = outbox.unfinished();
  if (unfinished.size === 0) return;
  const queued = new Set<string>();
  for (const m of queue.find((m) => m.dataType === FILE_TRANSFER)) {
    const rec = FileTransferRecordSchema.safeParse(m.payload);
    if (rec.success && unfinished.has(rec.data.transferId)) queued.add(rec.data.transferId);
  }
  for (const [transferId, note] of unfinished) {
    try {
      if (!queued.has(transferId)) {
        const rec = await outbox.resume(transferId, note);
        if (rec) {
          await queue.append([{ dataType: FILE_TRANSFER, payload: rec }]);
          log.warn({ code: 'FIELD_FILE_RECOVERED', transferId, filename: rec.filename, size: rec.size }, 'a file taken into the outbox when the client stopped is queued now');
        }
      }
      outbox.accepted(transferId);
    } catch (err) {
      // The queue refused its record (full; a full disk; drain-only after a power cut) or the disk
      // failed under it: the client starts all the same, to send what it holds. The note stays,
      // so the next start takes the file up again.
      log.error(
        { code: isFieldStreamError(err) ? err.code : 'FIELD_QUEUE_WRITE_FAILED', transferId, filename: note.filename, err: (err as Error).message },
        'a file taken into the outbox when the client stopped cannot be queued now; it stays in the outbox, and the next start queues it',
      );
    }
  }
}
