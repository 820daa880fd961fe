import { FieldStreamError } from '../../shared/errors.ts';
import { KeptAnswerSchema, type KeptAnswer } from './command-journal.ts';
import type { CommandAnswer, CommandOutcome } from './commands.ts';

// The answers commands.ts gives: from what a handler returned or threw, and for a journal that refused a line.

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
