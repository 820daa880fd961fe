import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { isFieldStreamError } from '../../../shared/errors.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { DurableQueue } from '../queue/durable-queue.ts';
import { NOTE } from './accepting-note.ts';
import type { FileOutbox } from './file-outbox.ts';
import { FinishedTransfers } from './finished-transfers.ts';
import { FileTransferRecordSchema } from './transfer-record.ts';
import { FILE_TRANSFER } from './transfers.ts';

/**
 * At a start, the files whose taking into the outbox a crash interrupted (FileOutbox.accept leaves a
 * note until the file's queue record is written). A file moved from the watched folder (or the HTTP
 * input's upload) has left where it was as soon as it is moved, and hashing a large one takes a while:
 * a crash before its record would leave it here, counted, never sent. So:
 *
 * - its record is in the queue: only the note goes;
 * - it was moved here, and no record names it: its taking is finished and it is queued now, as a
 *   transfer of its own (FileOutbox.resume: its record may have been sent from, then lost);
 * - it was not moved yet (or was being copied): it is still where it was, and its producer was
 *   never answered; only the note goes.
 *
 * A file being taken (ID.tmp) whose note is gone is set aside too, as ID-unqueued-taking
 * (setAsideUnnoted).
 *
 * A file here with neither a note nor a record naming it is set aside in FIELD_DATA_DIR/rejected/
 * as ID-unqueued (FIELD_FILE_UNQUEUED): its transfer was done but it could not be set aside then
 * (the disk, transfer-finish.ts), or drop-oldest let its record go and a crash came before the
 * file went. Nothing would ever send or remove it: it counted against FIELD_QUEUE_MAX_BYTES for
 * good, unseen. Set aside rather than deleted, as nothing says all of it was sent. A file whose
 * record is held (awaiting its receipt included) is never touched.
 *
 * A record read back whose transfer was finished before the stop (its file delivered, set aside or
 * gone: finished-transfers.ts) is let go quietly (a debug line): the queue's committed watermark
 * was still below it, a record before it open. Reported missing, as it was, a file delivered read
 * as one lost. Its file, should it still be here (it could not be removed nor set aside then), is
 * named by no record left, and set aside as above. A file record that was not one (FIELD_QUEUE_CORRUPT,
 * logged when it was let go) is written down by its number, and let go so too, never logged again.
 *
 * The queue is read back only when the outbox holds a file or a note, or a transfer is written
 * down as finished. Its own recovery has read every segment at this start already (checksums), so
 * this reads what is likely still cached. A file that cannot be queued now (the queue refuses it)
 * keeps its note, for the next start, as one that cannot be set aside stays: neither keeps the
 * client from starting.
 *
 * First, what a crash left beside the files and nothing reads goes (removeStrays).
 */
