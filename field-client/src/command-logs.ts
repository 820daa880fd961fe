import { LimitedLog } from '../../shared/limited-log.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import type { CommandJournal } from './command-journal.ts';

/**
 * The log lines of CommandHandlers (commands.ts) that whoever sends frames decides how often to
 * cause: a refusal, a copy, a command not answered now. A compromised DMZ can deliver a genuine
 * command again without end, and forgeries without end: each kind is rate-limited
 * (LIMITS.fieldCommandLogMaxPerWindow per TIMINGS.fieldCommandLogWindowMs), made at its first line.
 */
export class CommandLogs {
  /** refusals that are not answered (a flood of forged commands would be a line each) */
  private refusals: LimitedLog | undefined;
  /** commands not answered now (not run, or their answer not queued), by level */
  private readonly notAnsweredByLevel = new Map<'warn' | 'error', LimitedLog>();
  /** copies of a command delivered while it is answered */
  private copies: LimitedLog | undefined;

  private limited(log: Logger, what: string, level: 'warn' | 'error' = 'warn'): LimitedLog {
    return new LimitedLog(log, { level, maxPerWindow: LIMITS.fieldCommandLogMaxPerWindow, windowMs: TIMINGS.fieldCommandLogWindowMs, what });
  }

  /** The log of commands not answered now (not run, or their answer not queued), by level. */
  notAnswered(log: Logger, level: 'warn' | 'error'): LimitedLog {
    let l = this.notAnsweredByLevel.get(level);
    if (!l) {
      l = this.limited(log, 'commands not answered now', level);
      this.notAnsweredByLevel.set(level, l);
    }
    return l;
  }

  /** The log of refusals not answered (unsigned, forged, replayed). */
  refusal(log: Logger): LimitedLog {
    return (this.refusals ??= this.limited(log, 'unanswered command refusals'));
  }

  /** The log of copies delivered while their command is answered. */
  copy(log: Logger): LimitedLog {
    return (this.copies ??= this.limited(log, 'command copies delivered while answered'));
  }
}

/**
 * Logs what the journal could not do and did not throw, once a command was handled: a program's
 * record it refused (`programRecordFailure`), a failed rewrite, a failed close. Not rate-limited: at
 * most a line each per command run.
 */
export function logJournalTroubles(log: Logger, journal: CommandJournal, programRecordFailure: Error | undefined): void {
  if (programRecordFailure) log.warn({ code: 'FIELD_COMMAND_JOURNAL_FAILED', err: programRecordFailure.message }, 'cannot record an exec program\'s process group in the command journal: had the client been killed while it ran, its next start could not have ended it');
  const err = journal.takeCompactionFailure();
  if (err) log.warn({ code: 'FIELD_COMMAND_JOURNAL_FAILED', err: err.message }, 'cannot rewrite the command journal (its lines are synced); tried again at its next change');
  const closeFailed = journal.takeCloseFailure();
  if (closeFailed) log.warn({ code: 'FILE_CLOSE_FAILED', err: closeFailed.message }, 'command journal synced, its close failed; the lines count as written');
}
