import { existsSync, statSync } from 'node:fs';
import { z } from 'zod';
import { ResponsePayloadSchema } from '../../shared/contract/payloads.ts';
import { removeLeftAsideSync, replaceFileDurablySync } from '../../shared/durable-fs.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { appendLinesSync, readLinesSync } from '../../shared/line-file.ts';
import { ProgramRecordSchema, type ProgramRecord } from './command-orphans.ts';

/**
 * A command's answer as kept until it is in the durable queue: what the response will say, with the
 * time it was decided, so that every copy queued says the same. Checked with the response's own
 * schema before it is journaled (a result the queue would refuse is never kept) and when it is read
 * back from the journal.
 */
export const KeptAnswerSchema = ResponsePayloadSchema.pick({ status: true, result: true, timestamp: true });
export type KeptAnswer = z.infer<typeof KeptAnswerSchema>;

/**
 * What the journal says of a command id:
 * - started: journaled before its handler ran; it may have run, or be running. `program`: the
 *   process group of the exec program it started, recorded as it was spawned (command-orphans.ts):
 *   a client killed while it ran ends it at its next start.
 * - done: it ran (or was found started: of unknown outcome), and its answer is kept here until the answer is in the
 *   durable queue. `unsynced`: known in this process only, the journal having refused the line (a
 *   full disk): on disk the id is still `started`.
 * - answered: its answer is in the durable queue.
 */
export type JournalEntry =
  | { state: 'started'; issuedAt: number; program?: ProgramRecord }
  | { state: 'answered'; issuedAt: number }
  | { state: 'done'; issuedAt: number; answer: KeptAnswer; unsynced?: true };

/** "ID STATE ISSUED_AT" (journals written before the issuedAt was kept have none) */
const STATE_LINE = /^([A-Za-z0-9._:-]+) (started|answered)(?: (\d+))?$/;
/**
 * "ID done ISSUED_AT ANSWER_JSON". With `s`: JSON leaves U+2028 and U+2029 in a string as they are,
 * and `.` without it stops at them (line terminators to a RegExp), so an answer holding one was read
 * as a torn line, and the command answered as of unknown outcome after a restart. A journal line
 * holds no "\n" (the file is split at it).
 */
const DONE_LINE = /^([A-Za-z0-9._:-]+) done (\d+)(?: (.*))?$/s;
const FLOOR_LINE = /^#floor (\d+)$/;
/**
 * "ID program ISSUED_AT RECORD_JSON": the command's exec program, spawned. Always after the id's
 * "started" line (appended after it, and a rewrite writes both): a client of a version before these
 * lines skips this one as unreadable and still knows the id as started.
 */
const PROGRAM_LINE = /^([A-Za-z0-9._:-]+) program (\d+) (.*)$/s;

/**
 * The field client's command journal (FIELD_DATA_DIR/commands.journal), and what it says in memory.
 * One line per change, appended whole and synced before `write` returns (line-file.ts); rewritten
 * from memory (compacted) when it holds more than twice `remembered` lines, or more than twice the
 * bytes it held at the last rewrite plus LIMITS.fieldCommandJournalSlackBytes (a `done` line carries
 * an answer of up to ~192 KiB, so a count of lines alone would not bound it).
 *
 * The newest `remembered` ids are kept; the `floor` is the latest issuedAt among the ids forgotten.
 * An id whose answer is kept (`done`) is never forgotten: its answer would be lost. There are at most
 * LIMITS.fieldCommandAnswersHeldMax of those (commands.ts runs no new command past that).
 */
export class CommandJournal {
  private readonly seen = new Map<string, JournalEntry>();
  /** epoch ms: the latest issuedAt among forgotten ids */
  floor = 0;
  /** ids whose answer is kept (state `done`) */
  held = 0;
  /**
   * Lines read at the start that are no line of ours: torn by a power cut (the append after it
   * starts on a line of its own), damaged on the disk, or a `done` whose answer fails its schema
   * (read as `started`). Said once at the start (start.ts): the ids they named are not recognised
   * as seen unless another line of theirs, or the floor, is.
   */
  unreadable = 0;
  /**
   * Values read at the start (a `#floor`, an issuedAt) further than
   * TIMINGS.fieldCommandJournalAheadMaxMs past `judgedAgainst`: damage on the disk, not believed. A
   * floor so read is skipped; an id's issuedAt is taken as `judgedAgainst` (it was journaled before
   * then), so the id is still known and, once forgotten, does not raise the floor past every new
   * command. Said once at the start with the unreadable lines (start.ts).
   */
  damagedValues = 0;
  /**
   * epoch ms: what the values read are judged against, the later of the device's clock at the start
   * and the journal's last write (its mtime, by the clock then). The clock alone read every value as
   * damage at a start with the clock behind (a dead RTC battery: systemd sets the clock to its build
   * date), dropping the floor and each id's issuedAt: an id forgotten since was then no longer
   * refused, and the DMZ's copy of it, still within its TTL, ran again once NTP set the clock.
   */
  private judgedAgainst: number;
  /**
   * Program records read at the start that fail their schema (torn by a power cut, damaged on the
   * disk), by command id, of the commands the journal still says started (unanswered): their
   * program, if it still runs, cannot be found (FIELD_COMMAND_PROGRAM_RECORD_DAMAGED, start.ts).
   */
  readonly damagedPrograms: string[] = [];
  /** a compaction's failure not yet taken (and logged) by the caller: the line before it was synced, nothing is lost */
  private compactionFailure: Error | undefined;
  /** a close that failed after its line was synced, not yet taken (and logged) by the caller: the line is written */
  private closeFailure: Error | undefined;
  private lines = 0;
  private bytes = 0;
  /** bytes at the last rewrite (or, at a start, what a rewrite would hold) */
  private compactedBytes = 0;
  private readonly named = new Set<string>();

