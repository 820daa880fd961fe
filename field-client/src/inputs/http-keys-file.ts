import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { removeLeftAsideSync, replaceFileDurablySync } from '../../../shared/durable-fs.ts';
import { IdempotencyKeySchema } from '../../../shared/idempotency-key.ts';
import { LimitedLog } from '../../../shared/limited-log.ts';
import { LIMITS, TIMINGS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import { appendLinesSync, readLinesSync } from '../../../shared/line-file.ts';
import { bootId } from '../../../shared/process-identity.ts';
import { FileTransferRecordSchema } from '../files/transfer-record.ts';
import { FILE_TRANSFER } from '../files/transfers.ts';
import type { DurableQueue } from '../queue/durable-queue.ts';
import { bootClockMs, type KeptEntry, type KeyedRequests } from './http-resends.ts';

/** The file in FIELD_DATA_DIR that holds the HTTP input's kept answers across restarts. */
export const KEYS_FILE = 'http-keys.jsonl';

/** The answer to readings or events taken: what the input sends, and what a request found taken at a start is answered. */
export function takenAnswer(messageIds: readonly string[]): string {
  return JSON.stringify({ accepted: messageIds.length, messageIds });
}

/** The answer to a file taken (`bytes` long, queued as `messageId`). */
export function fileAnswer(messageId: string, bytes: number): string {
  return JSON.stringify({ accepted: 1, messageIds: [messageId], bytes });
}

/** What an upload is, to be found in the queue at a start: its bytes' SHA-256 (hex), their number, its name. */
export interface UploadIdentity {
  sha256: string;
  size: number;
  filename: string;
}

/** A file record held in the queue (its message id and what its file is), as the file settles uploads by. */
export type QueuedFile = UploadIdentity & { messageId: string; seq: number };

/** The file records `queue` holds numbered at or past `from`, oldest first: read back from disk, for a start only. */
export function queuedFiles(queue: Pick<DurableQueue, 'find'>, from: number): QueuedFile[] {
  return queue.find((m) => m.dataType === FILE_TRANSFER && m.seq >= from).flatMap((m) => {
    const r = FileTransferRecordSchema.safeParse(m.payload);
    return r.success ? [{ messageId: m.messageId, seq: m.seq, sha256: r.data.sha256, size: r.data.size, filename: r.data.filename }] : [];
  });
}

/**
 * When a line was written: `wall`, the wall clock then (epoch ms); `boot` and `mono`, the kernel's
 * boot id and the machine's monotonic clock then (bootClockMs), by which its age is known exactly
 * at a start in the same boot.
 */
const When = { wall: z.number().int().nonnegative(), boot: z.string().min(1).max(64).optional(), mono: z.number().nonnegative() };
const Fingerprint = z.string().min(1).max(128);
/**
 * The lines of the file, each checked when read back: one that fails them is no line of ours (torn by
 * a power cut, damaged on the disk).
 * - an answer given to a request with an Idempotency-Key (its JSON as it was sent);
 * - `taking`: readings or events whose numbers in the queue were just given (the epoch that names
 *   them, the first, how many), written before the queue writes any of them;
 * - `takingFile`: a file's upload about to be moved into the outbox (what it is, and the queue's
 *   next number then: its record is numbered at or past it), written before it is moved;
 * - `released`: such a request, not taken after all (the queue refused or failed it).
 * A file written before `takingFile` was known reads as it did; one with it, read by an older
 * field client, has those lines skipped as damaged (counted), nothing else.
 */
const KeyLineSchema = z.union([
  z.object({ key: IdempotencyKeySchema, fingerprint: Fingerprint, status: z.number().int().min(200).max(599), text: z.string().refine((t) => parses(t), 'not JSON'), ...When }),
  z.object({
    key: IdempotencyKeySchema,
    fingerprint: Fingerprint,
    taking: z.object({ epoch: z.string().min(1).max(64), first: z.number().int().positive(), count: z.number().int().positive().max(LIMITS.localInputMaxItems) }),
    ...When,
  }),
  z.object({
    key: IdempotencyKeySchema,
    fingerprint: Fingerprint,
    takingFile: z.object({ from: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/), size: z.number().int().nonnegative(), filename: z.string().min(1).max(1024) }),
    ...When,
  }),
  z.object({ key: IdempotencyKeySchema, released: z.literal(true) }),
]);
type TakingFile = UploadIdentity & { from: number };
type Taking = { fingerprint: string; wall: number; mono: number } & ({ epoch: string; first: number; count: number } | { file: TakingFile });

