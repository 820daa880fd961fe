import { ResponsePayloadSchema, type ResponsePayload } from '../../shared/contract/payloads.ts';
import type { LimitedLog } from '../../shared/limited-log.ts';
import type { Logger } from '../../shared/logger.ts';
import { KeptAnswerSchema, type CommandJournal, type KeptAnswer } from './command-journal.ts';
import type { CommandAnswer } from './command-types.ts';
import type { QueuedMessage } from './queue/durable-queue.ts';

/** What KeptAnswers needs of CommandHandlers (commands.ts). */
export interface KeptAnswersHost {
  readonly journal: CommandJournal;
  /** ids being answered now (their own delivery queues their answer) */
  readonly answering: Set<string>;
  /** journals an answer as kept ("done") and returns it (deferred when the journal refused the line) */
  record(commandId: string, issuedAt: number, answer: KeptAnswer): CommandAnswer;
  /** journals a command as answered (its answer in the queue); false when its answer was dropped
   * while it was queued (kept, to be queued again: drain); throws when the journal refuses the line */
  answered(commandId: string): boolean;
  notAnsweredLog(log: Logger, level: 'warn' | 'error'): LimitedLog;
}

/**
 * The command answers kept in the journal ("done") until they are in the durable queue: those the
 * queue refused (full, FIELD_QUEUE_FULL_POLICY=reject), and those drop-oldest dropped from it.
 * Queued again as commands arrive (drain), and right after a drop.
 */
export class KeptAnswers {
  /** drain() is queueing kept answers (one drain at a time) */
  private draining = false;
  /** ids whose answer record drop-oldest dropped while their answer was being queued: not journaled "answered" then (CommandHandlers.answered) */
  readonly droppedWhileQueued = new Set<string>();

  constructor(private readonly h: KeptAnswersHost) {}

  /**
   * Drop-oldest (FIELD_QUEUE_FULL_POLICY=drop-oldest) dropped these records, not yet committed;
   * called before their segment is deleted (DurableQueue.onDrop). A command's answer among them was
   * journaled "answered", and its next deliveries are replays, not answered again: lost, the command
   * would end `expired` at the command API though it ran. So each is journaled again as kept
   * ("done": the same status, result and timestamp, synced before the segment goes), and queued
   * again right after (drain), as an answer the queue refused is.
   *
   * Kept in the journal rather than only appended again: a crash between the segment's deletion
   * and the new record's sync would lose it, and the journal answers it at the next start from what
   * it holds. Never "started" or forgotten: the command would then run again (or be answered
   * of unknown outcome), where a kept answer is only queued, so no delivery runs a command twice. Nothing
   * here is anyone else's to make: only a record of this queue that drop-oldest drops is answered
   * again, once per drop, within the queue's bound (it takes the room of the oldest data, which
   * drop-oldest drops anyway); a drain that drops another answer leaves it for the next drop or command.
   */
  dropped(dropped: readonly QueuedMessage[], queueResponse: (r: ResponsePayload) => Promise<unknown>, log: Logger): void {
    let kept = 0;
    for (const m of dropped) {
      if (m.dataType !== 'response') continue;
      const r = ResponsePayloadSchema.safeParse(m.payload);
      if (!r.success) continue;
      const { commandId, status, result, timestamp } = r.data;
      const seen = this.h.journal.get(commandId);
      // Its answer being queued now: the journal says "done" until the queue has synced it, and the
      // record dropped may be that very one. Marked whatever the journal says, so that no "answered"
      // line is written once the sync returns: the answer stays kept, and is queued again then
      // (answered). Passed over as "done", a drop in that window left the journal saying
      // "answered" of an answer no longer in the queue, and every later delivery was a replay.
      const queueing = this.h.answering.has(commandId);
      if (queueing) this.droppedWhileQueued.add(commandId);
      if (seen?.state === 'done') {
        if (queueing) kept++;
        continue; // kept already: queued again with the others
      }
      const answer = KeptAnswerSchema.parse({ status, ...(result !== undefined ? { result } : {}), timestamp });
      // An id the journal forgot was issued at or before its floor.
      const recorded = this.h.record(commandId, seen?.issuedAt ?? this.h.journal.floor, answer);
      kept++;
      if (recorded.deferred) this.h.notAnsweredLog(log, 'error').write({ code: recorded.code, commandId }, `command answer dropped from the full queue ${String(recorded.result)}`);
    }
    if (kept === 0) return;
    log.warn({ code: 'FIELD_QUEUE_DROPPED_OLDEST', answers: kept }, 'command answers dropped from the full queue: kept in the command journal, queued again');
    // Not within the queue's append that dropped them; one drain at a time.
    setImmediate(() => void this.drain(queueResponse, log));
  }

  /**
   * Queues the answers the queue refused before (kept in the journal, "done"), oldest first, until
   * the queue refuses one again. Waiting for each command's own next delivery was not enough: the
   * command API sends a command again only until its TTL, and a delivery that finds it stale
   * (FIELD_COMMAND_MAX_AGE_S) is refused before the journal is looked at, so such answers were
   * kept for ever, and LIMITS.fieldCommandAnswersHeldMax of them left the device running no command
   * again. Called as each command arrives (any command: the gateway delivers nothing else that
   * says the uplink may have room). The command API records an answer after its command expired
   * (internal-network/command-api/dispatcher.ts). Never rejects.
   */
  async drain(queueResponse: (r: ResponsePayload) => Promise<unknown>, log: Logger): Promise<ReadonlySet<string>> {
    const queued = new Set<string>();
    if (this.h.journal.held === 0 || this.draining) return queued;
    this.draining = true;
    /** an answer this walk queued was dropped before its sync returned: another walk once this one is over */
    let again = false;
    try {
      for (const [id] of this.h.journal.heldAnswers()) {
        if (this.h.answering.has(id)) continue; // its own delivery answers it now
        // As the journal says now: the list was taken before the walk waited on the queue, and a
        // delivery of the command meanwhile may have queued its answer already (then "answered").
        const kept = this.h.journal.get(id);
        if (kept?.state !== 'done') continue;
        this.h.answering.add(id);
        try {
          // Known in this process only (the journal refused the line): written first, as run() does.
          const answer: CommandAnswer = kept.unsynced ? this.h.record(id, kept.issuedAt, kept.answer) : kept.answer;
          if (answer.deferred) continue;
          try {
            await queueResponse({ commandId: id, status: answer.status, ...(answer.result !== undefined ? { result: answer.result } : {}), timestamp: answer.timestamp ?? new Date().toISOString() });
          } catch {
            return queued; // still no room: kept, tried again at the next command
          }
          queued.add(id);
          log.info({ commandId: id, status: answer.status }, 'command answer kept while the queue was full now queued');
          try {
            if (!this.h.answered(id)) again = true;
          } catch (err) {
            log.warn({ code: 'FIELD_COMMAND_JOURNAL_FAILED', err: (err as Error).message, commandId: id }, 'command answer queued, but the journal cannot record it: after a restart, the same answer may be queued again (the command API records it once)');
          }
        } finally {
          this.h.answering.delete(id);
        }
      }
    } catch (err) {
      log.error({ err, code: 'FIELD_COMMAND_JOURNAL_FAILED' }, 'cannot queue the command answers kept');
    } finally {
      this.draining = false;
    }
    if (again) setImmediate(() => void this.drain(queueResponse, log));
    return queued;
  }
}
