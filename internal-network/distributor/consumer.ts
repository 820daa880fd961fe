import type { MqttClient } from 'mqtt';
import type { IPublishPacket } from 'mqtt';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { LimitedLog } from '../../shared/limited-log.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { watchBrokerLiveness } from './broker-liveness.ts';
import { carriesOnlyTheDmzWord, type DeadLetters } from './dead-letter.ts';
import { isFinal, type MessageHandler } from './message-handler.ts';
import type { ReceiptPublisher } from './receipts.ts';

export interface RetryPolicy {
  /** milliseconds */
  initialMs: number;
  /** milliseconds */
  maxMs: number;
}

class Stopped extends Error {}

/**
 * Failures of the machine, not of a message: a full or read-only disk, I/O, too many open files,
 * memory, a folder or permission an operator changed, the network. They pass when the machine is
 * put right, so a message meeting one is retried for ever. Any other errno (EINVAL, ENAMETOOLONG,
 * EISDIR, EBADF, ...) can come of what a message holds or of a defect, and counts as one.
 */
const MACHINE_ERRNOS = new Set(['ENOSPC', 'EDQUOT', 'EIO', 'EROFS', 'EMFILE', 'ENFILE', 'ENOMEM', 'EAGAIN', 'EBUSY', 'EACCES', 'EPERM', 'ENOENT', 'ESTALE', 'ETIMEDOUT', 'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH']);

/** The lines of failures retried, for all of a distributor's consumers together (retryLogs). */
export interface RetryLogs {
  /** coded failures (a store down or stalled, DISTRIBUTOR_WRITE_FAILED), at warn */
  coded: LimitedLog;
  /** failed system calls and failures without a code (a full disk, a defect), at error */
  uncoded: LimitedLog;
}

/**
 * The logs of failures retried, for all of a distributor's consumers together: a store down or
 * stalled, or a disk that is full, fails every consumer's message at each attempt, the same failure
 * each time. Each at most LIMITS.distributorRetryLogMaxPerWindow lines per TIMINGS.floodLogIntervalMs;
 * the rest counted by code (those without one by their errno, else as `none`) in the next window's first line (the
 * metrics count every failed request).
 */
export function retryLogs(log: Logger): RetryLogs {
  const limited = (level: 'warn' | 'error', what: string) => new LimitedLog(log, { level, maxPerWindow: LIMITS.distributorRetryLogMaxPerWindow, windowMs: TIMINGS.floodLogIntervalMs, what });
  return {
    coded: limited('warn', 'failures retried (messages left unacknowledged meanwhile)'),
    uncoded: limited('error', 'failed system calls and failures without a code retried (messages left unacknowledged meanwhile)'),
  };
}

/** milliseconds: how long the store asked to be left alone (`details.retryAfterMs` of a write that failed), else 0 */
function askedDelayMs(err: unknown): number {
  const ms = isFieldStreamError(err, 'DISTRIBUTOR_WRITE_FAILED') ? err.details?.retryAfterMs : undefined;
  return typeof ms === 'number' && Number.isFinite(ms) && ms > 0 ? ms : 0;
}

/** Node's errors of a system call carry its errno (a number) and its name as `code` (a string). */
function isSystemError(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException;
  return err instanceof Error && typeof e.errno === 'number' && typeof e.code === 'string' && MACHINE_ERRNOS.has(e.code);
}

/**
 * Takes messages from the broker and acknowledges each (PUBACK) only after it was written.
 *
 * mqtt.js sends the PUBACK of a QoS 1 message when `handleMessage`'s callback is called
 * (MQTT 3.1.1 §4.3.2 lets the receiver choose when), so the callback is called after the write.
 * While the database is down the write is retried with capped exponential backoff and the broker
 * keeps everything else queued; if the distributor stops meanwhile, the message is never
 * acknowledged and the broker redelivers it to the persistent session (or another group member).
 * A message that can never be written goes to the dead-letter folder, then is acknowledged; one
 * holding data that finds the folder full is not (dead-letter.ts). So does one whose handling keeps
 * failing with an uncoded error (a defect), after LIMITS.distributorUnexpectedMaxAttempts tries.
 * Either way, once the message is durable here its device is sent a commit receipt (receipts.ts):
 * only then may the device delete its copy, whatever became of the hops in between.
 */