/**
 * The local HTTP input's kept answers on disk (FIELD_DATA_DIR/http-keys.jsonl, JSON Lines), so that
 * a producer's retry after the field client restarted is answered as the request was, not queued
 * again. Each line appended whole and synced (line-file.ts) before the answer is sent (http-input.ts
 * says what a kill at each instant gives); read back at the start, each through its schema: a line
 * that fails it is skipped and counted (`damaged`), never a failed start. Rewritten from memory
 * (written aside, synced, renamed) when it holds more than twice the bytes of the answers kept plus
 * LIMITS.localInputKeysFileSlackBytes, or more than twice LIMITS.localInputKeysKeptMax lines:
 * answers forgotten (expired, pushed out) are only dropped then.
 *
 * A request of readings or events whose kept answer a kill cut off (after the queue wrote them,
 * before the answer's line was synced) is settled at the next start by its `taking` line and the
 * queue: taken when the last of its numbers is below the first the queue gave after it was opened
 * (DurableQueue.numberedAtOpen: it was on disk then), answered with the ids those numbers have;
 * else it never reached the disk, and its retry is taken anew. The file is rewritten then, so that
 * what was settled stays settled once the numbers not taken are given again.
 *
 * A file's upload is numbered by the queue only once it is in the outbox (files/file-intake.ts),
 * so it is noted before it is moved there instead, by what it is (`takingFile`: its SHA-256, size
 * and name, and the queue's next number then), and settled at the start after the outbox's
 * recovery (start.ts runs it before the inputs): a file moved into the outbox is then queued,
 * by its own record or by the recovery's (FIELD_FILE_RECOVERED, under a transfer id of its own).
 * So the first file record numbered at or past that number with the same bytes and name, not
 * already another kept answer's, is this upload's: its retry is answered with it. None: the kill
 * came before the move (incoming/ is emptied at the start), and the retry is taken anew. Missed:
 * an upload of the same bytes and name without a key, taken meanwhile, is taken for one cut off
 * before its move (one file for the two); and a file the recovery could not queue at this start
 * (kept in the outbox for the next) is not found, so its retry is taken anew, and it is queued twice.
 *
 * The age of an answer read back, for TIMINGS.localInputKeyKeptMs: in the same boot of the machine
 * (a crash, a kill, an upgrade), by the monotonic clock, which no setting of the wall clock moves.
 * After a reboot only the wall clock is left, and a device without a battery-backed clock boots at
 * the date it was left at (or its build date) until NTP steps it: so the age is taken against the
 * later of the clock and the file's last write (its mtime), and never below 0. A clock behind keeps
 * answers longer than a day (bounded by their count and bytes all the same), never shorter: an
 * answer forgotten early is a reading stored twice, one kept late only answers a key reused after a
 * day, which producers do not do (a key is a UUID). Missed the other way: answers written while the
 * clock was still behind (before NTP), read after a power cut with the clock set, look older than
 * they are, and may be forgotten.
 */
export class KeysFile {
  /** lines read at the start that are no line of ours (skipped) */
  damaged = 0;
  readonly path: string;
  private lines = 0;
  private bytes = 0;
  private readonly named = new Set<string>();
  private readonly boot = bootId();
  /** requests whose `taking` line is written and not yet settled (kept or released), by key */
  private readonly taking = new Map<string, Taking>();
  /** a `released` line the disk refused: the next write rewrites the file instead, which holds none of it */
  private unsettled = false;
  private readonly writeLog: LimitedLog;

  constructor(
    dataDir: string,
    private readonly keyed: KeyedRequests,
    private readonly log: Logger,
    /** DurableQueue.numberedAtOpen */
    private readonly numberedAtOpen: () => number,
    /** the file records held in the queue numbered at or past `from`, oldest first (read from disk: only at a start) */
    private readonly queuedFiles: (from: number) => QueuedFile[],
    private readonly mono: () => number = bootClockMs,
  ) {
    this.path = join(dataDir, KEYS_FILE);
    this.writeLog = new LimitedLog(log, { maxPerWindow: LIMITS.localInputBusyLogMaxPerWindow, windowMs: TIMINGS.floodLogIntervalMs, what: 'Idempotency-Key answers not kept on disk' });
  }

  /**
   * Reads the answers kept into `keyed`, at the input's start. Never fails the start: damaged lines
   * are skipped and said once here (FIELD_INPUT_KEYS_DAMAGED); a file that cannot be read at all
   * leaves nothing kept from before (a retry of a request taken then is queued again), said too.
   */
  load(): void {
    try {
      const failed = this.read();
      if (failed) this.log.warn({ code: 'FIELD_INPUT_KEYS_WRITE_FAILED', path: this.path, err: failed.message }, 'could not rewrite the file of Idempotency-Key answers: read as it is, tried again at the next answer');
    } catch (err) {
      this.log.warn({ code: 'FIELD_INPUT_KEYS_DAMAGED', path: this.path, err: (err as Error).message }, 'the file of Idempotency-Key answers cannot be read: no answer from before the start is kept');
    }
    if (this.damaged > 0) this.log.warn({ code: 'FIELD_INPUT_KEYS_DAMAGED', path: this.path, lines: this.damaged }, 'lines of the file of Idempotency-Key answers cannot be read (torn by a power cut, or damaged): skipped');
  }

