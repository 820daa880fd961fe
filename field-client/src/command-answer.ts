import type { CommandFrame } from '../../shared/contract/downlink.ts';
import type { ResponsePayload } from '../../shared/contract/payloads.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { CommandLogs } from './command-logs.ts';
import type { CommandAnswer } from './command-types.ts';

/** What queueAnswer needs of CommandHandlers (commands.ts). */
export interface AnswerHost {
  readonly logs: CommandLogs;
  /** journals the command as answered (CommandHandlers.answered): false when drop-oldest dropped its answer meanwhile; throws when the journal refuses the line */
  answered(commandId: string): boolean;
  /** queues the answers kept in the journal (KeptAnswers.drain) */
  drainKept(): Promise<unknown>;
}

/**
 * What becomes of a command's answer once run() gave it (CommandHandlers.answer): a refusal that
 * gets no answer and a command not answered now are logged (rate-limited); any other answer is
 * handed to `queueResponse` (resolved once it is in the durable queue), logged once, and journaled
 * as answered only then. An answer the queue refuses stays kept in the journal ("done"), queued
 * again at the command's next delivery. Never rejects on the queue's or the journal's refusal.
 */
export async function queueAnswer(h: AnswerHost, frame: CommandFrame, outcome: CommandAnswer, queueResponse: (r: ResponsePayload) => Promise<unknown>, log: Logger): Promise<void> {
  if (outcome.unanswered) {
    h.logs.refusal(log).write({ code: outcome.code, commandId: frame.commandId.slice(0, 128), command: frame.command.slice(0, 128) }, 'command refused; not run, not answered');
    return;
  }
  // Not answered now: each copy of the command delivered meanwhile comes here again, and a
  // compromised DMZ can deliver a genuine one without end, so these lines are rate-limited.
  if (outcome.deferred) {
    const fields = { code: outcome.code, commandId: frame.commandId, command: frame.command };
    h.logs.notAnswered(log, outcome.code === 'FIELD_COMMAND_JOURNAL_FAILED' ? 'error' : 'warn').write(fields, `command ${String(outcome.result)}`);
    return;
  }
  try {
    await queueResponse({
      commandId: frame.commandId,
      status: outcome.status,
      ...(outcome.result !== undefined ? { result: outcome.result } : {}),
      timestamp: outcome.timestamp ?? new Date().toISOString(),
    });
  } catch (err) {
    h.logs.notAnswered(log, 'error').write(
      { err: (err as Error).message, ...(err instanceof FieldStreamError ? { code: err.code } : {}), commandId: frame.commandId, status: outcome.status },
      'cannot queue the command response; it is queued again when the command is delivered again',
    );
    return;
  }
  // Once the answer is queued: once per command id, however often it was delivered.
  if (outcome.code) log.warn({ code: outcome.code, commandId: frame.commandId, command: frame.command }, 'command refused; not run');
  else log.info({ commandId: frame.commandId, command: frame.command, status: outcome.status }, 'command answered');
  try {
    // Dropped by drop-oldest before its sync returned: kept, and queued again once this delivery
    // is over (the walk passes over the ids being answered).
    if (!h.answered(frame.commandId)) setImmediate(() => void h.drainKept());
  } catch (err) {
    log.warn(
      { code: 'FIELD_COMMAND_JOURNAL_FAILED', err: (err as Error).message, commandId: frame.commandId },
      'command answer queued, but the journal cannot record it: after a restart, the same answer may be queued again (the command API records it once)',
    );
  }
}
