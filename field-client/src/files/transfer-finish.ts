import { isFieldStreamError } from '../../../shared/errors.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { FileOutbox } from './file-outbox.ts';
import type { FileTransferRecord } from './transfer-record.ts';

/**
 * The file of a transfer all done leaves the outbox, unless its producer wrote to it after it was
 * taken, past its end or in place (FileOutbox.finish): then it is set aside whole, and the operator
 * told, as what was sent is not all of it; its size unreadable (EIO), it is kept, never removed unchecked;
 * its removal failing (the disk), it is kept too, FIELD_FILE_NOT_REMOVED. True
 * when it was (or may have been) set aside: rejected/ is measured again. Should that fail (the
 * disk), it stays where it is, said so: deleted, the bytes never sent would be lost; thrown on,
 * the error would end the client from the gateway connection's frame handler. Its record is let go all the same (all it names was sent): the next start finds the
 * file named by no record and sets it aside then (outbox-recovery.ts).
 */
export function finishTransfer(outbox: FileOutbox, rec: FileTransferRecord, log: Logger): boolean {
  const fields = { code: 'FIELD_FILE_APPENDED' as const, transferId: rec.transferId, filename: rec.filename, sentBytes: rec.size };
  let aside: ReturnType<FileOutbox['finish']>;
  try {
    aside = outbox.finish(rec);
  } catch (err) {
    if (isFieldStreamError(err, 'FIELD_FILE_UNREADABLE')) {
      // Its size unreadable (EIO): whether it was written to after it was taken is not known.
      log.error({ ...fields, code: err.code, err: err.message }, 'a file all sent cannot be looked at (its size): it stays in outgoing/ under its transfer id, set aside at the next start');
    } else if (isFieldStreamError(err, 'FIELD_FILE_NOT_REMOVED')) {
      // Unchanged since it was taken: only its removal failed, nothing was written to it.
      log.error({ ...fields, code: err.code, err: err.message }, 'a file all sent cannot be removed from the outbox: it stays in outgoing/ under its transfer id, set aside at the next start');
    } else {
      log.error({ ...fields, err: (err as Error).message }, 'a file was written to after it was taken, and cannot be set aside: it stays where it is (outgoing/ under its transfer id, set aside at the next start; or rejected/)');
    }
    return true;
  }
  if (!aside) return false;
  log.warn(
    { ...fields, bytes: aside.bytes, path: aside.path, written: aside.why },
    aside.why === 'appended'
      ? 'a file was written to after it was taken (its producer still had it open): what was taken is sent; the whole file is set aside'
      : 'a file was written to in place after it was taken (its producer still had it open): what was sent may not be what its record says (the distributor refuses it then, DISTRIBUTOR_FILE_CHECKSUM); the whole file, as it is now, is set aside',
  );
  return true;
}