  /**
   * The queue just numbered a request's readings or events (`count` from `first`, named by `epoch`)
   * and has written none of them yet: its `taking` line, synced now, settles it at a start if a kill
   * comes before its answer is kept (see the class comment). A disk that refuses it is logged: the
   * request goes on, as before this line.
   */
  numbered(key: string, fingerprint: string, epoch: string, first: number, count: number): void {
    const t: Taking = { fingerprint, epoch, first, count, wall: Date.now(), mono: this.mono() };
    if (this.append(key, this.formatTaking(key, t), 'could not keep a request being taken on disk: a kill before its answer is kept would have its retry queued again')) this.taking.set(key, t);
  }

  /**
   * A keyed file upload is about to be moved into the outbox (FieldClient.submitFile), `from` the
   * queue's next number now: its `takingFile` line, synced now, settles it at a start if a kill
   * comes once it is moved and before its answer is kept (see the class comment). Refused by the
   * disk: logged, and the upload goes on, as before this line.
   */
  takingFile(key: string, fingerprint: string, file: TakingFile): void {
    const t: Taking = { fingerprint, file, wall: Date.now(), mono: this.mono() };
    if (this.append(key, this.formatTaking(key, t), 'could not keep a file being taken on disk: a kill before its answer is kept would have its retry queued again')) this.taking.set(key, t);
  }

  /**
   * The answer kept for `key`, appended and synced. A disk that refuses it (full, failing) leaves
   * the answer kept in memory only, as it was before this file: logged (FIELD_INPUT_KEYS_WRITE_FAILED),
   * and the request answered all the same (it is queued; refused now, it would be sent again and
   * answered from memory anyway).
   */
  keep(key: string, e: KeptEntry): void {
    this.append(key, this.formatKept(key, e), 'could not keep an Idempotency-Key answer on disk: kept in memory only, a retry after a restart would be queued again');
    this.taking.delete(key);
  }

  /**
   * The request of `key` was not taken (refused, failed, cut off): its `taking` line, if it has one,
   * is undone by a `released` line, synced: the queue gives its numbers again (a failed write's),
   * and a start must not take another request's readings for this one's. Refused by the disk, the
   * next write rewrites the file instead.
   */
  released(key: string): void {
    if (!this.taking.delete(key)) return;
    if (!this.append(key, JSON.stringify({ key, released: true }), 'could not note a request not taken: the file is rewritten at the next write')) this.unsettled = true;
  }

  /** Appends one line and syncs it (then rewrites the file if it is past its bound); false when the disk refused it. */
  private append(key: string, line: string, refused: string): boolean {
    try {
      if (this.unsettled) {
        this.compact();
        this.unsettled = false;
      }
      const text = `${line}\n`;
      // A close failing after the sync leaves the line on the disk: written.
      appendLinesSync(this.path, text, 0o600, this.named);
      this.lines++;
      this.bytes += Buffer.byteLength(text);
    } catch (err) {
      this.writeLog.write({ code: 'FIELD_INPUT_KEYS_WRITE_FAILED', path: this.path, idempotencyKey: key.slice(0, 64), err: (err as Error).message }, refused);
      return false;
    }
    if (!this.overBound()) return true;
    try {
      this.compact();
    } catch (err) {
      this.log.warn({ code: 'FIELD_INPUT_KEYS_WRITE_FAILED', path: this.path, err: (err as Error).message }, 'could not rewrite the file of Idempotency-Key answers (its last line is synced): tried again at the next answer');
    }
    return true;
  }