/** What a letter not kept was, for the log: the DMZ's unsigned word (valid, refused by the database) or an invalid payload. */
function notKeptWhat(topic: string): string {
  return carriesOnlyTheDmzWord(topic) ? "a presence or gateway report (the DMZ's word) the database refused" : 'an invalid payload';
}

export class Consumer {
  private stopped = false;
  /** the pauses between attempts in progress, ended at a stop or when their connection closes */
  private readonly wakes = new Set<() => void>();
  /** counts the closes of the connection: a message taken before the last one is abandoned (handleMessage) */
  private connection = 0;
  readonly stats = { messages: 0, points: 0, files: 0, deadLetters: 0, retries: 0 };
  /** invalid payloads not kept (past their share of the dead-letter bound), and letters waiting for room: logged now and then */
  private readonly notKeptLog: LimitedLog;
  private readonly fullLog: LimitedLog;
  private readonly tooLargeLog: LimitedLog;
  private readonly invalidLog: LimitedLog;
  /** chunks refused while their devices have as many transfers unfinished as they may (DISTRIBUTOR_FILE_TRANSFERS_OPEN) */
  private readonly deferredLog: LimitedLog;
  /** the lines of failures retried (a store down or stalled, a disk full): every consumer meets them at each attempt */
  private readonly retryLogs: RetryLogs;
  /** epoch ms at which the message in progress was taken from the broker (undefined: none) */
  inProgressSince: number | undefined;

  constructor(
    mqtt: MqttClient,
    private readonly handler: MessageHandler,
    private readonly deadLetters: DeadLetters,
    private readonly retry: RetryPolicy,
    private readonly receipts: ReceiptPublisher | undefined,
    private readonly log: Logger,
    private readonly deadLettered?: { inc(): void },
    /** invalid payloads, and the DMZ's word the database refused, acknowledged without being kept (past their share of DEAD_LETTER_MAX_BYTES, or not writable) */
    private readonly notKept?: { inc(): void },
    /** the lines of failures retried, shared by all the distributor's consumers (retryLogs); none: this consumer's own */
    retries?: RetryLogs,
  ) {
    // Lines a flood repeats per message (a compromised DMZ publishes tens of thousands a second):
    // one per TIMINGS.floodLogIntervalMs each; the metrics count every one.
    const flood = (level: 'warn' | 'error', what: string) => new LimitedLog(log, { level, maxPerWindow: 1, windowMs: TIMINGS.floodLogIntervalMs, what });
    this.notKeptLog = flood('warn', "invalid payloads and the DMZ's word not kept as dead letters");
    this.fullLog = flood('error', 'messages left unacknowledged while the dead-letter folder is full');
    this.tooLargeLog = flood('error', 'messages left unacknowledged whose dead letter is larger than the folder may hold');
    this.invalidLog = flood('error', 'invalid payloads kept as dead-letter excerpts');
    this.deferredLog = flood('warn', 'file chunks not taken while their devices have as many transfers unfinished as they may');
    this.retryLogs = retries ?? retryLogs(log);
    // mqtt.js hands the broker's PINGRESPs over only after the message in progress: the connection
    // is judged by the bytes its socket reads instead, and pinged from there (broker-liveness.ts).
    watchBrokerLiveness(mqtt);
    mqtt.handleMessage = (packet: IPublishPacket, callback: (err?: Error) => void) => {
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
      const taken = Date.now();
      this.inProgressSince = taken;
      const connection = this.connection;
      // A copy taken on a connection that closed since (the broker gone, restarted) is abandoned: the
      // broker delivers it again on the next connection of the session, and that copy is written and
      // acknowledged; this one is not retried, nor acknowledged with an identifier of the last connection.
      const abandoned = () => this.connection !== connection;
      this.process(packet.topic, payload, taken, packet.retain, abandoned).then(
        () => {
          if (this.inProgressSince === taken) this.inProgressSince = undefined;
          if (!abandoned()) callback();
        },
        (err: unknown) => {
          if (this.inProgressSince === taken) this.inProgressSince = undefined;
          // process() retries every failure until the consumer stops or the connection closes, so
          // this is one of those: no callback, no PUBACK (the broker delivers the message again).
          // mqtt.js hands over nothing more on this connection meanwhile.
          if (!(err instanceof Stopped)) this.log.error({ err }, 'unexpected failure; the message stays unacknowledged');
        },
      );
    };
    mqtt.on('close', () => {
      this.connection++;
      this.wakeAll();
    });
  }

