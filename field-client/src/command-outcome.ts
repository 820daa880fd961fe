import { FieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { KeptAnswerSchema, type KeptAnswer } from './command-journal.ts';
import type { CommandSlots } from './command-slots.ts';
import type { CommandAnswer, CommandOutcome } from './command-types.ts';

// The answers commands.ts gives: from what a handler returned or threw, and for a journal that refused a line.

/** Refusals that get no answer: the command is not the command API's (its authentication fails), or
 * its id was answered already (a replay). Answering those would let whoever can send frames (a
 * compromised gateway) fill the durable queue with answers, fsync'ed and waiting for receipts. */
export const UNANSWERED: ReadonlySet<ErrorCode> = new Set(['FIELD_COMMAND_UNSIGNED', 'FIELD_COMMAND_BAD_SIGNATURE', 'FIELD_COMMAND_REPLAYED']);
/**
 * A command found "started" at its next delivery: the client stopped while it ran (killed, a power
 * cut). It ran, or may have, and its program may even have run on to the end: answered as of unknown
 * outcome, never as failed (FIELD_COMMAND_OUTCOME_UNKNOWN, in the result of a `failed` answer: the
 * contract's statuses have none for "unknown", and a new one would be refused by a gateway or a
 * command API that does not know it).
 */
export const OUTCOME_UNKNOWN = (e => `${e.code}: ${e.message}`)(
  new FieldStreamError('FIELD_COMMAND_OUTCOME_UNKNOWN', 'the field client stopped (killed, or a power cut) while the command ran: whether it completed is unknown; not run again'),
);

/** What a handler threw, as text; never throws itself (String() of an object without a prototype does). */
export function thrownText(err: unknown): string {
  if (err instanceof Error) return String(err.message);
  try {
    return String(err);
  } catch {
    return 'the handler threw a value that is not an Error';
  }
}

/** A command not answered now, as the journal refused a line: answered at its next delivery. */
export function journalFailed(err: unknown, what: string): CommandAnswer {
  return { status: 'failed', result: `${what} (${(err as Error).message})`, code: 'FIELD_COMMAND_JOURNAL_FAILED', deferred: true };
}

/**
 * `held` answers wait for room in the queue (FIELD_QUEUE_FULL): one more would be held too, and they
 * would grow the journal without bound. Not journaled: its next delivery runs (or refuses) it.
 */
export function heldFull(held: number): CommandAnswer {
  return { status: 'failed', result: `${held} answers wait for room in the queue; not run, left for its next delivery`, code: 'FIELD_QUEUE_FULL', deferred: true };
}

/**
 * LIMITS.fieldCommandsWaitingMax commands wait for a slot already (command-slots.ts): this one takes
 * no place in the line. Not journaled: its next delivery runs it.
 */
export function waitingFull(slots: CommandSlots): CommandAnswer {
  return {
    status: 'failed',
    result: `${slots.waiting} commands wait already for one of the ${slots.size} that run at once (FIELD_COMMANDS_CONCURRENCY); not run, left for its next delivery`,
    code: 'FIELD_COMMANDS_WAITING_FULL',
    deferred: true,
  };
}

/** A command let go as the client stops (it waited for a slot, or was handed one then): not run, nor journaled; its next delivery runs it. */
export function notRunStopping(): CommandAnswer {
  return { status: 'failed', result: 'not run: the field client is stopping; its next delivery runs it', deferred: true };
}

/**
 * The answer as it will be queued: only its status and result, checked with the response's own
 * schema, and as JSON gives it back (so the answer kept and read back from the journal is the one
 * queued). A result no response carries (larger than LIMITS.stringMaxChars as JSON, nested deeper
 * than LIMITS.jsonMaxDepth, a "__proto__" key: a program's output is often JSON) is replaced by a
 * note with FIELD_COMMAND_RESULT_INVALID, and the status stays the handler's: kept whole, the answer
 * would be refused at every delivery; answered "failed", a command that completed would be sent
 * again by an operator told it had not, and run twice.
 */
export function keepable(given: CommandOutcome, timestamp: string): KeptAnswer {
  // A handler in plain JavaScript may return anything (nothing at all): checked as an outcome
  // without a status, answered "failed" with a note, rather than a TypeError here.
  const outcome = (typeof given === 'object' && given !== null ? given : {}) as Partial<CommandOutcome>;
  const answer = { status: outcome.status, ...(outcome.result !== undefined ? { result: outcome.result } : {}), timestamp };
  const checked = KeptAnswerSchema.safeParse(answer);
  if (checked.success) return JSON.parse(JSON.stringify(checked.data)) as KeptAnswer;
  const status = KeptAnswerSchema.shape.status.safeParse(outcome.status);
  const problem = checked.error.issues.find((i) => i.path[0] === 'result') ?? checked.error.issues[0];
  const e = new FieldStreamError('FIELD_COMMAND_RESULT_INVALID', `the command's result cannot be answered: ${problem ? `${problem.path.join('.')} ${problem.message}` : 'invalid'}`);
  return { status: status.success ? status.data : 'failed', result: `${e.code}: ${e.message}`.slice(0, 1024), timestamp };
}