  constructor(
    private readonly path: string | undefined,
    private readonly remembered: number,
    /** epoch ms: the device's clock at the start, what the values read are judged against (with the journal's mtime: judgedAgainst) */
    startedAt = Date.now(),
  ) {
    this.judgedAgainst = startedAt;
    if (path) removeLeftAsideSync(path);
    if (!path || !existsSync(path)) return;
    this.judgedAgainst = Math.max(startedAt, statSync(path).mtimeMs);
    // Line by line, each at most fieldCommandJournalLineMaxBytes: a longer one is no line of ours.
    for (const line of readLinesSync(path, LIMITS.fieldCommandJournalLineMaxBytes)) {
      this.lines++;
      if (line === undefined) {
        this.unreadable++;
        continue;
      }
      this.bytes += Buffer.byteLength(line) + 1;
      if (!this.readLine(line)) this.unreadable++;
    }
    // Only the records of commands still unanswered: one answered after its record was damaged
    // names no program that may run on, and was reported at every start until the next rewrite.
    const unanswered = this.damagedPrograms.filter((id, i, all) => all.indexOf(id) === i && this.seen.get(id)?.state === 'started');
    this.damagedPrograms.splice(0, this.damagedPrograms.length, ...unanswered);
    this.compactedBytes = this.render().reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
  }

  /** The last compaction's failure, once (the next write tries again). */
  takeCompactionFailure(): Error | undefined {
    const err = this.compactionFailure;
    this.compactionFailure = undefined;
    return err;
  }

  /** The last append's failed close, once: its line was synced and counts as written. */
  takeCloseFailure(): Error | undefined {
    const err = this.closeFailure;
    this.closeFailure = undefined;
    return err;
  }

  get(id: string): JournalEntry | undefined {
    return this.seen.get(id);
  }

  /**
   * Appends `entry` for `id` and syncs it, then remembers it. Throws when the disk refuses the line
   * (ENOSPC, EROFS, EFBIG, EIO): then nothing was written (appendLinesSync writes all or none) and
   * nothing is remembered. A failed compaction after it is kept in `compactionFailure`, not thrown:
   * the line is on disk, and the next write tries the compaction again.
   */
  write(id: string, entry: JournalEntry): void {
    if (this.path) {
      const line = `${format(id, entry)}\n`;
      // A close failing after the sync (NFS) leaves the line on the disk, read back at a start: written.
      this.closeFailure = appendLinesSync(this.path, line, 0o600, this.named) ?? this.closeFailure;
      this.lines++;
      this.bytes += Buffer.byteLength(line);
    }
    this.remember(id, entry);
    if (this.path && (this.lines > 2 * this.remembered || this.bytes > 2 * this.compactedBytes + LIMITS.fieldCommandJournalSlackBytes)) {
      try {
        this.compact(this.path);
      } catch (err) {
        this.compactionFailure = err as Error;
      }
    }
  }

  /** The ids whose answer is kept (state `done`), oldest first: a copy, as queueing them changes the journal. */
  heldAnswers(): Array<[string, Extract<JournalEntry, { state: 'done' }>]> {
    const held: Array<[string, Extract<JournalEntry, { state: 'done' }>]> = [];
    if (this.held === 0) return held;
    for (const [id, e] of this.seen) if (e.state === 'done') held.push([id, e]);
    return held;
  }

  /** The ids journaled as started whose exec program was recorded, and not since answered (command-orphans.ts). */
  programs(): Array<[string, { issuedAt: number; program: ProgramRecord }]> {
    const found: Array<[string, { issuedAt: number; program: ProgramRecord }]> = [];
    for (const [id, e] of this.seen) if (e.state === 'started' && e.program) found.push([id, { issuedAt: e.issuedAt, program: e.program }]);
    return found;
  }

  /** Remembers `entry` without writing it (in this process only: the journal refused it). */
  remember(id: string, entry: JournalEntry): void {
    const old = this.seen.get(id);
    if (old?.state === 'done') this.held--;
    if (entry.state === 'done') this.held++;
    this.seen.delete(id);
    this.seen.set(id, entry);
    if (this.seen.size <= this.remembered) return;
    // The oldest id whose answer is not kept; at most `held` are passed over, and the ids whose
    // program runs (at most as many as run at once): forgotten, a program left running by a
    // client killed would not be found at its next start.
    for (const [oldId, e] of this.seen) {
      if (e.state === 'done' || (e.state === 'started' && e.program)) continue;
      this.seen.delete(oldId);
      this.floor = Math.max(this.floor, e.issuedAt);
      return;
    }
  }