  stop(): void {
    this.stopped = true;
    this.wakeAll();
  }

  private wakeAll(): void {
    for (const wake of [...this.wakes]) wake();
  }

  /** `taken`: when the broker handed the message over, the same for every attempt; `retained`: its RETAIN flag (MessageHandler.handle). */
  private async process(topic: string, payload: Buffer, taken: number, retained = false, abandoned: () => boolean = () => false): Promise<void> {
    let unexpected = 0;
    for (let attempt = 0; ; attempt++) {
      if (this.stopped || abandoned()) throw new Stopped();
      try {
        const done = await this.handler.handle(topic, payload, taken, retained);
        for (const r of done.receipts ?? []) this.receipts?.add(r);
        // A device a chunk at a time (each sent again after its receipt is overdue): lines bounded, the metric counts each.
        for (const err of done.deferred ?? []) this.deferredLog.write({ code: err.code, ...err.details }, err.message);
        // What was refused for good (the message, or sections of a gateway's envelope): kept before
        // the message is acknowledged; copies of each held until it is, or given up (a stop).
        try {
          for (const d of done.deadLetters ?? []) {
            await this.deadLetter(d.topic, d.payload, d.error, abandoned);
            d.release?.();
          }
        } finally {
          for (const d of done.deadLetters ?? []) d.release?.();
        }
        this.stats.messages++;
        this.stats.points += done.points;
        this.stats.files += done.files;
        if (attempt > 0) this.log.info({ attempts: attempt + 1 }, done.deadLetters?.length ? 'handled after retrying (with dead letters)' : 'write succeeded after retrying');
        return;
      } catch (err) {
        if (err instanceof Stopped) throw err;
        // An error without a code is a bug (or a failure nothing foresaw), not a verdict on the
        // message: retried like a failed write, at error level. Left unacknowledged without a retry,
        // it would stall this connection, which is handed its next message only after this one; so
        // would a retry for ever (and the broker hands it to the next consumer after a restart): past
        // LIMITS.distributorUnexpectedMaxAttempts it is kept whole as a dead letter and acknowledged.
        // A failure of the machine (ENOSPC, EIO, EMFILE: MACHINE_ERRNOS; e.g. the replay windows'
        // journal on a full disk) is no defect: retried like a failed write, for ever.
        const defect = !isFieldStreamError(err) && !isSystemError(err);
        unexpected = defect ? unexpected + 1 : 0;
        if (defect && unexpected >= LIMITS.distributorUnexpectedMaxAttempts) {
          const failed = new FieldStreamError(
            'DISTRIBUTOR_MESSAGE_FAILED',
            `Handling the message failed ${unexpected} times without an error code (${err instanceof Error ? err.message : String(err)}); kept whole as a dead letter`,
            { attempts: unexpected },
            { cause: err },
          );
          this.log.error({ err, topic, attempts: unexpected }, 'handling a message keeps failing without an error code (a defect); it goes to the dead-letter folder');
          await this.deadLetter(topic, payload, failed, abandoned);
          return;
        }
        // DISTRIBUTOR_STATE_LEASE: another distributor took this one's state slot (state-lease.ts),
        // so the message's sequence numbers are in no window it loaded. Kept as a dead letter it would
        // be acknowledged, its device sent a receipt, and a copy of it let through there: retried
        // unacknowledged instead, until the distributor, stopping meanwhile, stops this consumer.
        if (!isFinal(err)) {
          this.stats.retries++;
          // Never sooner than the store asked (a 429's or 503's Retry-After: sinks/sink.ts retryAfterMs), up to the longest pause.
          const delay = Math.max(this.backoff(attempt), Math.min(askedDelayMs(err), this.retry.maxMs));
          if (isFieldStreamError(err)) this.retryLogs.coded.write({ code: err.code, attempt: attempt + 1, retryInMs: delay }, `${err.message}; retrying, the message stays unacknowledged meanwhile`);
          else this.retryLogs.uncoded.write({ err, topic, attempt: attempt + 1, retryInMs: delay }, isSystemError(err) ? 'a system call failed; retrying, the message stays unacknowledged meanwhile' : 'unexpected failure (no error code); retrying, the message stays unacknowledged meanwhile');
          await this.sleep(delay);
          continue;
        }
        await this.deadLetter(topic, payload, err, abandoned);
        return;
      }
    }
  }

