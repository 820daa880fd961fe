import { z } from 'zod';
import { FieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { bootId, processStart, runningGroups } from '../../shared/process-identity.ts';
import type { CommandJournal, KeptAnswer } from './command-journal.ts';
import { keepable } from './command-outcome.ts';
import type { CommandAnswer } from './command-types.ts';

/**
 * An exec command's program runs in a process group of its own (commands-file.ts), which a client
 * killed with SIGKILL does not take with it: the program ran on, unseen, and the restarted client
 * answered its command (at its next delivery) with no word of it. So the group is recorded in the
 * command journal as the program is spawned, with what tells its leader apart from a later process
 * given the same id (its start time and the machine's boot: shared/process-identity.ts), and the
 * next start ends what still runs of it, as an orderly stop would have.
 */
export const ProgramRecordSchema = z.strictObject({
  /** the program's pid, and its process group's id (it leads a group of its own) */
  pgid: z.number().int().min(2).max(4_194_304), // Linux's PID_MAX_LIMIT
  /** clock ticks after boot at which it started (/proc/PID/stat) */
  start: z.string().regex(/^\d{1,20}$/),
  /** the boot it ran in */
  boot: z.string().min(1).max(64),
});
export type ProgramRecord = z.infer<typeof ProgramRecordSchema>;

/**
 * The record of `pid`, just spawned at the head of a group of its own; undefined where this machine
 * says nothing of its processes (no /proc): no later start could tell it from another process.
 */
export function programRecord(pid: number): ProgramRecord | undefined {
  const start = processStart(pid);
  const boot = bootId();
  return start !== undefined && boot !== undefined ? { pgid: pid, start, boot } : undefined;
}

/**
 * Journals the process group of a program just spawned for `commandId` (synced before the handler
 * goes on), for a start after a SIGKILL to end it (endOrphans). Nothing is recorded where /proc
 * says nothing to tell the process apart by. Returns the journal's refusal: the program runs all
 * the same (CommandHandlers logs it once the command is answered).
 */
export function recordProgram(journal: CommandJournal, commandId: string, pid: number): Error | undefined {
  const program = programRecord(pid);
  const seen = journal.get(commandId);
  if (!program || seen?.state !== 'started') return undefined;
  try {
    journal.write(commandId, { state: 'started', issuedAt: seen.issuedAt, program });
    return undefined;
  } catch (err) {
    return err as Error;
  }
}

/**
 * What became of a recorded program at the next start:
 * - ended: its leader still ran, the same process (same boot, same start time): its group was ended.
 * - gone: no process has its id; or its leader is gone and nothing of its group runs.
 * - reused: its id is another process's now (another start time): nothing is signalled.
 * - rebooted: the machine restarted since (another boot id): nothing of it runs; nothing is signalled.
 * - refused: the group could not be signalled (EPERM: the client runs as another user now).
 * - unseen: this machine says nothing of its processes now (no /proc, no boot id): whether the
 *   program still runs cannot be told; nothing is signalled.
 */
export type ProgramFate = 'ended' | 'gone' | 'reused' | 'rebooted' | 'refused' | 'unseen';

/**
 * Ends the process group `rec` names if its leader is still that process: SIGTERM, and SIGKILL
 * `graceMs` later to what is left, as an orderly stop does (commands-file.ts). Resolves once nothing
 * of the group runs (zombies aside: their parent, the client, is gone), or `graceMs` after the SIGKILL.
 */
export async function endProgramGroup(rec: ProgramRecord, graceMs: number): Promise<ProgramFate> {
  // No boot id now is no other boot: a /proc not mounted (or hidden) at this start says nothing of
  // the program, which may well run on.
  const boot = bootId();
  if (boot === undefined) return 'unseen';
  if (boot !== rec.boot) return 'rebooted';
  const start = processStart(rec.pgid);
  if (start === undefined) return 'gone';
  if (start !== rec.start) return 'reused';
  if (await groups.ended(rec.pgid, 0)) return 'gone'; // a zombie, left uncollected
  // Looked at again right before the signal: the look above came a moment later.
  if (processStart(rec.pgid) !== rec.start) return 'gone';
  const sent = signalGroup(rec.pgid, 'SIGTERM');
  if (sent !== 'sent') return sent;
  if (await groups.ended(rec.pgid, graceMs)) return 'ended';
  // Still its group: its leader the same process, or gone with members left (a group's id is not
  // given to a new process while a member of it lives). Another start time: the group ended at the
  // last look, and its id went to another process since.
  const now = processStart(rec.pgid);
  if (now !== undefined && now !== rec.start) return 'ended';
  signalGroup(rec.pgid, 'SIGKILL');
  await groups.ended(rec.pgid, graceMs);
  return 'ended';
}

function signalGroup(pgid: number, signal: NodeJS.Signals): 'sent' | 'gone' | 'refused' {
  try {
    process.kill(-pgid, signal);
    return 'sent';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? 'refused' : 'gone';
  }
}

/**
 * The waits for process groups to end, looked at together: one reading of /proc a look
 * (runningGroups), every TIMINGS.fieldCommandOrphanPollMs, for all the groups waited on. A start
 * ending tens of programs read every process of the machine for each of them at every look, and
 * spent their whole grace doing it.
 */
class GroupWaits {
  private readonly waits = new Set<{ pgid: number; until: number; resolve: (ended: boolean) => void }>();
  private looking = false;

  /** Resolves true once nothing of group `pgid` runs, false if it still runs `ms` from now (0: one look). */
  ended(pgid: number, ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      this.waits.add({ pgid, until: Date.now() + ms, resolve });
      if (this.looking) return;
      this.looking = true;
      // The first look once the waits begun at once are all in: one reading for all of them.
      setImmediate(() => this.look());
    });
  }

  private look(): void {
    const running = runningGroups(new Set([...this.waits].map((w) => w.pgid)));
    const now = Date.now();
    for (const w of this.waits) {
      if (running.has(w.pgid) && now < w.until) continue;
      this.waits.delete(w);
      w.resolve(!running.has(w.pgid));
    }
    if (this.waits.size === 0) this.looking = false;
    else setTimeout(() => this.look(), TIMINGS.fieldCommandOrphanPollMs);
  }
}

