import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { FieldStreamError } from '../../shared/errors.ts';
import { replaceFileDurablySync } from '../../shared/durable-fs.ts';
import { LIMITS } from '../../shared/limits.ts';
import { appendLinesSync } from '../../shared/line-file.ts';
import type { Logger } from '../../shared/logger.ts';
import { CommandRecordSchema, isFinal, type CommandRecord } from './schemas.ts';

/**
 * Command state: in memory, with every change appended to a JSON-lines journal that is replayed
 * at start (last line per command wins) and compacted when it holds more than twice as many lines
 * as commands (at start and while running).
 *
 * - Durable: the changes of one turn of the event loop are appended in one write and synced
 *   (line-file.ts); `flush()` does it at once, so a command is on disk before the API answers 202.
 *   A torn last line (a crash mid-write) is skipped at replay, and the next append starts on a
 *   line of its own instead of gluing to it.
 * - Bounded: at most LIMITS.commandStoreMaxRecords commands are kept, the least recently changed
 *   finished ones forgotten first. A command still to be answered is never forgotten: at most
 *   LIMITS.commandMaxLive of them may be waiting (`room()`), far below the record cap.
 */
export class CommandStore {
  private readonly records = new Map<string, CommandRecord>();
  private readonly named = new Set<string>();
  private pending = '';
  private flushScheduled = false;
  /** lines in the journal, for compaction */
  private lines = 0;
  /** commands not in a final state */
  private liveCount = 0;

  constructor(
    private readonly path: string,
    private readonly log: Logger,
  ) {
    mkdirSync(dirname(path), { recursive: true });
    this.load();
  }

  get(commandId: string): CommandRecord | undefined {
    return this.records.get(commandId);
  }

  all(): IterableIterator<CommandRecord> {
    return this.records.values();
  }

  /** commands that are still to be answered (not in a final state) */
  get live(): number {
    return this.liveCount;
  }

  /** How many more commands may be issued before LIMITS.commandMaxLive are waiting. */
  room(): number {
    return Math.max(0, LIMITS.commandMaxLive - this.liveCount);
  }

  /** Records a change: in memory now, on disk by the end of this turn of the event loop (or at `flush()`). */
  put(record: CommandRecord): void {
    this.remember(record);
    this.pending += JSON.stringify(record) + '\n';
    this.lines++;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flushQuietly());
    }
  }

  /**
   * Records new commands and syncs them to disk before returning, all or none: when the disk refuses
   * them, they are not kept (nor written, line-file.ts) and API_STATE_WRITE_FAILED is thrown.
   */
  add(records: readonly CommandRecord[]): void {
    const text = records.map((r) => JSON.stringify(r) + '\n').join('');
    for (const r of records) this.remember(r);
    this.pending += text;
    this.lines += records.length;
    try {
      this.flush();
    } catch (err) {
      for (const r of records) if (this.records.delete(r.commandId) && !isFinal(r.state)) this.liveCount--;
      this.pending = this.pending.slice(0, this.pending.length - text.length);
      this.lines -= records.length;
      this.log.error({ code: 'API_STATE_WRITE_FAILED', err: (err as Error).message, path: this.path, commands: records.length }, 'new commands not written to the journal; refused');
      throw new FieldStreamError('API_STATE_WRITE_FAILED', `The commands could not be written to ${this.path}; nothing was sent.`, undefined, { cause: err });
    }
  }

  /** Writes and syncs every change recorded so far; throws when the disk refuses them (they stay pending, written at the next flush). */
  flush(): void {
    this.flushScheduled = false;
    if (this.pending === '') return;
    appendLinesSync(this.path, this.pending, 0o640, this.named);
    this.pending = '';
    if (this.lines > 2 * this.records.size + LIMITS.commandJournalSlackLines) this.compact();
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

  private remember(record: CommandRecord): void {
    const before = this.records.get(record.commandId);
    if (before && !isFinal(before.state)) this.liveCount--;
    if (!isFinal(record.state)) this.liveCount++;
    this.records.delete(record.commandId); // re-insert: Map order is recency of change
    this.records.set(record.commandId, record);
    if (this.records.size > LIMITS.commandStoreMaxRecords) this.forgetOldestFinished();
  }

  private forgetOldestFinished(): void {
    for (const [id, r] of this.records) {
      if (isFinal(r.state)) {
        this.records.delete(id);
        return;
      }
    }
  }

  /** Rewrites the journal with one line per command kept; the old journal stands if this fails. */
  private compact(): void {
    try {
      replaceFileDurablySync(this.path, [...this.records.values()].map((r) => JSON.stringify(r) + '\n').join(''), 0o640);
      this.lines = this.records.size;
    } catch (err) {
      this.log.warn({ code: 'API_STATE_WRITE_FAILED', err: (err as Error).message, path: this.path }, 'command journal not compacted; it stays as it was');
    }
  }

  private load(): void {
    if (!existsSync(this.path)) return;
    for (const line of readFileSync(this.path, 'utf8').split('\n')) {
      if (!line.trim()) continue;
      this.lines++;
      const parsed = CommandRecordSchema.safeParse(safeJson(line));
      if (parsed.success) this.remember(parsed.data);
    }
    if (this.lines > 2 * this.records.size) this.compact();
  }
}

function safeJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}
