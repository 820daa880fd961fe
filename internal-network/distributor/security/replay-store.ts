import { closeSync, constants, fstatSync, ftruncateSync, openSync, readdirSync, rmSync } from 'node:fs';
import { readRegularFileSync, replaceFileDurablySync, writeWholeSync } from '../../../shared/durable-fs.ts';
import { join } from 'node:path';
import { FieldStreamError } from '../../../shared/errors.ts';
import { crc32 } from 'node:zlib';
import { z } from 'zod';
import { LIMITS } from '../../../shared/limits.ts';

/**
 * Where the replay windows live on disk: one journal and one snapshot per generation.
 *
 *   DIR/windows-G.snap   every window as it was when generation G began: a header line
 *                        `MAGIC G BYTES CRC32` then the JSON of SnapshotSchema
 *   DIR/windows-G.log    what was accepted since: one line per device and epoch touched by a
 *                        commit, `CRC32 JSON` with JSON = [time, device, epoch, seq, seq, ...]
 *
 * A commit appends its lines with one write to the open journal (no open, no close, a few dozen
 * bytes) where the layout before wrote the device's whole window (8 KiB of bits as base64) into a
 * file of its own: that cost a fifth of the distributor's CPU with one reading per message.
 * Loading takes the newest intact snapshot and replays every journal of its generation or later,
 * and the one of the generation before (a compaction that failed after its snapshot appends there);
 * a line that does not match its CRC (a write torn by a power cut, or a copy taken mid-write) is
 * skipped, and the lines after it are read: each is whole on its own, as an append is written whole
 * or cut back to where it began. Recording a sequence number twice changes nothing, so a snapshot
 * that already holds part of a journal is safe to replay over.
 *
 * Compaction (at start, and when the journal passes LIMITS.replayJournalMaxBytes): the snapshot of
 * G+1 is written beside, synced and renamed into place, then the journal of G+1 opened; only then
 * are the files of G-1 and earlier removed. Generation G stays, so a backup reading the folder
 * while a compaction runs still finds the files it listed, and a damaged newest snapshot falls back
 * to the one before it and both journals. *
 * `fence` (the state lease's assertHeld, state-lease.ts) throws once another distributor took the
 * folder over. It is asked after each append, before the caller acknowledges anything: a line
 * appended while the folder was still ours was there when the taker loaded it; one appended after
 * fails the check and is never acknowledged (left in the journal, it only records a number more).
 * A compaction asks before its snapshot is written and again after the rename, before it removes
 * anything. In the moment between a stale holder's check and its rename, its snapshot may replace
 * the taker's of that generation: it holds every window the taker loaded (a holder's memory holds
 * all it journalled), and the taker's own lines are in journals loading replays over any snapshot.
 */
const SNAPSHOT_MAGIC = 'fieldstream-replay-snapshot-v1';
/** A snapshot or journal of a generation (exported for the restore, scripts/admin/restore.ts). */
export const WINDOWS_FILE = /^windows-(\d{1,15})\.(snap|log)$/;
/** a snapshot a compaction was writing when its process died */
const LEFT_BEHIND = /^windows-\d{1,15}\.snap\.tmp-\d+$/;

/**
 * A window as stored: `runs` lists the accepted sequence numbers as [highest, lowest] ranges,
 * newest first (a device that skips nothing has one); a window with many gaps keeps its ring of
 * bits (base64) instead, which is never larger than 8 KiB.
 */
/** Most [highest, lowest] ranges a window is stored as; one with more gaps keeps its ring of bits. */
export const STORED_RUNS_MAX = 64;
const StoredWindowSchema = z.union([
  z.object({ top: z.number().int().nonnegative(), lastSeen: z.number(), runs: z.array(z.tuple([z.number().int().nonnegative(), z.number().int().nonnegative()])).max(STORED_RUNS_MAX) }),
  z.object({ top: z.number().int().nonnegative(), lastSeen: z.number(), ring: z.string() }),
]);
export type StoredWindow = z.infer<typeof StoredWindowSchema>;
const SnapshotSchema = z.object({ devices: z.record(z.string(), z.record(z.string(), StoredWindowSchema)) });
export type Snapshot = z.infer<typeof SnapshotSchema>;
const JournalLineSchema = z.tuple([z.number(), z.string().min(1), z.string().min(1)]).rest(z.number().int().nonnegative());

