import type { CommandFrame } from '../../shared/contract/downlink.ts';
import type { ResponsePayload } from '../../shared/contract/payloads.ts';
import type { ErrorCode } from '../../shared/errors.ts';
import type { KeptAnswer } from './command-journal.ts';

// The types of CommandHandlers (commands.ts): what a handler is and returns, and what a command is answered.

export type CommandOutcome = Pick<ResponsePayload, 'status' | 'result'>;
/**
 * `stopping` aborts when the field client stops (CommandHandlers.stop): a handler that can, ends what
 * it runs (commands-file.ts). `spawned`: a handler that starts a program in a process group of its
 * own says so at once with its pid, recorded in the journal (command-orphans.ts).
 */
export type CommandHandler = (params: unknown, frame: CommandFrame, stopping: AbortSignal, spawned: (pid: number) => void) => Promise<CommandOutcome> | CommandOutcome;

/** What to answer; `code` says why a command was refused without being run; `unanswered`: refused,
 * and no answer goes through the queue (see CommandHandlers); `deferred`: not run and not answered
 * now, for the reason in `code` and `result`: its next delivery is; `timestamp`: when the answer was
 * decided (kept with it, so that an answer queued again says the same). */
export type CommandAnswer = CommandOutcome & { code?: ErrorCode; unanswered?: true; deferred?: true; timestamp?: KeptAnswer['timestamp'] };
