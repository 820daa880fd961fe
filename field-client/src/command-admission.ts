import type { CommandFrame } from '../../shared/contract/downlink.ts';
import { ERRORS, type ErrorCode } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { checkCommand, type CommandGuardOptions } from './command-guard.ts';
import type { CommandJournal } from './command-journal.ts';
import { heldFull, keepable, OUTCOME_UNKNOWN, UNANSWERED } from './command-outcome.ts';
import { recordAnswer, recordOutcome } from './command-records.ts';
import type { CommandAnswer } from './command-types.ts';

// Whether a command delivered to CommandHandlers (commands.ts) may start, and what it is answered
// when it may not: the checks (command-guard.ts), the journal's replay defence, and its bounds.

/** The refusals counted in CommandHandlers.stats. */
export interface RefusalStats {
  refused: number;
  refusedByCode: Partial<Record<ErrorCode, number>>;
  unanswered: number;
}

/** What answerBeforeStart needs of CommandHandlers. */
export interface AdmissionHost {
  readonly guard: CommandGuardOptions;
  readonly journal: CommandJournal;
  readonly stats: RefusalStats;
}

/**
 * What is answered instead of running the command — a refusal, a kept answer, an interrupted run,
 * "not now" — or undefined when it may start. Nothing is journaled when it may.
 */
export function answerBeforeStart(h: AdmissionHost, frame: CommandFrame, now: number): CommandAnswer | undefined {
  const refused = checkCommand(frame, h.guard, now) ?? replayed(h.journal, frame);
  if (refused) {
    countRefused(h.stats, refused);
    const answer = { status: 'rejected' as const, result: { code: refused, message: ERRORS[refused].description }, code: refused };
    // Stale and future-dated commands are authenticated only when the device holds a key. An id
    // the journal knows was answered (or run) before; one issued at or before its floor may be
    // one it forgot.
    if (UNANSWERED.has(refused) || !h.guard.key || h.journal.get(frame.commandId) || frame.issuedAt <= h.journal.floor) {
      h.stats.unanswered++;
      return { ...answer, unanswered: true };
    }
    // Journaled as its answer, like a command run, before it is queued: the command API takes
    // "rejected" as final, so this id must never run afterwards, also once the device's clock is
    // right again (set by NTP after a boot without one) and the command is delivered again (sent
    // again while the answer was on its way, or replayed by the DMZ), and after a restart.
    if (h.journal.held >= LIMITS.fieldCommandAnswersHeldMax) return heldFull(h.journal.held);
    const kept = recordAnswer(h.journal, frame.commandId, frame.issuedAt, keepable(answer, new Date().toISOString()));
    return kept.deferred ? kept : { ...kept, code: refused };
  }
  const seen = h.journal.get(frame.commandId);
  // Answered before but not known to be in the queue: the same answer again.
  if (seen?.state === 'done') return seen.unsynced ? recordAnswer(h.journal, frame.commandId, seen.issuedAt, seen.answer) : seen.answer;
  // Seen before but never answered: the client died while it ran. Never run a command twice.
  if (seen?.state === 'started') return recordOutcome(h.journal, frame, { status: 'failed', result: OUTCOME_UNKNOWN });
  if (h.journal.held >= LIMITS.fieldCommandAnswersHeldMax) return heldFull(h.journal.held);
  return undefined;
}

/** Counts a refusal by its code (CommandHandlers.stats). */
export function countRefused(stats: RefusalStats, code: ErrorCode): void {
  stats.refused++;
  stats.refusedByCode[code] = (stats.refusedByCode[code] ?? 0) + 1;
}

/** FIELD_COMMAND_REPLAYED for an id the journal knows as answered, or an unknown one issued at or before its floor (one it may have forgotten). */
function replayed(journal: CommandJournal, frame: CommandFrame): ErrorCode | undefined {
  const seen = journal.get(frame.commandId);
  if (seen?.state === 'answered') return 'FIELD_COMMAND_REPLAYED';
  if (!seen && frame.issuedAt <= journal.floor) return 'FIELD_COMMAND_REPLAYED';
  return undefined;
}
