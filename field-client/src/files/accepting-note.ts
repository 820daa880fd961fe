import { lstatSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { removeFileDurablySync, replaceFileDurablySync } from '../../../shared/durable-fs.ts';
import type { Logger } from '../../../shared/logger.ts';

/**
 * The note beside a file being taken into the outbox (FileOutbox.accept), until its queue record is
 * written. `move`: the outbox's copy is the file (it has left, or is leaving, where it was). A move
 * across file systems is a copy until the copy is whole and synced: its note says move:false
 * meanwhile, so a crash mid-copy leaves the source to be taken again, never the partial copy queued
 * as the file. Written aside, synced and renamed (replaceFileDurablySync): a note is whole or absent.
 */
export const NOTE = '.accepting';
/**
 * The source a move across file systems copied, as it was (its path, device, inode, size and
 * modification time), in the note from the copy's end until the source is removed: a kill or a
 * power cut between the two left the whole copy noted as the file and the source in its folder,
 * both taken. The next start removes the source when it is still that file (FileOutbox.resume).
 */
const SourceSchema = z.strictObject({ path: z.string().min(1), dev: z.number(), ino: z.number(), size: z.number(), mtimeMs: z.number() });
export type NotedSource = z.infer<typeof SourceSchema>;
const AcceptingNoteSchema = z.strictObject({ filename: z.string().min(1), contentType: z.string().min(1), move: z.boolean(), source: SourceSchema.optional() });
export type AcceptingNote = z.infer<typeof AcceptingNoteSchema>;

function notePath(dir: string, transferId: string): string {
  return join(dir, `${transferId}${NOTE}`);
}

/** Writes (or replaces) the note of `transferId` in the outbox folder `dir`, durably. */
export function writeNote(dir: string, transferId: string, note: AcceptingNote): void {
  replaceFileDurablySync(notePath(dir, transferId), JSON.stringify(note));
}

/** The note of `transferId` goes (gone already: nothing to do), durably. */
export function removeNote(dir: string, transferId: string): void {
  removeFileDurablySync(notePath(dir, transferId));
}

/**
 * The notes in the outbox folder `dir`, by transfer id; one that cannot be read as a note is removed,
 * logged (FIELD_STATE_INVALID, naming it and what is wrong): its file, if moved in (ID.tmp), is then
 * set aside at this start as one whose note is gone (outbox-recovery.ts, FIELD_FILE_UNQUEUED), and
 * this line says why. Something other than a file in a note's place is said the same way, and left
 * where it is.
 */
export function readNotes(dir: string, log: Logger): Map<string, AcceptingNote> {
  const found = new Map<string, AcceptingNote>();
  for (const f of readdirSync(dir)) {
    if (!f.endsWith(NOTE)) continue;
    const id = f.slice(0, -NOTE.length);
    const path = join(dir, f);
    // Anything else in a note's place (a folder, a FIFO, a link) is said and left where it is: a
    // folder failed the removal below and stopped every start with a stack trace, a FIFO held the
    // read for ever, and neither is ours to remove.
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (st === undefined) continue;
    if (!st.isFile()) {
      log.warn(
        { code: 'FIELD_STATE_INVALID', transferId: id, path, err: 'not a regular file' },
        'something other than a file stands in the place of a note beside a file being taken into the outbox: left where it is, and not read (its file, if moved in, is set aside as one whose note is gone)',
      );
      continue;
    }
    try {
      found.set(id, AcceptingNoteSchema.parse(JSON.parse(readFileSync(path, 'utf8'))));
    } catch (err) {
      // Not a note (damaged on disk): nothing was moved yet when it was first written (it is written first).
      log.warn(
        { code: 'FIELD_STATE_INVALID', transferId: id, path, err: (err as Error).message },
        'a note beside a file being taken into the outbox is damaged: removed (its file, if moved in, is set aside as one whose note is gone)',
      );
      rmSync(path, { force: true });
    }
  }
  return found;
}