  /** Takes one line of the journal; false when it is no line of ours (or a `done` whose answer cannot be read). */
  private readLine(line: string): boolean {
    const f = FLOOR_LINE.exec(line);
    if (f) {
      const floor = Number(f[1]);
      if (this.beyondClock(floor)) this.damagedValues++;
      else this.floor = Math.max(this.floor, floor);
      return true;
    }
    const p = PROGRAM_LINE.exec(line);
    if (p) return this.readProgram(p[1] as string, Number(p[2]), p[3] as string);
    const s = STATE_LINE.exec(line);
    const d = s ? null : DONE_LINE.exec(line);
    const m = s ?? d;
    if (!m) return false; // a line a power cut tore before its state (that change never returned), or damage
    const id = m[1] as string;
    // A line torn within its issuedAt reads as an earlier one: the id's earlier line has it whole.
    let read = Number(s ? (s[3] ?? 0) : m[2]);
    if (this.beyondClock(read)) {
      this.damagedValues++;
      read = this.judgedAgainst;
    }
    const issuedAt = Math.max(read, this.seen.get(id)?.issuedAt ?? 0);
    if (s) {
      this.remember(id, { state: s[2] as 'started' | 'answered', issuedAt });
      return true;
    }
    const answer = KeptAnswerSchema.safeParse(parseJson(d?.[3]));
    // A `done` whose answer cannot be read (torn by a power cut) is what the line before it said:
    // started. The command ran, or may have: it is answered as of unknown outcome (FIELD_COMMAND_OUTCOME_UNKNOWN), never run again.
    this.remember(id, answer.success ? { state: 'done', issuedAt, answer: answer.data } : { state: 'started', issuedAt });
    return answer.success;
  }

  /**
   * Takes a program line: the record read through its schema. One that fails it is counted, by id
   * (damagedPrograms), and the id stays started. Past a later state of the id (damage: a program
   * line only follows "started"), changes nothing.
   */
  private readProgram(id: string, issuedAt: number, json: string): boolean {
    const seen = this.seen.get(id);
    if (seen && seen.state !== 'started') return true;
    const program = ProgramRecordSchema.safeParse(parseJson(json));
    if (!program.success) this.damagedPrograms.push(id);
    // The issuedAt of the id's "started" line before it; the program line's own only when that was lost.
    const at = seen?.issuedAt ?? (this.beyondClock(issuedAt) ? this.judgedAgainst : issuedAt);
    this.remember(id, program.success ? { state: 'started', issuedAt: at, program: program.data } : { state: 'started', issuedAt: at });
    return true;
  }

  /**
   * Whether a value read is further past `judgedAgainst` (the clock, or the journal's last write when
   * that is later) than any command can be dated (damage). Not judged while neither says a plausible
   * time (before TIMINGS.fieldClockPlausibleMinMs: a clock not set yet, a journal written by one):
   * then every value would look so, and a floor not believed lets a forgotten id run again once the
   * clock is set.
   */
  private beyondClock(value: number): boolean {
    return this.judgedAgainst >= TIMINGS.fieldClockPlausibleMinMs && !(value <= this.judgedAgainst + TIMINGS.fieldCommandJournalAheadMaxMs);
  }

  /** The lines a rewrite holds: the floor, then each id kept, oldest first (the order they are forgotten in). */
  private render(): string[] {
    const lines = [`#floor ${this.floor}`];
    for (const [id, e] of this.seen) {
      // "started" first: see PROGRAM_LINE.
      if (e.state === 'started' && e.program) lines.push(format(id, { state: 'started', issuedAt: e.issuedAt }));
      lines.push(format(id, e));
    }
    return lines;
  }

  /** Rewrites the journal from memory (written aside, synced, renamed: after a crash or a power cut, one or the other). */
  private compact(path: string): void {
    const lines = this.render();
    const text = lines.join('\n') + '\n';
    replaceFileDurablySync(path, text);
    for (const e of this.seen.values()) if (e.state === 'done') delete e.unsynced; // written now
    this.lines = lines.length;
    this.bytes = this.compactedBytes = Buffer.byteLength(text);
  }
}

/**
 * One line of the journal. An answer known in this process only (`unsynced`) is written as what it
 * is: a rewrite is as durable as an append. A started id with its program is the program line (its
 * "started" line is on disk before it: CommandHandlers writes it before the handler runs).
 */
function format(id: string, e: JournalEntry): string {
  if (e.state === 'done') return `${id} done ${e.issuedAt} ${JSON.stringify(e.answer)}`;
  if (e.state === 'started' && e.program) return `${id} program ${e.issuedAt} ${JSON.stringify(e.program)}`;
  return `${id} ${e.state} ${e.issuedAt}`;
}

function parseJson(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
