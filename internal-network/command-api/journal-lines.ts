import { z } from 'zod';
import { MessageIdSchema } from '../../shared/contract/primitives.ts';
import { LIMITS } from '../../shared/limits.ts';
import { readLinesSync } from '../../shared/line-file.ts';
import { CommandRecordSchema, type CommandRecord } from './schemas.ts';

/**
 * A journal line: a command whole, or a change of one written without its params (which never
 * change), marked `paramsAsBefore`: they are those of the command's line before. Journals written
 * before changes were marked hold whole commands only, and read the same.
 *
 * The new commands of one request (more than one: a fleet command) are written in one write, each
 * line marked `batch`: the id of the request's first command and how many it made. A kill in the
 * middle of that write (SIGKILL, the OOM killer: a write is cut at a page) left the first lines
 * whole, and no 202 answered: read back alone, those devices got a command no one was told of, and
 * a retry with the request's Idempotency-Key was answered with them only, the other devices never
 * getting theirs. A request's commands are now read back all or none. Compactions write no mark.
 */
const BatchSchema = z.object({ first: MessageIdSchema, of: z.number().int().min(2) });
const JournalLineSchema = CommandRecordSchema.extend({ paramsAsBefore: z.literal(true).optional(), batch: BatchSchema.optional() });

/** Where the command journal's lines go as they are read back (CommandStore). */
export interface JournalReading {
  /** the command taken so far by this id, with its bytes as one whole line (params included) */
  get(commandId: string): { record: CommandRecord; bytes: number } | undefined;
  /** takes a command, or a later state of one taken: the last line read of a command wins */
  take(record: CommandRecord, bytes: number): void;
}

/**
 * Reads the command journal at `path` line by line, never whole, handing each command it holds to
 * `to`. Returns how many lines it holds and how many of them were skipped (torn, damaged, a change
 * of a command whose whole line is not there, a request's commands cut off before their last).
 */
export function readJournal(path: string, to: JournalReading): { lines: number; skipped: number } {
  let lines = 0;
  let skipped = 0;
  /** the commands of a request read so far, taken once all of them are (JournalLineSchema) */
  let batch: { first: string; of: number; records: CommandRecord[] } | undefined;
  for (const line of readLinesSync(path, LIMITS.commandJournalLineMaxBytes)) {
    if (line !== undefined && !line.trim()) continue;
    lines++;
    const parsed = line === undefined ? undefined : JournalLineSchema.safeParse(safeJson(line));
    // A request's commands cut off before their last line (a torn line, or another write's next): none.
    if (batch && (parsed?.success ? parsed.data.batch?.first : undefined) !== batch.first) {
      skipped += batch.records.length;
      batch = undefined;
    }
    if (!parsed?.success) {
      skipped++;
      continue;
    }
    const { paramsAsBefore, batch: mark, ...command } = parsed.data;
    if (mark) {
      // Only the request's first command opens it; a line of it without that one is no command taken.
      if (!batch && mark.first === command.commandId && !paramsAsBefore) batch = { first: mark.first, of: mark.of, records: [] };
      if (!batch || paramsAsBefore) {
        skipped++;
        continue;
      }
      batch.records.push(command);
      if (batch.records.length === batch.of) {
        for (const r of batch.records) to.take(r, lineBytes(r));
        batch = undefined;
      }
      continue;
    }
    if (!paramsAsBefore) {
      to.take(command, Buffer.byteLength(line as string) + 1);
      continue;
    }
    // A change of a command whose whole line is not here is not sent again without its params.
    const before = to.get(command.commandId);
    if (!before) {
      skipped++;
      continue;
    }
    const { params: _ignored, ...rest } = command;
    const bytes = before.bytes - lineBytes({ ...before.record, params: undefined }) + lineBytes(rest);
    to.take(before.record.params === undefined ? rest : { ...rest, params: before.record.params }, bytes);
  }
  if (batch) skipped += batch.records.length;
  return { lines, skipped };
}

/** Bytes of a record as one journal line (params left out when undefined, as JSON.stringify does). */
export function lineBytes(record: object): number {
  return Buffer.byteLength(JSON.stringify(record)) + 1;
}

function safeJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}
