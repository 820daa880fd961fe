import { closeSync, existsSync, fdatasync, fstatSync, openSync, readSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { removeLeftAsideSync, replaceFileDurablySync, syncDirSync, writeWholeSync } from '../../../shared/durable-fs.ts';
import { LimitedLog } from '../../../shared/limited-log.ts';
import { LIMITS, TIMINGS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import { readLinesSync } from '../../../shared/line-file.ts';
import type { TakenPublishes } from './mqtt-resends.ts';

/** The file in FIELD_DATA_DIR that holds the local MQTT input's publishes taken, across restarts. */
export const TAKEN_FILE = 'mqtt-taken.jsonl';

/** A publish's key (client and packet identifier, mqtt-resends.ts keyOf) and digest, as TakenPublishes keeps them. */
const Key = z.string().min(3).max(128);
const Digest = z.string().min(1).max(64);
/**
 * The lines of the file, each checked when read back: one that fails them is no line of ours (torn by
 * a power cut, damaged on the disk).
 * - `taking`: a publish whose readings or events the queue just numbered (the first, how many),
 *   written before the queue writes any of them;
 * - `taken`: a publish known to be in the queue (a rewrite's line for one settled);
 * - `released`: a publish whose append failed (the queue gives those numbers again).
 */
const TakenLineSchema = z.union([
  z.object({ key: Key, digest: Digest, taking: z.object({ first: z.number().int().positive(), count: z.number().int().positive().max(LIMITS.localInputMaxItems) }) }),
  z.object({ key: Key, digest: Digest, taken: z.literal(true) }),
  z.object({ key: Key, released: z.literal(true) }),
]);
type Taking = { digest: string; first: number; count: number };

/**
 * The local MQTT input's record of publishes taken (mqtt-resends.ts) on disk
 * (FIELD_DATA_DIR/mqtt-taken.jsonl, JSON Lines), so that a publish a sensor sends again flagged DUP
 * after the field client restarted (a crash, a kill, a power cut, an upgrade: its PUBACK lost with
 * the process) is acknowledged and not queued again.
 *
 * Each publish's `taking` line is written in the same turn of the event loop as the queue numbers
 * its readings, before the queue's writer writes a byte of them (it goes on only once the input
 * yields), and its PUBACK waits for that line's sync as well as the queue's. What a kill at each
 * instant gives:
 * - before the line: the queue has written nothing of it, no PUBACK; the copy sent again is taken, once.
 * - the line written, the queue's records not: at the next start the publish's numbers are at or
 *   past the first the queue gave after its open (DurableQueue.numberedAtOpen): never on disk, and
 *   the copy sent again is taken, once.
 * - the queue's records written (a kill, a crash: the page cache keeps both writes; a power cut:
 *   once both are synced, which the PUBACK waits for): below that number, taken; the copy sent
 *   again flagged DUP is acknowledged, nothing queued again.
 * Left: a power cut after the queue's sync and before the line's (both run at once), the PUBACK not
 * yet sent; the copy sent again is queued a second time.
 *
 * The lines are synced together (one fdatasync for those written while the last one ran), not one
 * each, so that a sensor streaming at QoS 1 pays a sync per group, as the queue's group commit does.
 * Read back at the start through their schema: a damaged line is skipped and counted (`damaged`),
 * never a failed start; the file is rewritten then (what was settled stays settled once the numbers
 * never written are given again), and whenever it holds more than twice
 * LIMITS.localMqttTakenPublishesMax lines. No time bound: TakenPublishes keeps the last
 * LIMITS.localMqttTakenPublishesMax, as in memory.
 */
export class TakenFile {
  /** lines read at the start that are no line of ours (skipped) */
  damaged = 0;
  readonly path: string;
  private fd: number | undefined;
  private lines = 0;
  /** the file may end in a torn line (a write cut short): the next line starts on one of its own */
  private torn = false;
  /** publishes whose `taking` line is written, their append not yet settled */
  private readonly taking = new Map<string, Taking>();
  /** the sync running, and whether lines were written since it began */
  private syncing: Promise<void> | undefined;
  private again: Promise<void> | undefined;
  private readonly writeLog: LimitedLog;

  constructor(
    dataDir: string,
    private readonly taken: TakenPublishes,
    private readonly log: Logger,
    /** DurableQueue.numberedAtOpen */
    private readonly numberedAtOpen: () => number,
  ) {
    this.path = join(dataDir, TAKEN_FILE);
    this.writeLog = new LimitedLog(log, { maxPerWindow: LIMITS.localInputBusyLogMaxPerWindow, windowMs: TIMINGS.floodLogIntervalMs, what: 'MQTT publishes taken not kept on disk' });
  }

  /**
   * Reads what was taken into `taken`, at the input's start. Never fails the start: damaged lines are
   * skipped and said once (FIELD_INPUT_TAKEN_DAMAGED); a file that cannot be read leaves nothing
   * known from before (a copy sent again is queued again), said too.
   */
  load(): void {
    try {
      this.read();
    } catch (err) {
      this.log.warn({ code: 'FIELD_INPUT_TAKEN_DAMAGED', path: this.path, err: (err as Error).message }, 'the file of MQTT publishes taken cannot be read: none taken before the start is known');
    }
    if (this.damaged > 0) this.log.warn({ code: 'FIELD_INPUT_TAKEN_DAMAGED', path: this.path, lines: this.damaged }, 'lines of the file of MQTT publishes taken cannot be read (torn by a power cut, or damaged): skipped');
  }

  /**
   * The queue just numbered a publish's readings or events (`count` from `first`) and has written
   * none of them: its line, written now, synced with the next group. Resolves once synced; a disk
   * that refuses it is logged, and the publish goes on as before this file (resolves all the same).
   */
  numbered(key: string, digest: string, first: number, count: number): Promise<void> {
    const t: Taking = { digest, first, count };
    if (!this.write(JSON.stringify({ key, digest, taking: { first, count } }), key)) return Promise.resolve();
    this.taking.set(key, t);
    return this.synced();
  }

  /** The publish's append settled: kept as taken (its line holds), or not taken, whose numbers the queue gives again (a `released` line). */
  settled(key: string, ok: boolean): void {
    if (!this.taking.delete(key) || ok) return;
    if (this.write(JSON.stringify({ key, released: true }), key)) void this.synced();
  }

  /** Waits for the lines written to be synced, and closes the file. */
  async close(): Promise<void> {
    await this.synced();
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  /** Appends one line (not synced: see synced); false when the disk refused it. Rewrites the file past its bound first. */
  private write(line: string, key: string): boolean {
    try {
      if (this.lines >= 2 * LIMITS.localMqttTakenPublishesMax) this.compact();
      const fd = this.open();
      writeWholeSync(fd, Buffer.from(`${this.torn ? '\n' : ''}${line}\n`, 'utf8'), this.path);
      this.torn = false;
      this.lines++;
      return true;
    } catch (err) {
      this.torn = true;
      this.writeLog.write({ code: 'FIELD_INPUT_TAKEN_WRITE_FAILED', path: this.path, key: key.slice(0, 80), err: (err as Error).message }, 'could not keep an MQTT publish taken on disk: a copy sent again after a restart would be queued again');
      return false;
    }
  }

  /** Resolves once every line written so far is synced: one fdatasync for the lines written while the one before ran. */
  private synced(): Promise<void> {
    if (this.fd === undefined) return Promise.resolve();
    if (!this.syncing) {
      const fd = this.fd;
      this.syncing = new Promise<void>((resolve) =>
        fdatasync(fd, (err) => {
          if (err) this.writeLog.write({ code: 'FIELD_INPUT_TAKEN_WRITE_FAILED', path: this.path, err: err.message }, 'could not sync the MQTT publishes taken: a copy sent again after a restart may be queued again');
          resolve();
        }),
      ).finally(() => (this.syncing = undefined));
      return this.syncing;
    }
    // Written while a sync runs: the next one, once it is done (one for all that wait).
    this.again ??= this.syncing.then(() => {
      this.again = undefined;
      return this.synced();
    });
    return this.again;
  }

  private open(): number {
    if (this.fd !== undefined) return this.fd;
    const made = !existsSync(this.path);
    const fd = openSync(this.path, 'a+', 0o600);
    // A new name is durable once its folder is synced; a file a power cut tore ends without "\n".
    if (made) syncDirSync(dirname(this.path));
    const size = fstatSync(fd).size;
    const last = Buffer.alloc(1);
    this.torn = size > 0 && !(readSync(fd, last, 0, 1, size - 1) === 1 && last[0] === 0x0a);
    this.fd = fd;
    return fd;
  }

  /** Reads the file into `taken`, settles the publishes found being taken, and rewrites it when there were any or it held damage. */
  private read(): void {
    removeLeftAsideSync(this.path);
    if (!existsSync(this.path)) return;
    const found = new Map<string, { digest: string; taking?: Taking }>();
    for (const line of readLinesSync(this.path, 4096)) {
      this.lines++;
      if (line === undefined) {
        this.damaged++;
        continue;
      }
      if (line.length === 0) continue;
      const r = TakenLineSchema.safeParse(parseJson(line));
      if (!r.success) {
        this.damaged++;
        continue;
      }
      const l = r.data;
      found.delete(l.key); // set again: the newest
      if ('taking' in l) found.set(l.key, { digest: l.digest, taking: { digest: l.digest, ...l.taking } });
      else if ('taken' in l) found.set(l.key, { digest: l.digest });
    }
    let settled = false;
    for (const [key, f] of found) {
      if (f.taking) settled = true;
      // Its last number below the first the queue gave after its open: on disk then.
      if (!f.taking || f.taking.first + f.taking.count - 1 < this.numberedAtOpen()) this.taken.restore(key, f.digest);
    }
    if (settled || this.damaged > 0 || found.size > LIMITS.localMqttTakenPublishesMax) {
      try {
        this.compact();
      } catch (err) {
        this.log.warn({ code: 'FIELD_INPUT_TAKEN_WRITE_FAILED', path: this.path, err: (err as Error).message }, 'could not rewrite the file of MQTT publishes taken: read as it is');
      }
    }
  }

  /** Rewrites the file: a `taken` line for each publish known queued, a `taking` line for each being appended. */
  private compact(): void {
    const lines: string[] = [];
    for (const [key, digest] of this.taken.queued()) if (!this.taking.has(key)) lines.push(`${JSON.stringify({ key, digest, taken: true })}\n`);
    for (const [key, t] of this.taking) lines.push(`${JSON.stringify({ key, digest: t.digest, taking: { first: t.first, count: t.count } })}\n`);
    replaceFileDurablySync(this.path, lines);
    // The old file's lines are all in the new one, synced: its fd is let go (once a sync running on it is done).
    const old = this.fd;
    this.fd = undefined;
    if (old !== undefined) void (this.syncing ?? Promise.resolve()).then(() => closeSync(old));
    this.lines = lines.length;
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
