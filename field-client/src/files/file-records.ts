import type { Logger } from '../../../shared/logger.ts';
import type { OutgoingMessage, QueuedMessage } from '../queue/durable-queue.ts';
import type { FileOutbox } from './file-outbox.ts';
import { FileTransferRecordSchema } from './transfer-record.ts';
import { FILE_TRANSFER, type FileTransfers } from './transfers.ts';

/**
 * A file's record, handed out by the queue: its transfer starts (its chunks go out from the
 * outbox). `started` false when it cannot: the record is not one (checked: it was read back from
 * disk; `gone` undefined), or its file is gone from the outbox (then `gone` names its transfer);
 * the caller then lets the record go, logged here, and writes it down as finished
 * (finished-transfers.ts; one not a record by its number alone): read back at the next start (the
 * committed watermark below it), it was logged again at every start.
 */
export function startTransfer(transfers: FileTransfers, m: OutgoingMessage, log: Logger): { started: true } | { started: false; gone: string | undefined } {
  const parsed = FileTransferRecordSchema.safeParse(JSON.parse(m.payloadJson));
  if (!parsed.success) {
    log.error({ code: 'FIELD_QUEUE_CORRUPT', seq: m.seq, err: parsed.error.message }, 'a queued file record is not one; dropping it');
    return { started: false, gone: undefined };
  }
  const rec = parsed.data;
  if (transfers.start(m.seq, rec)) return { started: true };
  log.error({ code: 'FIELD_FILE_UNREADABLE', transferId: rec.transferId }, 'a queued file is missing from the outbox; dropping it');
  return { started: false, gone: rec.transferId };
}

/**
 * Drop-oldest dropped these records (counted there): a file record's file leaves the outbox too,
 * or it would stay counted against the bound, never sent. A file larger than its record (a
 * producer wrote on into a file moved in) goes whole all the same, as the policy says; the bytes
 * written after it was placed are said in the line (`appendedBytes`), as they were never in its
 * record's `size`. Returns the sequence numbers of the file records among them.
 */
export function dropFilesOf(dropped: readonly QueuedMessage[], transfers: FileTransfers, outbox: FileOutbox, log: Logger): number[] {
  const seqs: number[] = [];
  for (const m of dropped) {
    if (m.dataType !== FILE_TRANSFER) continue;
    const rec = FileTransferRecordSchema.safeParse(m.payload);
    if (!rec.success) continue;
    seqs.push(m.seq);
    transfers.drop(rec.data.transferId);
    const bytes = outbox.remove(rec.data.transferId);
    const appendedBytes = bytes !== undefined && bytes > rec.data.size ? bytes - rec.data.size : undefined;
    log.warn(
      { code: 'FIELD_QUEUE_DROPPED_OLDEST', transferId: rec.data.transferId, filename: rec.data.filename, size: rec.data.size, ...(appendedBytes === undefined ? {} : { appendedBytes }) },
      appendedBytes === undefined ? 'queue full: dropped the oldest file with its record' : 'queue full: dropped the oldest file with its record, and the bytes written to it after it was taken (appendedBytes)',
    );
  }
  return seqs;
}
