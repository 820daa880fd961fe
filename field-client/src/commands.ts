import type { CommandFrame } from '../../shared/contract/downlink.ts';
import type { ResponsePayload } from '../../shared/contract/payloads.ts';
import { answerTestCommand, TEST_COMMAND } from '../../shared/contract/test-command.ts';
import { ERRORS, FieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { LimitedLog } from '../../shared/limited-log.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { checkCommand, type CommandGuardOptions } from './command-guard.ts';
import { CommandJournal, type KeptAnswer } from './command-journal.ts';
import { KeptAnswers } from './command-kept-answers.ts';
import { endOrphans, recordProgram } from './command-orphans.ts';
import { journalFailed, keepable, thrownText } from './command-outcome.ts';
import { fileHandlers, type CommandsFile } from './commands-file.ts';
import type { QueuedMessage } from './queue/durable-queue.ts';

export type CommandOutcome = Pick<ResponsePayload, 'status' | 'result'>;
/**
 * `stopping` aborts when the field client stops (CommandHandlers.stop): a handler that can, ends what
 * it runs (commands-file.ts). `spawned`: a handler that starts a program in a process group of its
 * own says so at once with its pid, recorded in the journal (command-orphans.ts).
 */
export type CommandHandler = (params: unknown, frame: CommandFrame, stopping: AbortSignal, spawned: (pid: number) => void) => Promise<CommandOutcome> | CommandOutcome;

/** command ids remembered (and journaled); the journal file is rewritten when it holds twice as many lines */
const REMEMBERED = 10_000;

/** What to answer; `code` says why a command was refused without being run; `unanswered`: refused,
 * and no answer goes through the queue (see CommandHandlers); `deferred`: not run and not answered
 * now, for the reason in `code` and `result`: its next delivery is; `timestamp`: when the answer was
 * decided (kept with it, so that an answer queued again says the same). */
export type CommandAnswer = CommandOutcome & { code?: ErrorCode; unanswered?: true; deferred?: true; timestamp?: KeptAnswer['timestamp'] };

/** Refusals that get no answer: the command is not the command API's (its authentication fails), or
 * its id was answered already (a replay). Answering those would let whoever can send frames (a
 * compromised gateway) fill the durable queue with answers, fsync'ed and waiting for receipts. */
const UNANSWERED: ReadonlySet<ErrorCode> = new Set(['FIELD_COMMAND_UNSIGNED', 'FIELD_COMMAND_BAD_SIGNATURE', 'FIELD_COMMAND_REPLAYED']);
/**
 * A command found "started" at its next delivery: the client stopped while it ran (killed, a power
 * cut). It ran, or may have, and its program may even have run on to the end: answered as of unknown
 * outcome, never as failed (FIELD_COMMAND_OUTCOME_UNKNOWN, in the result of a `failed` answer: the
 * contract's statuses have none for "unknown", and a new one would be refused by a gateway or a
 * command API that does not know it).
 */
const OUTCOME_UNKNOWN = (e => `${e.code}: ${e.message}`)(
  new FieldStreamError('FIELD_COMMAND_OUTCOME_UNKNOWN', 'the field client stopped (killed, or a power cut) while the command ran: whether it completed is unknown; not run again'),
);

/**
 * Runs commands and guarantees one answer per command id, across reconnects and restarts: each id
 * is journaled (command-journal.ts, with its issuedAt) as "started" before its handler runs, "done"
 * with its answer once it ran, and "answered" once that answer is in the durable queue. A command
 * delivered again is not run again: a "done" one has its kept answer queued again (the queue may
 * have refused it, FIELD_QUEUE_FULL; any command's arrival tries those again: KeptAnswers.drain), and one that was running when the client died is answered
 * "failed" with FIELD_COMMAND_OUTCOME_UNKNOWN rather than run a second time. A command without a handler is answered "rejected".
 *
 * Commands are checked first (command-guard.ts: authentication and freshness); a refused one runs
 * nothing. It is answered "rejected" with its code only when it is the command API's own (its MAC
 * verified under the device's key: stale or future-dated), once per command id, and that answer is
 * journaled as a run command's is, so the id never runs afterwards (the command API takes the
 * rejection as final); any other refusal is not journaled (so forgeries cannot crowd real ids out
 * of the journal). Each answer takes room in the
 * durable queue, so what anyone could send without bound — a command failing authentication, an id
 * answered already — gets no answer, only a count (stats, metrics) and a rate-limited log line. The journal is the replay defence: an authenticated command whose
 * id was answered before is refused with FIELD_COMMAND_REPLAYED. It is bounded: the newest REMEMBERED
 * ids are kept, and the `floor`, the latest issuedAt among the ids forgotten, refuses every unknown
 * command issued at or before it — one of those could be a forgotten id sent again.
 */
export class CommandHandlers {
  private readonly handlers = new Map<string, CommandHandler>();
  private readonly journal: CommandJournal;
  private readonly running = new Set<string>();
  /** ids answer() handles now, from the checks until the answer is in the queue (or refused by it) */
  private readonly answering = new Set<string>();
  /** for status(): commands run, and commands refused by code */
  readonly stats = { run: 0, refused: 0, refusedByCode: {} as Partial<Record<ErrorCode, number>>, unanswered: 0 };
  /** aborted by stop(): no new command runs, and the handlers running are told (their programs ended) */
  private readonly stopping = new AbortController();
  /** answer() calls under way, which stop() waits for */
  private readonly underWay = new Set<Promise<void>>();
  /** the answers kept in the journal until they are in the queue: queued again (command-kept-answers.ts) */
  private readonly kept: KeptAnswers;
  /** refusals that are not answered, logged (a flood of forged commands would be a line each) */
  private refusalLog: LimitedLog | undefined;
  /** commands not answered now (not run, or their answer not queued), logged by level (notAnsweredLog) */
  private readonly notAnsweredLogs = new Map<'warn' | 'error', LimitedLog>();
  /** copies of a command delivered while it is answered, logged (a gateway can send them without end) */
  private copyLog: LimitedLog | undefined;
  /** the journal's refusal of a program's record (spawned), not yet logged */
  private programRecordFailure: Error | undefined;

  constructor(
    private readonly guard: CommandGuardOptions,
    journal?: string,
    /** command ids remembered (REMEMBERED; smaller in tests) */
    remembered = REMEMBERED,
  ) {
    this.journal = new CommandJournal(journal, remembered);
    this.kept = new KeptAnswers({
      journal: this.journal,
      answering: this.answering,
      record: (id, issuedAt, answer) => this.record(id, issuedAt, answer),
      answered: (id) => this.answered(id),
      notAnsweredLog: (log, level) => this.notAnsweredLog(log, level),
    });
    // Every device answers the management API's test event by itself (it changes nothing here);
    // like any command it runs only once authenticated and fresh (checkCommand, below).
    this.register(TEST_COMMAND, (params, frame) => answerTestCommand(params, frame.issuedAt));
  }

  /** Lines of the journal that could not be read at the start (CommandJournal.unreadable). */
  get journalUnreadable(): number {
    return this.journal.unreadable;
  }

  /** Values of the journal read at the start far past the device's clock, not believed (CommandJournal.damagedValues). */
  get journalDamagedValues(): number {
    return this.journal.damagedValues;
  }

  register(name: string, handler: CommandHandler): this {
    this.handlers.set(name, handler);
    return this;
  }

  /** Handlers from FIELD_COMMANDS_FILE (commands-file.ts). `publishLocal` sends to the local MQTT input. */
  configure(file: CommandsFile, publishLocal: ((topic: string, payload: string) => Promise<void>) | undefined): this {
    for (const [name, handler] of fileHandlers(file, publishLocal)) this.register(name, handler);
    return this;
  }

  /**
   * The answer to send, or undefined when this command is running now (its answer follows).
   *
   * A SIGKILL (or a power cut) at each instant, and what the command's next delivery then gets:
   * - before "started" is synced: nothing ran; it runs.
   * - while the handler runs, or after it returned but before "done" is synced: the journal says
   *   "started"; answered "failed" with FIELD_COMMAND_OUTCOME_UNKNOWN (not run again).
   * - after "done" is synced, before its answer is in the queue: the kept answer, queued now.
   * - after the answer is in the queue, before "answered" is synced: the kept answer again, the same
   *   (status, result, timestamp): the command API records a command's response once.
   * - after "answered" is synced: FIELD_COMMAND_REPLAYED, no answer (one is in the queue).
   */
  async run(frame: CommandFrame, now = Date.now()): Promise<CommandAnswer | undefined> {
    if (this.running.has(frame.commandId)) return undefined;
    const refused = checkCommand(frame, this.guard, now) ?? this.replayed(frame);
    if (refused) {
      this.countRefused(refused);
      const answer = { status: 'rejected' as const, result: { code: refused, message: ERRORS[refused].description }, code: refused };
      // Stale and future-dated commands are authenticated only when the device holds a key. An id
      // the journal knows was answered (or run) before; one issued at or before its floor may be
      // one it forgot.
      if (UNANSWERED.has(refused) || !this.guard.key || this.journal.get(frame.commandId) || frame.issuedAt <= this.journal.floor) {
        this.stats.unanswered++;
        return { ...answer, unanswered: true };
      }
      // Journaled as its answer, like a command run, before it is queued: the command API takes
      // "rejected" as final, so this id must never run afterwards, also once the device's clock is
      // right again (set by NTP after a boot without one) and the command is delivered again (sent
      // again while the answer was on its way, or replayed by the DMZ), and after a restart.
      if (this.journal.held >= LIMITS.fieldCommandAnswersHeldMax) return this.heldFull();
      const kept = this.record(frame.commandId, frame.issuedAt, keepable(answer, new Date().toISOString()));
      return kept.deferred ? kept : { ...kept, code: refused };
    }
    const seen = this.journal.get(frame.commandId);
    // Answered before but not known to be in the queue: the same answer again.
    if (seen?.state === 'done') return seen.unsynced ? this.record(frame.commandId, seen.issuedAt, seen.answer) : seen.answer;
    // Seen before but never answered: the client died while it ran. Never run a command twice.
    if (seen?.state === 'started') return this.done(frame, { status: 'failed', result: OUTCOME_UNKNOWN });
    if (this.journal.held >= LIMITS.fieldCommandAnswersHeldMax) return this.heldFull();
    try {
      this.journal.write(frame.commandId, { state: 'started', issuedAt: frame.issuedAt });
    } catch (err) {
      // Never run without "started" on disk: delivered again after a restart, it would run twice.
      return journalFailed(err, 'not run: the journal cannot record that it started; its next delivery runs it');
    }
    this.stats.run++;
    const handler = this.handlers.get(frame.command);
    if (!handler) return this.done(frame, { status: 'rejected', result: `unknown command "${frame.command}"` });
    this.running.add(frame.commandId);
    let outcome: CommandOutcome;
    try {
      outcome = await handler(frame.params, frame, this.stopping.signal, (pid) => (this.programRecordFailure = recordProgram(this.journal, frame.commandId, pid) ?? this.programRecordFailure));
    } catch (err) {
      // Whatever was thrown (null, a string: JavaScript throws anything): reading `.message` of
      // null threw again, past the journal's "done", and the command was answered only at its
      // next delivery, as interrupted by a restart, which it was not.
      outcome = { status: 'failed', result: thrownText(err) };
    } finally {
      this.running.delete(frame.commandId);
    }
    return this.done(frame, outcome);
  }

  /**
   * At the start, before commands are delivered: ends the programs a client killed before left
   * running, and answers their commands (command-orphans.ts). Never rejects.
   */
  endOrphans(log: Logger): Promise<void> {
    return endOrphans({ journal: this.journal, record: (id, issuedAt, answer) => this.record(id, issuedAt, answer) }, log);
  }

  /** Program records of the journal read at the start that failed their schema: their command ids (CommandJournal.damagedPrograms). */
  get journalDamagedPrograms(): readonly string[] {
    return this.journal.damagedPrograms;
  }

  /**
   * The queue refuses answers (FIELD_QUEUE_FULL): one more would be held too, and they would grow
   * the journal without bound. Not journaled: its next delivery runs (or refuses) it.
   */
  private heldFull(): CommandAnswer {
    return { status: 'failed', result: `${this.journal.held} answers wait for room in the queue; not run, left for its next delivery`, code: 'FIELD_QUEUE_FULL', deferred: true };
  }

  /** Journals `outcome` as the command's answer (synced before it is queued), and returns it. */
  private done(frame: CommandFrame, outcome: CommandOutcome): CommandAnswer {
    return this.record(frame.commandId, frame.issuedAt, keepable(outcome, new Date().toISOString()));
  }

  /**
   * Journals `answer` and returns it. When the journal refuses the line (a full or read-only disk),
   * the answer is kept in memory and not queued: on disk the command is still "started", and a
   * restart would answer it "failed", contradicting an answer already queued. Its next delivery
   * tries the journal again, and answers it once the line is written.
   */
  private record(commandId: string, issuedAt: number, answer: KeptAnswer): CommandAnswer {
    try {
      this.journal.write(commandId, { state: 'done', issuedAt, answer });
      return answer;
    } catch (err) {
      this.journal.remember(commandId, { state: 'done', issuedAt, answer, unsynced: true });
      return journalFailed(err, 'not answered now: the journal cannot record its answer (kept in memory); its next delivery answers it');
    }
  }

  /**
   * Runs a command and hands its answer to `queueResponse` (which resolves once the answer is in
   * the durable queue); journals it as answered only then. An answer the queue refuses stays in the
   * journal ("done"), and is queued again when the command is delivered again. Logs what happened;
   * never rejects.
   */
  answer(frame: CommandFrame, queueResponse: (r: ResponsePayload) => Promise<unknown>, log: Logger): Promise<void> {
    const p = this.answerNow(frame, queueResponse, log);
    this.underWay.add(p);
    void p.finally(() => this.underWay.delete(p));
    return p;
  }

  /**
   * At the client's orderly stop, before its queue closes: runs no new command (its next delivery,
   * after the restart, runs it), tells the handlers running (an exec program's process group gets
   * SIGTERM, then SIGKILL after TIMINGS.fieldCommandStopGraceMs: commands-file.ts), and waits for
   * their answers to be journaled and queued, up to twice that grace. A handler still running then
   * (one registered in code, which may not heed the signal) is left: the journal says "started",
   * and its next delivery after the restart answers FIELD_COMMAND_OUTCOME_UNKNOWN.
   */
  async stop(): Promise<void> {
    this.stopping.abort();
    if (this.underWay.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.underWay]), new Promise((r) => (timer = setTimeout(r, 2 * TIMINGS.fieldCommandStopGraceMs)))]);
    clearTimeout(timer);
  }

  private async answerNow(frame: CommandFrame, queueResponse: (r: ResponsePayload) => Promise<unknown>, log: Logger): Promise<void> {
    // A copy delivered while the command runs or its answer is being queued gets nothing: the
    // first's answer is the one. Past run(), until the queue took it, the journal says "done" (or
    // still "started" while its line is written), and a copy would queue it a second time (or
    // answer it of unknown outcome, contradicting it). If the queue refuses it, the answer is kept
    // and queued when a command next arrives (KeptAnswers.drain).
    if (this.isCopy(frame, log)) return;
    // This command's own kept answer among them: queued, and that is its answer.
    if ((await this.kept.drain(queueResponse, log)).has(frame.commandId)) return;
    if (this.isCopy(frame, log)) return; // delivered again meanwhile
    this.answering.add(frame.commandId);
    try {
      await this.answerOnce(frame, queueResponse, log);
    } catch (err) {
      // Not expected (run() and answered() catch the journal's failures); field-client.ts does not
      // wait for this promise, and a rejection would end the process.
      log.error({ err, commandId: frame.commandId }, 'command handling failed');
    } finally {
      this.answering.delete(frame.commandId);
    }
    const refused = this.programRecordFailure;
    this.programRecordFailure = undefined;
    if (refused) log.warn({ code: 'FIELD_COMMAND_JOURNAL_FAILED', err: refused.message }, 'cannot record an exec program\'s process group in the command journal: had the client been killed while it ran, its next start could not have ended it');
    const err = this.journal.takeCompactionFailure();
    if (err) log.warn({ code: 'FIELD_COMMAND_JOURNAL_FAILED', err: err.message }, 'cannot rewrite the command journal (its lines are synced); tried again at its next change');
    const closeFailed = this.journal.takeCloseFailure();
    if (closeFailed) log.warn({ code: 'FILE_CLOSE_FAILED', err: closeFailed.message }, 'command journal synced, its close failed; the lines count as written');
  }

  /** Drop-oldest dropped these records: a command's answer among them is kept and queued again (KeptAnswers.dropped). */
  answersDropped(dropped: readonly QueuedMessage[], queueResponse: (r: ResponsePayload) => Promise<unknown>, log: Logger): void {
    this.kept.dropped(dropped, queueResponse, log);
  }

  /**
   * Queues the answers the journal keeps (a crash after a command ran and before its answer was in
   * the queue, or a queue that refused it): at each connection to a gateway (field-client.ts), so
   * that they go out after a restart without waiting for the command API to deliver a command again.
   */
  queueKept(queueResponse: (r: ResponsePayload) => Promise<unknown>, log: Logger): void {
    void this.kept.drain(queueResponse, log);
  }

  /** The rate-limited log of commands not answered now (not run, or their answer not queued), by level. */
  private notAnsweredLog(log: Logger, level: 'warn' | 'error'): LimitedLog {
    let l = this.notAnsweredLogs.get(level);
    if (!l) {
      l = new LimitedLog(log, { level, maxPerWindow: LIMITS.fieldCommandLogMaxPerWindow, windowMs: TIMINGS.fieldCommandLogWindowMs, what: 'commands not answered now' });
      this.notAnsweredLogs.set(level, l);
    }
    return l;
  }

  /** Whether `frame` is a copy of a command being answered now; if so, it is counted and logged, and gets nothing. */
  private isCopy(frame: CommandFrame, log: Logger): boolean {
    if (!this.answering.has(frame.commandId)) return false;
    // Counted as what it is, unanswered: as once the answer is queued, a replay of the id (a copy
    // of a refused one counts as its refusal, a forgery as its own).
    this.countRefused(checkCommand(frame, this.guard, Date.now()) ?? 'FIELD_COMMAND_REPLAYED');
    this.stats.unanswered++;
    this.copyLog ??= new LimitedLog(log, { maxPerWindow: LIMITS.fieldCommandLogMaxPerWindow, windowMs: TIMINGS.fieldCommandLogWindowMs, what: 'command copies delivered while answered' });
    this.copyLog.write({ commandId: frame.commandId.slice(0, 128) }, 'command delivered again while it is answered; its answer follows');
    return true;
  }

  private async answerOnce(frame: CommandFrame, queueResponse: (r: ResponsePayload) => Promise<unknown>, log: Logger): Promise<void> {
    // Checked here, as run() journals "started" before it awaits anything: no command starts once
    // stop() was called, to be cut off by it.
    if (this.stopping.signal.aborted) {
      this.notAnsweredLog(log, 'warn').write({ commandId: frame.commandId, command: frame.command }, 'command not run: the field client is stopping; its next delivery runs it');
      return;
    }
    const outcome = await this.run(frame);
    if (!outcome) {
      log.info({ commandId: frame.commandId }, 'command delivered again while it runs; its answer follows');
      return;
    }
    if (outcome.unanswered) {
      this.refusalLog ??= new LimitedLog(log, { maxPerWindow: LIMITS.fieldCommandLogMaxPerWindow, windowMs: TIMINGS.fieldCommandLogWindowMs, what: 'unanswered command refusals' });
      this.refusalLog.write({ code: outcome.code, commandId: frame.commandId.slice(0, 128), command: frame.command.slice(0, 128) }, 'command refused; not run, not answered');
      return;
    }
    // Not answered now: each copy of the command delivered meanwhile comes here again, and a
    // compromised DMZ can deliver a genuine one without end, so these lines are rate-limited.
    if (outcome.deferred) {
      const fields = { code: outcome.code, commandId: frame.commandId, command: frame.command };
      this.notAnsweredLog(log, outcome.code === 'FIELD_COMMAND_JOURNAL_FAILED' ? 'error' : 'warn').write(fields, `command ${String(outcome.result)}`);
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
      this.notAnsweredLog(log, 'error').write(
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
      if (!this.answered(frame.commandId)) setImmediate(() => void this.kept.drain(queueResponse, log));
    } catch (err) {
      log.warn(
        { code: 'FIELD_COMMAND_JOURNAL_FAILED', err: (err as Error).message, commandId: frame.commandId },
        'command answer queued, but the journal cannot record it: after a restart, the same answer may be queued again (the command API records it once)',
      );
    }
  }

  /**
   * Called once the answer is in the durable queue. False when drop-oldest dropped it meanwhile
   * (answersDropped): it stays kept, for the caller to queue again. Throws when the journal refuses
   * the line; the command is then known as answered in this process only (a delivery again is a
   * replay), and after a restart its kept answer is queued again, the same.
   */
  answered(commandId: string): boolean {
    if (this.kept.droppedWhileQueued.delete(commandId)) return false;
    const seen = this.journal.get(commandId);
    if (!seen) return true;
    const entry = { state: 'answered' as const, issuedAt: seen.issuedAt };
    try {
      this.journal.write(commandId, entry);
    } catch (err) {
      this.journal.remember(commandId, entry);
      throw err;
    }
    return true;
  }

  private countRefused(code: ErrorCode): void {
    this.stats.refused++;
    this.stats.refusedByCode[code] = (this.stats.refusedByCode[code] ?? 0) + 1;
  }

  private replayed(frame: CommandFrame): ErrorCode | undefined {
    const seen = this.journal.get(frame.commandId);
    if (seen?.state === 'answered') return 'FIELD_COMMAND_REPLAYED';
    if (!seen && frame.issuedAt <= this.journal.floor) return 'FIELD_COMMAND_REPLAYED';
    return undefined;
  }
}
