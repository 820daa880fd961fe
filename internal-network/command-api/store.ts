import { existsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { makeDirDurablySync, removeLeftAsideSync, replaceFileDurablySync } from '../../shared/durable-fs.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { appendLinesSync } from '../../shared/line-file.ts';
import type { Logger } from '../../shared/logger.ts';
import { ProgressResults, withoutResult } from './progress-results.ts';
import { lineBytes, readJournal } from './journal-lines.ts';
import { isFinal, type CommandRecord } from './schemas.ts';

interface Entry {
  record: CommandRecord;
  /** the command's bytes as one whole JSON line, its params included */
  bytes: number;
}

/**
 * Command state: in memory, with every change appended to a JSON-lines journal that is replayed
 * at start (last line per command wins) and compacted when it holds more than twice as many lines,
 * or bytes, as the commands kept (at start and while running).
 *
 * - Durable: the changes of one turn of the event loop are appended in one write and synced
 *   (line-file.ts); `flush()` does it at once, so a command is on disk before the API answers 202.
 *   A torn last line (a crash mid-write) is skipped at replay, and the next append starts on a
 *   line of its own instead of gluing to it.
 * - Small: a new command is written whole; a change of it (sent, answered, expired) without its
 *   params, up to 64 KiB each, which the line before holds. A resend of a command sent already
 *   changes no state, and waits in memory for the command's next line (`note`).
 * - Bounded: at most LIMITS.commandStoreMaxRecords commands and LIMITS.commandStoreMaxBytes of them
 *   are kept, the least recently changed finished ones forgotten first. A command still to be
 *   answered is never forgotten: at most LIMITS.commandMaxLive of them, of at most
 *   LIMITS.commandMaxLiveBytes, may be waiting (API_COMMANDS_FULL past either), far below the caps;
 *   the results of their progress answers grow them by LIMITS.commandProgressResultsMaxBytes at most.
 *   So the journal stays within about twice the byte cap, and is read back line by line, never
 *   whole: one string of it could not be made past 512 MiB, and the API could not start again.
 */
export class CommandStore {
  private readonly entries = new Map<string, Entry>();
  private readonly named = new Set<string>();
  /** the ids of the finished commands kept, least recently changed first: the next to forget. Walking
   * `entries` for it passed every command still waiting (up to LIMITS.commandMaxLive) at each new
   * command once the store was full: half a second for a fleet command of a thousand devices. */
  private readonly finished = new Set<string>();
  /** the commands not in a final state, by device (what a device's presence turning online looks up) */
  private readonly waiting = new Map<string, Set<string>>();
  /** the commands each request with an Idempotency-Key made, by `by \n key` */
  private readonly requests = new Map<string, Set<string>>();
  private pending = '';
  private flushScheduled = false;
  /** lines and bytes in the journal, for compaction */
  private lines = 0;
  private journalBytes = 0;
  /** commands not in a final state, and their bytes */
  private liveCount = 0;
  private liveBytesSum = 0;
  /** bytes of every command kept */
  private storeBytes = 0;
  /** the results of progress answers held, within their bound */
  private readonly progress = new ProgressResults();
  /**
   * An append failed and so did its cut (line-file.ts FILE_APPEND_UNCERTAIN): the journal may hold
   * some of its lines, or none. It is rewritten from memory (compacted) at each flush until that
   * goes through; meanwhile the new commands of such appends are `unsettled` (keepUnsettled). Other
   * appends go on: a journal with such a tail reads back right (a torn line is skipped, and the next
   * append starts on a line of its own; a request cut off before its last line is taken none of it),
   * and refusing them all held every device's answer (its PUBACK) and every new command too.
   */
  private unsure = false;
  private readonly unsettled = new Set<string>();

  constructor(
    private readonly path: string,
    private readonly log: Logger,
  ) {
    makeDirDurablySync(dirname(path));
    // What a compaction killed before its rename left aside (PATH.tmp-PID): never read, and each
    // such kill left up to LIMITS.commandStoreMaxBytes on the disk for good.
    for (const path of removeLeftAsideSync(this.path)) this.log.info({ path }, 'removed what a compaction cut off by a crash was writing; the journal it was to replace stands');
    this.load();
  }

  get(commandId: string): CommandRecord | undefined {
    return this.entries.get(commandId)?.record;
  }

  *all(): IterableIterator<CommandRecord> {
    for (const e of this.entries.values()) yield e.record;
  }

  /** The device's commands still to be answered (not in a final state). */
  *waitingFor(deviceId: string): IterableIterator<CommandRecord> {
    // A copy: publishing one may change the set (a state written back) while it is walked.
    for (const id of [...(this.waiting.get(deviceId) ?? [])]) {
      const r = this.entries.get(id)?.record;
      if (r) yield r;
    }
  }

  /**
   * The commands a request of this caller with this Idempotency-Key made, as many as are kept (a
   * finished one may be forgotten as any other: the key with it).
   */
  byRequest(by: string, key: string): CommandRecord[] {
    const ids = this.requests.get(`${by}\n${key}`);
    return ids ? [...ids].flatMap((id) => this.entries.get(id)?.record ?? []) : [];
  }

  /** commands that are still to be answered (not in a final state) */
  get live(): number {
    return this.liveCount;
  }

  /** bytes of the commands still to be answered, as JSON */
  get liveBytes(): number {
    return this.liveBytesSum;
  }

  /** How many more commands may be issued before LIMITS.commandMaxLive are waiting. */
  room(): number {
    return Math.max(0, LIMITS.commandMaxLive - this.liveCount);
  }

  /**
   * Records a change: in memory now, on disk by the end of this turn of the event loop (or at
   * `flush()`). A command known already keeps its params, and the journal line leaves them out.
   */
  put(record: CommandRecord): void {
    const before = this.entries.get(record.commandId);
    let line: string;
    if (before && before.record.params !== undefined) {
      const { params, ...rest } = record;
      line = JSON.stringify({ ...rest, paramsAsBefore: true });
      // The command's size whole: the params' share of it is unchanged.
      this.remember({ ...rest, params: before.record.params }, before.bytes - lineBytes({ ...before.record, params: undefined }) + lineBytes(rest));
    } else {
      line = JSON.stringify(record);
      this.remember(record, Buffer.byteLength(line) + 1);
    }
    this.pending += line + '\n';
    this.lines++;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flushQuietly());
    }
  }

  /**
   * Records a change in memory only, for what a crash may forget without harm: it reaches the
   * journal with the command's next change, or at a compaction. A change of the command's state
   * (or of a command not kept) is journaled as `put` does: a state is never left to memory alone.
   * What a resend changes (its count and time) is such a change: the resends come at the DMZ's
   * word (a device's presence), and a synced line each, per waiting command, was disk written and
   * compactions made as often as a compromised DMZ liked.
   */
  note(record: CommandRecord): void {
    const before = this.entries.get(record.commandId);
    if (!before || before.record.state !== record.state) {
      this.put(record);
      return;
    }
    const { params: _params, ...rest } = record;
    const kept = before.record.params === undefined ? rest : { ...rest, params: before.record.params };
    this.remember(kept, before.bytes - lineBytes({ ...before.record, params: undefined }) + lineBytes(rest));
  }

  /**
   * Records new commands and syncs them to disk before returning, all or none. Refused whole with
   * API_COMMANDS_FULL when they would make more than LIMITS.commandMaxLive, or more than
   * LIMITS.commandMaxLiveBytes, wait; when the disk refuses them, they are not kept (nor written,
   * line-file.ts) and API_STATE_WRITE_FAILED is thrown; when it refuses them and then their cut, they
   * are kept, and API_STATE_UNCERTAIN is thrown unless the journal could be rewritten (keepUnsettled).
   */
  add(records: readonly CommandRecord[]): void {
    const batch = records.length > 1 ? { first: (records[0] as CommandRecord).commandId, of: records.length } : undefined;
    const lines = records.map((r) => JSON.stringify(batch ? { ...r, batch } : r) + '\n');
    const sizes = records.map((r) => lineBytes(r));
    const bytes = sizes.reduce((a, b) => a + b, 0);
    if (records.length > this.room() || this.liveBytesSum + bytes > LIMITS.commandMaxLiveBytes) {
      const mib = (n: number) => `${Math.ceil(n / (1024 * 1024))} MiB`;
      throw new FieldStreamError(
        'API_COMMANDS_FULL',
        `${this.liveCount} commands (${mib(this.liveBytesSum)}) wait for their devices' answers (at most ${LIMITS.commandMaxLive}, ${mib(LIMITS.commandMaxLiveBytes)}); ` +
          `these ${records.length} (${mib(bytes)}) were not sent.`,
        { waiting: this.liveCount, waitingBytes: this.liveBytesSum, retryAfterS: Math.ceil(TIMINGS.commandExpirySweepMs / 1000) },
      );
    }
    const text = lines.join('');
    for (const [i, r] of records.entries()) this.remember(r, sizes[i] as number);
    this.pending += text;
    this.lines += records.length;
    try {
      this.flush();
    } catch (err) {
      this.pending = this.pending.slice(0, this.pending.length - text.length);
      if (isFieldStreamError(err, 'FILE_APPEND_UNCERTAIN')) return this.keepUnsettled(records, err);
      for (const r of records) this.forget(r.commandId);
      this.lines -= records.length;
      this.log.error({ code: 'API_STATE_WRITE_FAILED', err: (err as Error).message, path: this.path, commands: records.length }, 'new commands not written to the journal; refused');
      throw new FieldStreamError('API_STATE_WRITE_FAILED', `The commands could not be written to ${this.path}; nothing was sent.`, undefined, { cause: err });
    }
  }

  /**
   * Throws API_STATE_UNCERTAIN when some of `records` may not be on the disk (keepUnsettled), once
   * the journal was tried again: what a request sent again under its Idempotency-Key is told too,
   * rather than 202, until they are.
   */
  confirmDurable(records: readonly CommandRecord[]): void {
    const unsettled = () => records.flatMap((r) => (this.unsettled.has(r.commandId) ? [r.commandId] : []));
    if (unsettled().length === 0) return;
    try {
      this.flush();
    } catch {
      // told below, with the commands still unsettled
    }
    const ids = unsettled();
    if (ids.length > 0) throw this.uncertain(ids);
  }

  private uncertain(commandIds: string[]): FieldStreamError {
    return new FieldStreamError(
      'API_STATE_UNCERTAIN',
      `The commands were taken and are being sent, but ${this.path} may not hold them: a restart may send them, or not. Do not send them again; follow them by their ids.`,
      { commandIds },
    );
  }

  /**
   * New commands whose append failed, and then its cut: their lines may be in the journal, read
   * back and sent at a start. Refused, they would be sent after a restart though their operator was
   * told they were not (and twice, sent again without an Idempotency-Key). So they are kept and
   * sent, as a restart may, and not answered 202 either while a restart may lose them: the answer
   * says they were taken but may not be durable (API_STATE_UNCERTAIN). Their lines are not appended
   * again: a request's lines twice in a row read back as one request of the wrong commands (load).
   * The journal is rewritten from memory instead, at once if the disk lets it (then answered 202),
   * else at the next flush that goes through (a change, the request sent again under its key).
   */
  private keepUnsettled(records: readonly CommandRecord[], err: FieldStreamError): void {
    for (const r of records) this.unsettled.add(r.commandId);
    const fields = { err: err.message, path: this.path, commands: records.length };
    if (this.compact()) {
      this.log.warn({ ...fields, code: 'FILE_APPEND_UNCERTAIN' }, 'new commands: their append failed and its cut too; the journal was rewritten from memory, they are on the disk');
      return;
    }
    this.log.error({ ...fields, code: 'API_STATE_UNCERTAIN' }, 'new commands: their append failed and its cut too, so a restart may send them; kept and sent, not refused; the journal is rewritten once the disk takes a write');
    throw this.uncertain(records.map((r) => r.commandId));
  }

  /** Writes and syncs every change recorded so far; throws when the disk refuses them (they stay pending, written at the next flush). */
  flush(): void {
    this.flushScheduled = false;
    if (this.pending === '') {
      if (this.unsure) this.compact();
      return;
    }
    let closeFailed: Error | undefined;
    try {
      closeFailed = appendLinesSync(this.path, this.pending, 0o640, this.named);
    } catch (err) {
      // The lines pending may be in the journal, or not: appended again, a change of a command read
      // twice is the same change; a request's new commands are not appended again (keepUnsettled).
      if (isFieldStreamError(err, 'FILE_APPEND_UNCERTAIN')) this.unsure = true;
      throw err;
    }
    // Synced, then the close failed (NFS reports write-back errors there too): the lines are on the
    // disk and read back at a start, so they count as written; refused, a new command would be
    // dispatched after a restart all the same, and its operator's retry made it twice.
    if (closeFailed) this.log.warn({ code: 'API_STATE_CLOSE_FAILED', err: closeFailed.message, path: this.path }, 'command journal synced, its close failed; the changes count as written');
    this.journalBytes += Buffer.byteLength(this.pending);
    this.pending = '';
    if (this.unsure || this.lines > 2 * this.entries.size + LIMITS.commandJournalSlackLines || this.journalBytes > 2 * this.storeBytes + LIMITS.commandJournalSlackBytes) this.compact();
  }

  private flushQuietly(): void {
    try {
      this.flush();
    } catch (err) {
      // In memory the change stands; on disk it is retried at the next change. Lost only if the
      // process dies before the disk takes it again: logged, so the operator knows why.
      this.log.error({ code: 'API_STATE_WRITE_FAILED', err: (err as Error).message, path: this.path }, 'command state not written to its journal; retried at the next change');
    }
  }

  private remember(record: CommandRecord, bytes: number): void {
    this.forget(record.commandId); // re-inserted: Map order is recency of change
    this.entries.set(record.commandId, { record, bytes });
    this.storeBytes += bytes;
    if (record.request) {
      const k = `${record.request.by}\n${record.request.key}`;
      const ids = this.requests.get(k);
      if (ids) ids.add(record.commandId);
      else this.requests.set(k, new Set([record.commandId]));
    }
    if (isFinal(record.state)) this.finished.add(record.commandId);
    else {
      this.liveCount++;
      this.liveBytesSum += bytes;
      const ids = this.waiting.get(record.deviceId);
      if (ids) ids.add(record.commandId);
      else this.waiting.set(record.deviceId, new Set([record.commandId]));
    }
    for (const id of this.progress.hold(record)) this.letResultGo(id);
    while (this.entries.size > LIMITS.commandStoreMaxRecords || this.storeBytes > LIMITS.commandStoreMaxBytes) {
      if (!this.forgetOldestFinished()) break;
    }
  }

  private forget(commandId: string): void {
    const e = this.entries.get(commandId);
    if (!e) return;
    this.progress.drop(commandId);
    this.entries.delete(commandId);
    this.finished.delete(commandId);
    this.storeBytes -= e.bytes;
    if (e.record.request) {
      const k = `${e.record.request.by}\n${e.record.request.key}`;
      const ids = this.requests.get(k);
      ids?.delete(commandId);
      if (ids?.size === 0) this.requests.delete(k);
    }
    if (!isFinal(e.record.state)) {
      this.liveCount--;
      this.liveBytesSum -= e.bytes;
      const ids = this.waiting.get(e.record.deviceId);
      ids?.delete(commandId);
      if (ids?.size === 0) this.waiting.delete(e.record.deviceId);
    }
  }

  /**
   * Lets a waiting command's progress result go (ProgressResults), in memory only: the command keeps
   * its place among the changed, and the journal its line, read back within the bound again at a
   * start and rewritten without the result at the next compaction.
   */
  private letResultGo(commandId: string): void {
    const e = this.entries.get(commandId);
    this.progress.drop(commandId);
    if (!e) return;
    const record = withoutResult(e.record);
    const bytes = e.bytes - lineBytes({ ...e.record, params: undefined }) + lineBytes({ ...record, params: undefined });
    this.entries.set(commandId, { record, bytes });
    this.storeBytes += bytes - e.bytes;
    this.liveBytesSum += bytes - e.bytes;
  }

  private forgetOldestFinished(): boolean {
    const oldest = this.finished.values().next();
    if (oldest.done) return false;
    this.forget(oldest.value);
    this.unsettled.delete(oldest.value);
    return true;
  }

  /**
   * Rewrites the journal with one whole line per command kept, a piece at a time; the old journal
   * stands if this fails. Done, it holds what memory holds: every change recorded so far (none is
   * pending), and each command once, whatever an append of unknown outcome left (keepUnsettled).
   */
  private compact(): boolean {
    const entries = this.entries;
    function* pieces(): Generator<string> {
      let piece = '';
      for (const { record } of entries.values()) {
        piece += JSON.stringify(record) + '\n';
        if (piece.length >= 1024 * 1024) {
          yield piece;
          piece = '';
        }
      }
      if (piece) yield piece;
    }
    try {
      replaceFileDurablySync(this.path, pieces(), 0o640);
      this.lines = this.entries.size;
      this.journalBytes = this.storeBytes;
      this.pending = '';
      this.unsure = false;
      this.unsettled.clear();
      return true;
    } catch (err) {
      this.log.warn({ code: 'API_STATE_WRITE_FAILED', err: (err as Error).message, path: this.path }, 'command journal not compacted; it stays as it was');
      return false;
    }
  }

  private load(): void {
    if (!existsSync(this.path)) return;
    const { lines, skipped } = readJournal(this.path, { get: (id) => this.entries.get(id), take: (record, bytes) => this.remember(record, bytes) });
    this.lines = lines;
    if (skipped > 0) this.log.warn({ code: 'API_STATE_LINE_SKIPPED', path: this.path, skipped }, 'command journal lines skipped: torn by a crash, damaged, a change of a command not in the journal, or commands of a request cut off before all were written');
    this.journalBytes = statSync(this.path).size;
    if (this.lines > 2 * this.entries.size || this.journalBytes > 2 * this.storeBytes + LIMITS.commandJournalSlackBytes) this.compact();
  }
}