  /**
   * Reads the answers kept into `keyed`, oldest first, and settles the requests found being taken.
   * Throws only when the file cannot be read at all (then nothing is kept from it); rewrites it when
   * it held damage, requests being taken, or past its bound. Returns a failure of that rewrite.
   */
  private read(): Error | undefined {
    removeLeftAsideSync(this.path);
    if (!existsSync(this.path)) return undefined;
    const judgedAgainst = Math.max(Date.now(), statSync(this.path).mtimeMs);
    const now = this.mono();
    const ageOf = (w: { wall: number; boot?: string | undefined; mono: number }) => (w.boot !== undefined && w.boot === this.boot && w.mono <= now ? now - w.mono : judgedAgainst - w.wall);
    const found = new Map<string, Taking & { age: number }>();
    // Line by line: an answer's line is at most twice its bytes (its JSON escaped once more).
    for (const line of readLinesSync(this.path, 2 * LIMITS.localInputKeptAnswersMaxBytes + 4096)) {
      this.lines++;
      if (line === undefined) {
        this.damaged++;
        continue;
      }
      this.bytes += Buffer.byteLength(line) + 1;
      if (line.length === 0) continue;
      const r = KeyLineSchema.safeParse(parseJson(line));
      if (!r.success) {
        this.damaged++;
        continue;
      }
      const l = r.data;
      found.delete(l.key);
      if ('taking' in l) found.set(l.key, { fingerprint: l.fingerprint, ...l.taking, wall: l.wall, mono: l.mono, age: ageOf(l) });
      else if ('takingFile' in l) found.set(l.key, { fingerprint: l.fingerprint, file: l.takingFile, wall: l.wall, mono: l.mono, age: ageOf(l) });
      else if ('text' in l) this.keyed.restore(l.key, { fingerprint: l.fingerprint, status: l.status, text: l.text }, ageOf(l), l.wall);
    }
    const files = this.filesToSettle(found);
    for (const [key, t] of found) {
      const text = 'file' in t ? files.answer(t.file) : t.first + t.count - 1 < this.numberedAtOpen() ? takenAnswer(Array.from({ length: t.count }, (_, i) => `${t.epoch}.${t.first + i}`)) : undefined;
      this.log.info({ idempotencyKey: key.slice(0, 64), taken: text !== undefined }, text !== undefined ? 'a request cut off by the stop before its answer was kept was queued: its retry is answered with its ids' : 'a request cut off by the stop before its answer was kept never reached the queue: its retry is taken anew');
      if (text !== undefined) this.keyed.restore(key, { fingerprint: t.fingerprint, status: 202, text }, t.age, t.wall);
    }
    if (this.damaged === 0 && found.size === 0 && !this.overBound()) return undefined;
    try {
      this.compact();
      return undefined;
    } catch (err) {
      return err as Error;
    }
  }

  /**
   * The answers of the file uploads among `found` (see the class comment): each the first file
   * record at or past its number with its bytes and name, that no kept answer, nor an upload
   * settled before it, names. The queue is read only when there is an upload to settle.
   */
  private filesToSettle(found: ReadonlyMap<string, Taking>): { answer: (f: TakingFile) => string | undefined } {
    const uploads = [...found.values()].flatMap((t) => ('file' in t ? [t.file] : []));
    if (uploads.length === 0) return { answer: () => undefined };
    const queued = this.queuedFiles(Math.min(...uploads.map((f) => f.from)));
    const named = new Set(this.keyed.entries().flatMap(([, e]) => messageIdsOf(e.text)));
    return {
      answer: (f) => {
        const m = queued.find((q) => q.seq >= f.from && !named.has(q.messageId) && q.sha256 === f.sha256 && q.size === f.size && q.filename === f.filename);
        if (!m) return undefined;
        named.add(m.messageId);
        return fileAnswer(m.messageId, m.size);
      },
    };
  }

  private overBound(): boolean {
    return this.lines > 2 * LIMITS.localInputKeysKeptMax || this.bytes > 2 * this.keyed.bytes + LIMITS.localInputKeysFileSlackBytes;
  }

  /**
   * Rewrites the file with the answers kept, oldest first, and the requests being taken now (after
   * a crash or a power cut: the old file or the new, whole).
   */
  private compact(): void {
    const lines = [...this.keyed.entries().map(([key, e]) => this.formatKept(key, e)), ...[...this.taking].map(([key, t]) => this.formatTaking(key, t))].map((l) => `${l}\n`);
    replaceFileDurablySync(this.path, lines);
    this.lines = lines.length;
    this.bytes = lines.reduce((n, l) => n + Buffer.byteLength(l), 0);
  }

  /** An answer's line: `mono` is its time on this boot's clock (KeyedRequests counts on bootClockMs). */
  private formatKept(key: string, e: KeptEntry): string {
    return JSON.stringify({ key, fingerprint: e.fingerprint, status: e.status, text: e.text, ...this.when(e.wall, e.at) });
  }

  private formatTaking(key: string, t: Taking): string {
    const what = 'file' in t ? { takingFile: t.file } : { taking: { epoch: t.epoch, first: t.first, count: t.count } };
    return JSON.stringify({ key, fingerprint: t.fingerprint, ...what, ...this.when(t.wall, t.mono) });
  }

  private when(wall: number, mono: number): { wall: number; boot?: string; mono: number } {
    return { wall: Math.max(0, Math.round(wall)), ...(this.boot ? { boot: this.boot } : {}), mono: Math.max(0, mono) };
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The message ids a kept answer names (none when it names none). */
function messageIdsOf(text: string): string[] {
  const ids = (parseJson(text) as { messageIds?: unknown } | undefined)?.messageIds;
  return Array.isArray(ids) ? ids.filter((id): id is string => typeof id === 'string') : [];
}

function parses(text: string): boolean {
  return parseJson(text) !== undefined;
}