export async function recoverOutbox(outbox: FileOutbox, queue: DurableQueue, log: Logger): Promise<void> {
  removeStrays(outbox.dir, log);
  const unfinished = outbox.unfinished(log);
  const placed = outbox.placed().filter((id) => !unfinished.has(id));
  // Read before the notes are taken up: a note's file may be left as ID.tmp (it cannot be queued now), its note kept.
  const unnoted = outbox.takingUnnoted(unfinished);
  // FIELD_DATA_DIR, where the outbox's folder is
  const finished = new FinishedTransfers(join(outbox.dir, '..'), log);
  setAsideUnnoted(outbox, unnoted, log);
  if (unfinished.size === 0 && placed.length === 0 && finished.size === 0) return;
  /** every transfer a record names; `queued`: those still to send */
  const recorded = new Set<string>();
  const queued = new Set<string>();
  const done: number[] = [];
  /** records not ones, let go before (FIELD_QUEUE_CORRUPT, logged then) and read back now */
  const notRecords = new Set<number>();
  for (const m of queue.find((m) => m.dataType === FILE_TRANSFER)) {
    const rec = FileTransferRecordSchema.safeParse(m.payload);
    if (!rec.success) {
      // Never written down: handed out again, refused (FIELD_QUEUE_CORRUPT) and written down then.
      if (!finished.hasNotRecord(m.seq)) continue;
      notRecords.add(m.seq);
      done.push(m.seq);
      log.debug({ seq: m.seq }, 'a file record read back that was not one, let go before the stop (FIELD_QUEUE_CORRUPT): let go');
      continue;
    }
    const { transferId } = rec.data;
    recorded.add(transferId);
    if (!finished.has(transferId)) queued.add(transferId);
    else {
      done.push(m.seq);
      log.debug({ transferId, seq: m.seq }, 'a file record read back for a transfer finished before the stop (its file delivered, set aside or gone): let go');
    }
  }
  queue.commit(done);
  // Kept until ack.json's watermark passes these records; the rest are never read back again.
  finished.keepOnly(recorded, notRecords);
  for (const [transferId, note] of unfinished) {
    try {
      if (!recorded.has(transferId)) {
        // Under a transfer id of its own (FileOutbox.resume), its note moved to it.
        const rec = await outbox.resume(transferId, note);
        if (rec) {
          await queue.append([{ dataType: FILE_TRANSFER, payload: rec }]);
          // On disk before the note goes (FIELD_QUEUE_SYNC at an interval answers the append
          // before its fsync): a power cut would otherwise lose the record with the note gone.
          await queue.durable();
          outbox.accepted(rec.transferId);
          log.warn({ code: 'FIELD_FILE_RECOVERED', transferId: rec.transferId, was: transferId, filename: rec.filename, size: rec.size }, 'a file taken into the outbox when the client stopped is queued now, as a transfer of its own');
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
  for (const transferId of placed) {
    if (queued.has(transferId)) continue;
    try {
      const path = outbox.setAsideUnqueued(transferId);
      log.warn({ code: 'FIELD_FILE_UNQUEUED', transferId, path }, 'a file in the outbox that no queue record names is set aside: it is not sent; look at it, then move it off the device');
    } catch (err) {
      log.error({ code: 'FIELD_FILE_UNQUEUED', transferId, err: (err as Error).message }, 'a file in the outbox that no queue record names cannot be set aside (the disk): it stays in outgoing/, and the next start tries again');
    }
  }
}

/**
 * A file being taken (ID.tmp) with no note beside it: no step of FileOutbox.accept, place or resume
 * leaves one (the note is written first and goes last), but a note damaged on disk is removed
 * when read (readNotes, logged FIELD_STATE_INVALID), and one may be removed by hand. Nothing would ever finish, send, count or
 * remove such a file: it may be all a producer handed over (a move), so it is set aside in
 * rejected/ as ID-unqueued-taking (FIELD_FILE_UNQUEUED), never deleted. One that cannot be moved
 * stays, for the next start.
 */
function setAsideUnnoted(outbox: FileOutbox, ids: readonly string[], log: Logger): void {
  for (const transferId of ids) {
    try {
      const path = outbox.setAsideUnqueued(transferId, true);
      log.warn({ code: 'FIELD_FILE_UNQUEUED', transferId, path }, 'a file being taken into the outbox whose note is gone is set aside: it is not sent (it may be partial); look at it, then move it off the device');
    } catch (err) {
      log.error({ code: 'FIELD_FILE_UNQUEUED', transferId, err: (err as Error).message }, 'a file being taken into the outbox whose note is gone cannot be set aside (the disk): it stays in outgoing/, and the next start tries again');
    }
  }
}

/**
 * Removes from the outbox folder `dir`, at a start (nothing writes there yet), the small files a
 * crash left that nothing will ever read nor remove:
 *
 * - ID.progress.tmp: a progress written aside and renamed over ID.progress (FileOutbox.saveProgress),
 *   and ID.accepting.tmp-PID: a note written aside, synced and renamed over ID.accepting
 *   (replaceFileDurablySync). Only the renamed name is ever read: what is left aside never is.
 * - ID.progress of a file gone from the outbox (neither ID nor ID.tmp is here): its transfer was
 *   done, or its file removed or set aside, and the kill came before its progress went. A record
 *   still naming it finds no file to send (file-records.ts), so its progress is never read either.
 *
 * Never ID.tmp: it is the file being taken, its note beside it (FileOutbox.resume finishes it), or,
 * its note gone, set aside (setAsideUnnoted). A file that cannot be removed now stays, for the next start.
 */
function removeStrays(dir: string, log: Logger): void {
  const names = new Set(readdirSync(dir));
  const removed: string[] = [];
  for (const f of names) {
    const id = f.endsWith('.progress') ? f.slice(0, -'.progress'.length) : undefined;
    const stray = f.endsWith('.progress.tmp') || f.includes(`${NOTE}.tmp-`) || (id !== undefined && !names.has(id) && !names.has(`${id}.tmp`));
    if (!stray) continue;
    try {
      rmSync(join(dir, f), { force: true });
      removed.push(f);
    } catch (err) {
      log.warn({ file: f, err: (err as Error).message }, 'cannot remove a file a crash left in the outbox (a few bytes, never read); tried again at the next start');
    }
  }
  if (removed.length > 0) log.info({ removed }, 'removed what a crash left in the outbox beside its files (progress and notes written aside, progress of files gone)');
}