/** One line of the journal: a device's sequence numbers of one epoch accepted at `time`. */
export interface JournalEntry {
  time: number;
  deviceId: string;
  epoch: string;
  seqs: number[];
}

interface Generation {
  n: number;
  snap: boolean;
  log: boolean;
}

function generations(dir: string): Generation[] {
  const byN = new Map<number, Generation>();
  for (const name of readdirSync(dir)) {
    if (LEFT_BEHIND.test(name)) rmSync(join(dir, name), { force: true });
    const m = WINDOWS_FILE.exec(name);
    if (!m) continue;
    const n = Number(m[1]);
    const g = byN.get(n) ?? { n, snap: false, log: false };
    if (m[2] === 'snap') g.snap = true;
    else g.log = true;
    byN.set(n, g);
  }
  return [...byN.values()].sort((a, b) => a.n - b.n);
}

/**
 * What `read` makes of the file at `path`, undefined when there is none. One that is there but
 * cannot be read (an I/O error, out of descriptors, permissions, a folder, a FIFO or a device in its place) throws
 * DISTRIBUTOR_STATE_UNREADABLE, and the distributor does not start: read as no windows, every
 * number it held came back as new, unsaid, and the compactions that followed removed it for good.
 * Damage is another matter: a file read whole but torn or garbled is skipped (see above).
 */