  /**
   * Keeps what can never be written, then lets the caller acknowledge it. A letter with data that
   * finds no room (DISTRIBUTOR_DEAD_LETTERS_FULL), is larger than the whole folder may hold
   * (DISTRIBUTOR_DEAD_LETTER_TOO_LARGE) or cannot be written is retried, unacknowledged, until it
   * is kept or the consumer stops (dead-letter.ts: what is chosen at the bound, and why).
   * An invalid payload (a flood from a compromised DMZ) is logged at most now and then.
   */
  private async deadLetter(topic: string, payload: Buffer, err: FieldStreamError, abandoned: () => boolean = () => false): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      if (this.stopped || abandoned()) throw new Stopped();
      try {
        const outcome = await this.deadLetters.put(topic, payload, err);
        if (outcome === 'over-bound' || outcome === 'write-failed') {
          this.notKept?.inc();
          this.notKeptLog.write(
            { code: outcome === 'over-bound' ? 'DISTRIBUTOR_DEAD_LETTERS_FULL' : err.code, reason: err.code, topic, bytes: payload.length },
            outcome === 'over-bound' ? `${notKeptWhat(topic)} was not kept: the dead-letter folder holds its share of DEAD_LETTER_MAX_BYTES` : `${notKeptWhat(topic)} could not be written to the dead-letter folder; not kept`,
          );
          return;
        }
        this.stats.deadLetters++;
        this.deadLettered?.inc();
        const fields = { code: err.code, topic, details: err.details };
        if (outcome === 'excerpt') this.invalidLog.write(fields, `${err.message} — kept as a dead letter`);
        else {
          this.log.error(fields, `${err.message} — kept as a dead letter`);
          for (const r of this.handler.deadLetterReceipts(topic, payload)) this.receipts?.add(r);
        }
        return;
      } catch (ioErr) {
        if (isFieldStreamError(ioErr, 'DISTRIBUTOR_DEAD_LETTERS_FULL')) this.fullLog.write({ code: ioErr.code, reason: err.code, topic, ...ioErr.details }, `${ioErr.message}; the message stays unacknowledged`);
        // Retried all the same (it holds data: never dropped), though only a new bound ends it.
        else if (isFieldStreamError(ioErr, 'DISTRIBUTOR_DEAD_LETTER_TOO_LARGE')) this.tooLargeLog.write({ code: ioErr.code, reason: err.code, topic, ...ioErr.details }, `${ioErr.message}; the message stays unacknowledged, in the broker, until then`);
        else this.log.error({ err: (ioErr as Error).message }, 'cannot write the dead-letter file; retrying');
        await this.sleep(this.backoff(attempt));
      }
    }
  }

  /** Full jitter (delay uniform in [0, cap]) so many distributors do not retry in lockstep. */
  private backoff(attempt: number): number {
    const cap = Math.min(this.retry.maxMs, this.retry.initialMs * 2 ** Math.min(attempt, 20));
    return Math.max(this.retry.initialMs / 2, Math.floor(Math.random() * cap));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(t);
        this.wakes.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, ms);
      this.wakes.add(wake);
    });
  }
}