const groups = new GroupWaits();

/** What endOrphans needs of CommandHandlers (commands.ts). */
export interface OrphansHost {
  readonly journal: CommandJournal;
  /** journals an answer as kept ("done") and returns it (deferred when the journal refused the line) */
  record(commandId: string, issuedAt: number, answer: KeptAnswer): CommandAnswer;
}

const WHY: Record<ProgramFate, string> = {
  ended: 'its program still ran at the restart, and was ended (SIGTERM to its process group, SIGKILL to what was left of it after the grace)',
  gone: 'its program had ended by the restart',
  reused: 'its program had ended by the restart (its process id is another process\'s now, left alone)',
  rebooted: 'the machine restarted since, which ended its program',
  refused: 'its program still runs, and the client may not signal it (another user)',
  unseen: 'this machine says nothing of its processes now (no /proc): whether its program still runs is unknown, and nothing was signalled',
};

/**
 * At the start, before any command is delivered: ends the program of each command the journal says
 * started, with a program recorded and no answer (the client was killed while it ran), and answers
 * the command as an orderly stop does: `failed`, FIELD_COMMAND_OUTCOME_UNKNOWN, kept in the journal
 * and queued at the next connection (KeptAnswers.drain). Never rejects.
 */
export async function endOrphans(h: OrphansHost, log: Logger, graceMs = TIMINGS.fieldCommandStopGraceMs): Promise<void> {
  await Promise.all(
    h.journal.programs().map(async ([commandId, { issuedAt, program }]) => {
      try {
        const fate = await endProgramGroup(program, graceMs);
        const fields = { code: 'FIELD_COMMAND_OUTCOME_UNKNOWN' as const, commandId, pgid: program.pgid, fate };
        if (fate === 'ended' || fate === 'refused' || fate === 'unseen') log.warn(fields, 'the field client was killed while this command\'s program ran; the program ran on');
        else log.info(fields, 'the field client was killed while this command\'s program ran');
        // Delivered and answered meanwhile: not answered twice.
        if (h.journal.get(commandId)?.state !== 'started') return;
        const e = new FieldStreamError('FIELD_COMMAND_OUTCOME_UNKNOWN', `the field client was killed while the command ran; ${WHY[fate]}: what it did is unknown; not run again`);
        const answer = h.record(commandId, issuedAt, keepable({ status: 'failed', result: `${e.code}: ${e.message}` }, new Date().toISOString()));
        if (answer.deferred) log.error({ code: answer.code, commandId }, `command ${String(answer.result)}`);
      } catch (err) {
        log.error({ err, commandId }, 'cannot end the program of a command the field client was killed while it ran');
      }
    }),
  );
}