function readOrAbsent<T>(path: string, read: (path: string) => T): T | undefined {
  try {
    return read(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new FieldStreamError(
      'DISTRIBUTOR_STATE_UNREADABLE',
      `The replay windows' file ${path} cannot be read: ${(err as Error).message}. The distributor does not start without the numbers it accepted; make it readable, or move it out of the folder to start without what it holds.`,
      { path },
      { cause: err },
    );
  }
}

/**
 * A file framed as `MAGIC GENERATION BYTES CRC32\n` then BYTES of JSON (the snapshots here, and the
 * per-device slots of the layout before them): its generation and parsed JSON, or undefined when
 * it is missing, of another kind, torn or damaged. Bytes past BYTES are ignored (slots were
 * written in place over longer ones).
 */
export function readFramed(path: string, magic: string): { generation: number; json: unknown } | undefined {
  const data = readOrAbsent(path, (p) => readRegularFileSync(p));
  if (data === undefined) return undefined;
  const eol = data.indexOf(10);
  if (eol < 0) return undefined;
  const [found, generation, bytes, crc] = data.subarray(0, eol).toString('latin1').split(' ');
  const body = data.subarray(eol + 1, eol + 1 + Number(bytes));
  if (found !== magic || body.length !== Number(bytes) || crc32(body) !== Number(crc)) return undefined;
  try {
    return { generation: Number(generation), json: JSON.parse(body.toString('utf8')) };
  } catch {
    return undefined;
  }
}

function readSnapshot(path: string): Snapshot | undefined {
  const parsed = SnapshotSchema.safeParse(readFramed(path, SNAPSHOT_MAGIC)?.json);
  return parsed.success ? parsed.data : undefined;
}

/** What loading skipped as damaged: snapshots (their paths), and whole journal lines that failed their check. */
export interface ReplayDamage {
  snapshots: string[];
  lines: number;
}

/**
 * The journal's intact lines, in order; a damaged one is skipped (see above) and counted in
 * `damage`. What follows the last newline is not: an append a kill or a power cut cut short, never
 * acknowledged.
 */
function readJournal(path: string, damage: ReplayDamage): JournalEntry[] {
  const text = readOrAbsent(path, (p) => readRegularFileSync(p, 'utf8'));
  if (text === undefined) return [];
  const out: JournalEntry[] = [];
  let at = 0;
  for (;;) {
    const eol = text.indexOf('\n', at);
    if (eol < 0) break;
    const line = text.slice(at, eol);
    at = eol + 1;
    const space = line.indexOf(' ');
    const json = line.slice(space + 1);
    if (space < 1 || crc32(json) !== parseInt(line.slice(0, space), 16)) {
      damage.lines++;
      continue;
    }
    let parsed: z.infer<typeof JournalLineSchema>;
    try {
      const r = JournalLineSchema.safeParse(JSON.parse(json));
      if (!r.success) throw new Error('not a journal line');
      parsed = r.data;
    } catch {
      damage.lines++;
      continue;
    }
    const [time, deviceId, epoch, ...seqs] = parsed;
    out.push({ time, deviceId, epoch, seqs });
  }
  return out;
}

export function journalLine(e: JournalEntry): string {
  const json = JSON.stringify([e.time, e.deviceId, e.epoch, ...e.seqs]);
  return `${crc32(json).toString(16)} ${json}\n`;
}

export class ReplayStore {
  private generation = 0;
  private fd: number | undefined;
  private journalBytes = 0;

  constructor(
    private readonly dir: string,
    private readonly maxJournalBytes = LIMITS.replayJournalMaxBytes,
    private readonly fence: () => void = () => undefined,
  ) {}

  /**
   * What the folder holds: the newest intact snapshot (undefined when none) and the journal
   * entries to replay over it, oldest first. Call compact() before the first append.
   */
  load(): { snapshot: Snapshot | undefined; entries: JournalEntry[]; damage: ReplayDamage } {
    const gens = generations(this.dir);
    this.generation = gens.at(-1)?.n ?? 0;
    const damage: ReplayDamage = { snapshots: [], lines: 0 };
    const readJournals = (from: number) => gens.filter((j) => j.n >= from && j.log).flatMap((j) => readJournal(join(this.dir, `windows-${j.n}.log`), damage));
    for (const g of [...gens].reverse()) {
      if (!g.snap) continue;
      const path = join(this.dir, `windows-${g.n}.snap`);
      const snapshot = readSnapshot(path);
      if (!snapshot) {
        // damaged: the one before it, with more of the journals
        damage.snapshots.push(path);
        continue;
      }
      // The journal of the generation before too: a compaction whose snapshot was written but whose
      // journal could not be opened (EMFILE, ENOSPC) goes on appending to that one, acknowledging
      // what it journals there, until a compaction succeeds. Its lines the snapshot holds already
      // change nothing replayed over it (see above).
      return { snapshot, entries: readJournals(g.n - 1), damage };
    }
    return { snapshot: undefined, entries: readJournals(-Infinity), damage };
  }

  /**
   * Appends with one write; true when the journal has grown past its limit (then compact). Whole or
   * not at all: a write the disk takes only part of (write(2) may, without an error, when the disk
   * fills) is written on, and if the disk refuses the rest the journal is cut back to where this
   * append began and the error thrown; the caller keeps the lines to append again. A torn line left
   * in the journal would otherwise have the next append glued to it, both unreadable.
   */
  append(lines: string): boolean {
    if (this.fd === undefined) throw new Error('replay journal not open: compact() first');
    const bytes = Buffer.from(lines, 'utf8');
    const size = fstatSync(this.fd).size;
    try {
      writeWholeSync(this.fd, bytes, 'the replay journal');
    } catch (err) {
      try {
        ftruncateSync(this.fd, size);
      } catch {
        // the torn line stays: loading skips it, and the lines after it are read
      }
      throw err;
    }
    this.journalBytes += bytes.length;
    this.fence();
    return this.journalBytes >= this.maxJournalBytes;
  }

  /** Begins the next generation from `snapshot` (every window as it is now); see the file's comment. */
  compact(snapshot: Snapshot): void {
    this.fence();
    const next = this.generation + 1;
    const body = Buffer.from(JSON.stringify(snapshot), 'utf8');
    const header = Buffer.from(`${SNAPSHOT_MAGIC} ${next} ${body.length} ${crc32(body)}\n`, 'latin1');
    const path = join(this.dir, `windows-${next}.snap`);
    replaceFileDurablySync(path, Buffer.concat([header, body]));
    const log = openSync(join(this.dir, `windows-${next}.log`), constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND, 0o600);
    try {
      this.fence();
    } catch (err) {
      closeSync(log);
      throw err;
    }
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = log;
    this.journalBytes = 0;
    this.generation = next;
    for (const g of generations(this.dir)) {
      if (g.n >= next - 1) continue;
      rmSync(join(this.dir, `windows-${g.n}.snap`), { force: true });
      rmSync(join(this.dir, `windows-${g.n}.log`), { force: true });
    }
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
