import type { CommandFrame } from '../../shared/contract/downlink.ts';
import type { ResponsePayload } from '../../shared/contract/payloads.ts';
import { answerTestCommand, TEST_COMMAND } from '../../shared/contract/test-command.ts';
import type { ErrorCode } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { answerBeforeStart, countRefused, type AdmissionHost } from './command-admission.ts';
import { checkCommand, type CommandGuardOptions } from './command-guard.ts';
import { CommandJournal } from './command-journal.ts';
import { KeptAnswers } from './command-kept-answers.ts';
import { endOrphans, recordProgram } from './command-orphans.ts';
import { queueAnswer } from './command-answer.ts';
import { CommandLogs, logJournalTroubles } from './command-logs.ts';
import { notRunStopping, thrownText, waitingFull } from './command-outcome.ts';
import { recordAnswer, recordAnswered, recordOutcome, recordStarted } from './command-records.ts';
import { CommandSlots } from './command-slots.ts';
import type { CommandAnswer, CommandHandler, CommandOutcome } from './command-types.ts';
import { fileHandlers, type CommandsFile } from './commands-file.ts';
import type { QueuedMessage } from './queue/durable-queue.ts';


/** command ids remembered (and journaled); the journal file is rewritten when it holds twice as many lines */
const REMEMBERED = 10_000;

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
  /** the commands running at once, and the line of those waiting to (command-slots.ts) */
  private readonly slots: CommandSlots;
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
  /** the rate-limited logs: refusals not answered, copies, commands not answered now (command-logs.ts) */
  private readonly logs = new CommandLogs();
  /** the journal's refusal of a program's record (spawned), not yet logged */
  private programRecordFailure: Error | undefined;
  /** what answerBeforeStart reads and counts (command-admission.ts) */
  private readonly admission: AdmissionHost;

  constructor(
    private readonly guard: CommandGuardOptions,
    journal?: string,
    /** command ids remembered (REMEMBERED; smaller in tests) */
    remembered = REMEMBERED,
    /** commands run at once (FIELD_COMMANDS_CONCURRENCY), and commands waiting for one of those at most */
    slots: { concurrency: number; waitingMax: number } = { concurrency: LIMITS.fieldCommandsConcurrencyDefault, waitingMax: LIMITS.fieldCommandsWaitingMax },
  ) {
    this.journal = new CommandJournal(journal, remembered);
    this.slots = new CommandSlots(slots.concurrency, slots.waitingMax);
    this.admission = { guard: this.guard, journal: this.journal, stats: this.stats };
    this.kept = new KeptAnswers({
      journal: this.journal,
      answering: this.answering,
      record: (id, issuedAt, answer) => recordAnswer(this.journal, id, issuedAt, answer),
      answered: (id) => this.answered(id),
      notAnsweredLog: (log, level) => this.logs.notAnswered(log, level),
    });
    // Every device answers the management API's test event by itself (it changes nothing here);
    // like any command it runs only once authenticated and fresh (checkCommand: command-admission.ts).
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

  /** Commands whose handler runs now (each holding a slot). */
  get runningNow(): number {
    return this.slots.running;
  }

  /** Commands waiting for a slot to run (FIELD_COMMANDS_CONCURRENCY taken): nothing of them journaled yet. */
  get waitingNow(): number {
    return this.slots.waiting;
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
   * The answer to send, or undefined when this command is running, or waiting for a slot, now (its answer follows).
   *
   * At most FIELD_COMMANDS_CONCURRENCY commands run at once; the others wait for a slot, in order
   * of arrival (`ticket`, given as answer() took the command; by default, now), before anything of
   * them is journaled (takeSlot).
   *
   * A SIGKILL (or a power cut) at each instant, and what the command's next delivery then gets:
   * - before "started" is synced (waiting for a slot among them): nothing ran; it runs.
   * - while the handler runs, or after it returned but before "done" is synced: the journal says
   *   "started"; answered "failed" with FIELD_COMMAND_OUTCOME_UNKNOWN (not run again).
   * - after "done" is synced, before its answer is in the queue: the kept answer, queued now.
   * - after the answer is in the queue, before "answered" is synced: the kept answer again, the same
   *   (status, result, timestamp): the command API records a command's response once.
   * - after "answered" is synced: FIELD_COMMAND_REPLAYED, no answer (one is in the queue).
   */
  async run(frame: CommandFrame, now = Date.now(), ticket = this.slots.arrive()): Promise<CommandAnswer | undefined> {
    try {
      return await this.runInTurn(frame, now, ticket);
    } finally {
      // One that runs nothing (a copy, a refusal, an answer given before, no handler) holds back no
      // one from here (whatever it threw): those after it take their slots. Nothing, once it took one.
      this.slots.leave(ticket);
    }
  }

  private async runInTurn(frame: CommandFrame, now: number, ticket: number): Promise<CommandAnswer | undefined> {
    if (this.running.has(frame.commandId) || this.slots.isWaiting(frame.commandId)) return undefined;
    const answer = answerBeforeStart(this.admission, frame, now);
    if (answer) return answer;
    const handler = this.handlers.get(frame.command);
    // Runs nothing: no slot to wait for.
    if (!handler) return this.started(frame) ?? recordOutcome(this.journal, frame, { status: 'rejected', result: `unknown command "${frame.command}"` });
    const notNow = await this.takeSlot(frame, now, ticket);
    if (notNow) return notNow;
    // stop() called meanwhile (while it waited, or as it was handed the slot): started now, it would be cut off at once.
    if (this.stopping.signal.aborted) return (this.slots.release(), notRunStopping());
    // The slot is this command's until its answer is journaled (or its "started" line refused).
    this.running.add(frame.commandId);
    try {
      const refused = this.started(frame);
      if (refused) return refused;
      let outcome: CommandOutcome;
      try {
        outcome = await handler(frame.params, frame, this.stopping.signal, (pid) => (this.programRecordFailure = recordProgram(this.journal, frame.commandId, pid) ?? this.programRecordFailure));
      } catch (err) {
        // Whatever was thrown (null, a string: JavaScript throws anything): reading `.message` of
        // null threw again, past the journal's "done", and the command was answered only at its
        // next delivery, as interrupted by a restart, which it was not.
        outcome = { status: 'failed', result: thrownText(err) };
      }
      return recordOutcome(this.journal, frame, outcome);
    } finally {
      this.running.delete(frame.commandId);
      this.slots.release();
    }
  }

  /**
   * Takes one of the slots (FIELD_COMMANDS_CONCURRENCY) for `frame`, waiting in line for it when all
   * are taken: undefined once it holds one (given back by run()), or what to answer instead. Nothing
   * is journaled while it waits: killed then, the client ran nothing of it, and its next delivery
   * runs it. A copy delivered while it waits takes no second place (run() returns undefined for it).
   */
  private async takeSlot(frame: CommandFrame, now: number, ticket: number): Promise<CommandAnswer | undefined> {
    const slot = this.slots.take(frame.commandId, ticket);
    if (slot === 'taken') return undefined;
    // The line is bounded: a compromised gateway holds every genuine command and can deliver them
    // (or, to a device allowing unsigned commands, any) without end.
    if (slot === 'full') return waitingFull(this.slots);
    const waitedFrom = Date.now();
    if (!(await slot)) return notRunStopping();
    // Checked again, against the clock now: the guard judges whether a command may *start*, and a
    // command runs only until its signed expiry (plus the skew; docs/commands.md: after that the
    // command API may show it expired, and an operator send it again). One that expired while it
    // waited is refused as it would have been had it arrived now (FIELD_COMMAND_STALE, answered
    // "rejected" and journaled when authenticated), not run. The journal's checks are taken again
    // too: answers held (heldFull) may have reached their bound meanwhile.
    let answer: CommandAnswer | undefined;
    let checked = false;
    try {
      answer = answerBeforeStart(this.admission, frame, now + (Date.now() - waitedFrom));
      checked = true;
    } finally {
      // Not to run (or the check threw): the slot goes on to the next waiting.
      if (answer !== undefined || !checked) this.slots.release();
    }
    return answer;
  }

  /** Journals `frame` as started (synced) and counts it run; or, when the journal refuses the line, what to answer. */
  private started(frame: CommandFrame): CommandAnswer | undefined {
    const refused = recordStarted(this.journal, frame);
    if (!refused) this.stats.run++;
    return refused;
  }

  /**
   * At the start, before commands are delivered: ends the programs a client killed before left
   * running, and answers their commands (command-orphans.ts). Never rejects.
   */
  endOrphans(log: Logger): Promise<void> {
    return endOrphans({ journal: this.journal, record: (id, issuedAt, answer) => recordAnswer(this.journal, id, issuedAt, answer) }, log);
  }

  /** Program records of the journal read at the start that failed their schema: their command ids (CommandJournal.damagedPrograms). */
  get journalDamagedPrograms(): readonly string[] {
    return this.journal.damagedPrograms;
  }

  /**
   * Runs a command and hands its answer to `queueResponse` (which resolves once the answer is in
   * the durable queue); journals it as answered only then. An answer the queue refuses stays in the
   * journal ("done"), and is queued again when the command is delivered again. Logs what happened;
   * never rejects.
   */
  answer(frame: CommandFrame, queueResponse: (r: ResponsePayload) => Promise<unknown>, log: Logger): Promise<void> {
    // Its place in the order of arrival, taken now: the checks before its slot may wait (drain, below).
    const ticket = this.slots.arrive();
    const p = this.answerNow(frame, ticket, queueResponse, log).finally(() => this.slots.leave(ticket));
    this.underWay.add(p);
    void p.finally(() => this.underWay.delete(p));
    return p;
  }

  /**
   * At the client's orderly stop, before its queue closes: runs no new command, nor any of those
   * waiting for a slot (let go at once, not journaled: their next delivery, after the restart, runs
   * them), tells the handlers running (an exec program's process group gets
   * SIGTERM, then SIGKILL after TIMINGS.fieldCommandStopGraceMs: commands-file.ts), and waits for
   * their answers to be journaled and queued, up to twice that grace. A handler still running then
   * (one registered in code, which may not heed the signal) is left: the journal says "started",
   * and its next delivery after the restart answers FIELD_COMMAND_OUTCOME_UNKNOWN.
   */
  async stop(): Promise<void> {
    this.stopping.abort();
    // The commands waiting for a slot are let go, not run (nothing of them is journaled): their next delivery runs them.
    this.slots.close();
    if (this.underWay.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.underWay]), new Promise((r) => (timer = setTimeout(r, 2 * TIMINGS.fieldCommandStopGraceMs)))]);
    clearTimeout(timer);
  }

  private async answerNow(frame: CommandFrame, ticket: number, queueResponse: (r: ResponsePayload) => Promise<unknown>, log: Logger): Promise<void> {
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
      await this.answerOnce(frame, ticket, queueResponse, log);
    } catch (err) {
      // Not expected (run() and answered() catch the journal's failures); field-client.ts does not
      // wait for this promise, and a rejection would end the process.
      log.error({ err, commandId: frame.commandId }, 'command handling failed');
    } finally {
      this.answering.delete(frame.commandId);
    }
    const refused = this.programRecordFailure;
    this.programRecordFailure = undefined;
    logJournalTroubles(log, this.journal, refused);
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

  /** Whether `frame` is a copy of a command being answered now; if so, it is counted and logged, and gets nothing. */
  private isCopy(frame: CommandFrame, log: Logger): boolean {
    if (!this.answering.has(frame.commandId)) return false;
    // Counted as what it is, unanswered: as once the answer is queued, a replay of the id (a copy
    // of a refused one counts as its refusal, a forgery as its own).
    countRefused(this.stats, checkCommand(frame, this.guard, Date.now()) ?? 'FIELD_COMMAND_REPLAYED');
    this.stats.unanswered++;
    this.logs.copy(log).write({ commandId: frame.commandId.slice(0, 128) }, 'command delivered again while it is answered; its answer follows');
    return true;
  }

  private async answerOnce(frame: CommandFrame, ticket: number, queueResponse: (r: ResponsePayload) => Promise<unknown>, log: Logger): Promise<void> {
    // Checked here, and again by run() once a command got its slot (it may wait for one): no
    // command starts once stop() was called, to be cut off by it.
    if (this.stopping.signal.aborted) {
      this.logs.notAnswered(log, 'warn').write({ commandId: frame.commandId, command: frame.command }, 'command not run: the field client is stopping; its next delivery runs it');
      return;
    }
    const outcome = await this.run(frame, Date.now(), ticket);
    if (!outcome) {
      log.info({ commandId: frame.commandId }, 'command delivered again while it runs; its answer follows');
      return;
    }
    await queueAnswer({ logs: this.logs, answered: (id) => this.answered(id), drainKept: () => this.kept.drain(queueResponse, log) }, frame, outcome, queueResponse, log);
  }

  /**
   * Called once the answer is in the durable queue. False when drop-oldest dropped it meanwhile
   * (answersDropped): it stays kept, for the caller to queue again. Throws when the journal refuses
   * the line; the command is then known as answered in this process only (a delivery again is a
   * replay), and after a restart its kept answer is queued again, the same.
   */
  answered(commandId: string): boolean {
    if (this.kept.droppedWhileQueued.delete(commandId)) return false;
    recordAnswered(this.journal, commandId);
    return true;
  }
}
