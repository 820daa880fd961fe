import type { CommandFrame } from '../../shared/contract/downlink.ts';
import type { CommandJournal, KeptAnswer } from './command-journal.ts';
import { journalFailed, keepable } from './command-outcome.ts';
import type { CommandAnswer, CommandOutcome } from './command-types.ts';

// The lines CommandHandlers (commands.ts) journals in a command's life, "started", "done" and
// "answered", and what a command is answered when the journal refuses one (a full or read-only disk).

/** Journals `frame` as started (synced); or, when the journal refuses the line, what to answer. */
export function recordStarted(journal: CommandJournal, frame: CommandFrame): CommandAnswer | undefined {
  try {
    journal.write(frame.commandId, { state: 'started', issuedAt: frame.issuedAt });
  } catch (err) {
    // Never run without "started" on disk: delivered again after a restart, it would run twice.
    return journalFailed(err, 'not run: the journal cannot record that it started; its next delivery runs it');
  }
  return undefined;
}

/**
 * Journals `answer` and returns it. When the journal refuses the line (a full or read-only disk),
 * the answer is kept in memory and not queued: on disk the command is still "started", and a
 * restart would answer it "failed", contradicting an answer already queued. Its next delivery
 * tries the journal again, and answers it once the line is written.
 */
export function recordAnswer(journal: CommandJournal, commandId: string, issuedAt: number, answer: KeptAnswer): CommandAnswer {
  try {
    journal.write(commandId, { state: 'done', issuedAt, answer });
    return answer;
  } catch (err) {
    journal.remember(commandId, { state: 'done', issuedAt, answer, unsynced: true });
    return journalFailed(err, 'not answered now: the journal cannot record its answer (kept in memory); its next delivery answers it');
  }
}

/** Journals `outcome` as the command's answer (synced before it is queued), and returns it. */
export function recordOutcome(journal: CommandJournal, frame: CommandFrame, outcome: CommandOutcome): CommandAnswer {
  return recordAnswer(journal, frame.commandId, frame.issuedAt, keepable(outcome, new Date().toISOString()));
}

/**
 * Journals a command the journal knows as answered (its answer is in the durable queue). Throws
 * when the journal refuses the line, after remembering it as answered in memory (CommandHandlers.answered).
 */
export function recordAnswered(journal: CommandJournal, commandId: string): void {
  const seen = journal.get(commandId);
  if (!seen) return;
  const entry = { state: 'answered' as const, issuedAt: seen.issuedAt };
  try {
    journal.write(commandId, entry);
  } catch (err) {
    journal.remember(commandId, entry);
    throw err;
  }
}
