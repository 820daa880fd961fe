import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readFileSync, readSync, rmSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { FieldStreamError } from '../../../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../../../shared/limits.ts';
import type { Logger } from '../../../../shared/logger.ts';
import { MIN_METRIC_BYTES, type Definitions } from './definitions.ts';
import { SEQ_DIGESTS_BYTES, SeqDigests } from './duplicates.ts';
import type { Previous } from './held.ts';
import { key, type NodeSession } from './host.ts';
import { BirthsFileSchema, BirthsHeadSchema, JournalLineSchema, MetricEntrySchema, MetricsShapeSchema, rebuild, type BirthsHead, type MetricEntry, type RecordSession } from './store-format.ts';

/**
 * Reading the session store (store.ts) back at start, within what the host may hold: its edge nodes
 * (LIMITS.sparkplugMaxEdgeNodes) and its definitions' bytes (LIMITS.sparkplugDefinitionsMaxBytes,
 * estimated: Definitions.bytes). The store on disk may hold more than that: an edge node's births
 * file keeps the previous sessions a newer birth dropped from memory until that edge node is saved
 * again. So the files are read newest first (their edge node's last session's end, as the journal
 * has it or the file's first line where newer, then the file's mtime) and one file at a time: its text released once parsed, each birth's
 * metrics read (zod) and built one at a time, its definitions counted as they are built against
 * what is left of the room, the file given up as soon as they pass it. What does not fit, the oldest,
 * is dropped and logged (SPARKPLUG_STORE_DROPPED). Before, every file was read and built first, up to
 * twice the bound, and only then offered to the host in the order of their ends, oldest first: at the
 * bound the start peaked at several times it (docs/field-client.md), and the newest were refused.
 */
export const JOURNAL = 'sessions.journal';
export const BIRTHS = '.births.json';

/** An edge node read back: its sessions, to be restored as previous ones (held.ts restore). */
export interface Restored {
  k: string;
  group: string;
  edge: string;
  file: string;
  /** in the order held.ts keeps them (oldest born first) */
  entries: Previous[];
  /** each session's id in the store */
  ids: Map<NodeSession, number>;
  /** its file is in the format written before (v1): written again (v2) at its edge node's next save */
  v1: boolean;
}

interface Journaled {
  gen: number;
  group: string;
  edge: string;
  sessions: RecordSession[];
}

/** A births file listed, not yet read. */
interface Candidate {
  file: string;
  mtime: number;
  /**
   * when its edge node's last session ended, as the record readBirths reads it with says (the
   * journal's line, or the file's own when newer); current ones: at the restart
   */
  last: number;
  /** its edge node (group/edge) as a record names it, for the log */
  name: string | undefined;
  /** its record, known exactly (a v2 head read), has no session within the resend window: nothing to restore */
  expired: boolean;
}

/** The room left is too small for what the file holds: it is dropped, not damaged. */
class NoRoom extends Error {}

export interface ReadOptions {
  dir: string;
  log: Logger;
  now: number;
  /** the births file of edge node `k` */
  fileOf: (k: string) => string;
  /** what the host may still take: bytes of definitions (estimated), edge nodes */
  room: { bytes: number; edgeNodes: number };
}

function invalid(log: Logger, what: string, message: string): void {
  const err = new FieldStreamError('SPARKPLUG_STORE_INVALID', `${what}: ${message.slice(0, 500)}; dropped`);
  log.error({ code: err.code, file: what }, err.message);
}

/** The store read back (see the module); never throws for what the files hold. */
export function readBack(o: ReadOptions): { found: Restored[]; gen: number } {
  let gen = 0;
  const records = readJournal(o, (g) => (gen = Math.max(gen, g)));
  const byFile = new Map<string, Journaled>();
  for (const [k, r] of records) byFile.set(o.fileOf(k), r);
  const listed: Candidate[] = [];
  for (const name of readdirSync(o.dir)) {
    const file = join(o.dir, name);
    // A births file or journal aside, left by a writer killed before its rename (another pid's,
    // so never written over by this one): never read.
    if (name.includes(`${BIRTHS}.tmp-`) || name.startsWith(`${JOURNAL}.tmp-`)) {
      removeEntry(file);
      continue;
    }
    if (!name.endsWith(BIRTHS)) continue;
    try {
      const st = regularFile(file);
      if (st === undefined) continue; // gone since it was listed
      // What the definitions held may take in memory bounds what their files may take on disk.
      if (st.size > LIMITS.sparkplugDefinitionsMaxBytes) throw new Error(`${st.size} bytes, past what the definitions held may take`);
      const journal = byFile.get(file);
      // The file's own record where it is newer than its journal line (a save killed between the
      // file's rename and its line's append: a birth the journal does not know yet), as readBirths
      // reads it: ordered by the journal alone, such a file's current session was taken for one that
      // ended long ago and dropped first.
      const head = headOf(file, o.fileOf);
      const record = head && (!journal || head.gen > journal.gen) ? head.record : journal?.sessions;
      // No record (the journal dropped, or a first save killed before its line, and a v1 file): its
      // births were written at a birth, so taken for current at the restart, ordered by the file's time.
      const last = record ? Math.max(-Infinity, ...record.map((r) => r.endedAt ?? o.now)) : o.now;
      const name = journal ? `${journal.group}/${journal.edge}` : head ? `${head.group}/${head.edge}` : undefined;
      // Every session ended past the window (or the edge node removed: a save killed before its
      // file's removal): removed unread, as readBirths would, rather than named as dropped for room.
      const expired = head !== undefined && o.now - last >= TIMINGS.sparkplugResendWindowMs;
      listed.push({ file, mtime: st.mtimeMs, last, name, expired });
    } catch (err) {
      invalid(o.log, file, (err as Error).message);
      removeEntry(file);
    }
  }
  listed.sort((x, y) => y.last - x.last || y.mtime - x.mtime || (x.file < y.file ? -1 : 1));
  const found: Restored[] = [];
  const dropped: Candidate[] = [];
  let room = o.room.bytes;
  let nodes = o.room.edgeNodes;
  const bytes = new FileBytes();
  for (const c of listed) {
    try {
      if (c.expired) {
        rmSync(c.file, { force: true });
        continue;
      }
      // Nothing fits any more (a session takes SEQ_DIGESTS_BYTES at least): not read.
      if (nodes <= 0 || room < SEQ_DIGESTS_BYTES) throw new NoRoom();
      const r = readBirths(bytes.read(c.file), c, records, o, room, (g) => (gen = Math.max(gen, g)));
      if (r === undefined) {
        rmSync(c.file, { force: true });
        continue;
      }
      room -= r.bytes;
      nodes--;
      found.push(r.restored);
    } catch (err) {
      if (err instanceof NoRoom) dropped.push(c);
      else invalid(o.log, c.file, (err as Error).message);
      removeEntry(c.file);
    }
  }
  if (dropped.length > 0) {
    const err = new FieldStreamError('SPARKPLUG_STORE_DROPPED', `${dropped.length} saved Sparkplug edge nodes not restored: past what is held (${o.room.edgeNodes} edge nodes, ${o.room.bytes} bytes of definitions); the newest kept`);
    const names = dropped.slice(0, 20).map((c) => c.name ?? c.file);
    o.log.warn({ code: err.code, dropped: dropped.length, edgeNodes: names, newestDroppedEndedAt: dropped[0]?.last }, err.message);
  }
  // In the order their edge nodes' last sessions ended (held.ts expirePrevious relies on it).
  found.sort((x, y) => Math.max(...x.entries.map((e) => e.at)) - Math.max(...y.entries.map((e) => e.at)));
  return { found, gen };
}

/**
 * One births file: its sessions still in the resend window, the ones held.ts restore keeps (the
 * LIMITS.sparkplugPreviousSessionsPerNode born last), built birth by birth; undefined when none is
 * left. Every birth's metrics are read (zod), those not kept too: a damaged file is dropped whole.
 * Throws NoRoom when its definitions pass `room`.
 */
function readBirths(buf: Buffer, c: Candidate, records: Map<string, Journaled>, o: ReadOptions, room: number, seen: (gen: number) => void): { restored: Restored; bytes: number } | undefined {
  const b = openBirths(buf);
  const k = key(b.group, b.edge);
  if (o.fileOf(k) !== c.file) throw new Error(`holds the edge node ${b.group}/${b.edge}, another file's`);
  seen(b.gen);
  const journal = records.get(k);
  const record = journal && journal.gen >= b.gen ? journal.sessions : b.record;
  const kept: Array<{ r: RecordSession; saved: (typeof b.sessions)[number]; at: number }> = [];
  for (const r of record) {
    const saved = b.sessions.find((x) => x.id === r.id);
    const at = r.endedAt ?? o.now; // the current one ended with the field client
    if (saved && o.now - at < TIMINGS.sparkplugResendWindowMs) kept.push({ r, saved, at });
  }
  // As held.ts restore keeps them: oldest born first (unknown births last), the last ones.
  kept.sort((x, y) => (x.saved.bornAt ?? Infinity) - (y.saved.bornAt ?? Infinity));
  const keep = new Set(kept.slice(-LIMITS.sparkplugPreviousSessionsPerNode).map((x) => x.saved));
  // Bounded as they are built, one birth at a time: the bytes of a file bound its entries, not what
  // they take built (a 60 MiB file of short names made 1.1 GB of definitions).
  let bytes = 0;
  const counted = (d: Definitions): Definitions => {
    bytes += d.bytes;
    // More than the host ever holds: no file the store wrote (damage), not one for which room ran out.
    if (bytes > LIMITS.sparkplugDefinitionsMaxBytes) throw new Error(`definitions past what those held may take (${LIMITS.sparkplugDefinitionsMaxBytes} bytes)`);
    if (bytes > room) throw new NoRoom();
    return d;
  };
  const built = new Map<unknown, { defs: Definitions; devices: Map<string, Definitions> }>();
  b.sessions.forEach((saved) => {
    const build = keep.has(saved);
    if (build) bytes += SEQ_DIGESTS_BYTES;
    // Each birth read, built and released before the next is read.
    const node = b.next();
    const defs = build ? counted(rebuild(node, { group: b.group, edge: b.edge, device: undefined })) : undefined;
    const devices = new Map<string, Definitions>();
    for (const device of saved.devices) {
      const metrics = b.next();
      if (build) devices.set(device, counted(rebuild(metrics, { group: b.group, edge: b.edge, device })));
    }
    if (build && defs) built.set(saved, { defs, devices });
  });
  b.end();
  const entries: Previous[] = [];
  const ids = new Map<NodeSession, number>();
  for (const { r, saved, at } of kept) {
    const got = built.get(saved);
    if (!got) continue;
    built.delete(saved); // a session listed twice in the record is taken once
    const s: NodeSession = {
      bdSeq: saved.bdSeq,
      seq: r.seq,
      defs: got.defs,
      devices: got.devices,
      stale: r.stale,
      held: new Map(),
      heldSince: undefined,
      bornAt: saved.bornAt ?? undefined,
      digests: SeqDigests.fromBytes(Buffer.from(r.digests, 'base64')),
      birthDigest: saved.birthDigest ?? undefined,
      // When its devices were recorded dead: a device a DBIRTH sent again bears in it dies then too
      // (resend.ts endOf). Not saved, the birth of the session after it was taken, later than an NDEATH.
      diedAt: r.diedAt,
    };
    ids.set(s, saved.id);
    // Its death not recorded yet: the session current at the restart (the local MQTT input's broker
    // died with the process, the edge node's will, its NDEATH, with it), or one a refused NBIRTH
    // ended. Awaiting it still (held.ts Previous.awaitsDeath), the edge node's next NBIRTH, or that
    // NDEATH, records its devices' deaths; restored as over, nothing ever did, and a device not born
    // again stayed online downstream.
    entries.push(r.endedAt === null || r.awaitsDeath ? { s, at, awaitsDeath: true } : { s, at });
  }
  if (entries.length === 0) return undefined;
  return { restored: { k, group: b.group, edge: b.edge, file: c.file, entries, ids, v1: b.format === 1 }, bytes };
}

/**
 * The bytes of the files read, one at a time, in one buffer (the largest file's so far): a Buffer of
 * each is garbage once read, its memory returned only when V8 next collects its old generation (14 MiB
 * of them were held at the end of a read-back at the bound).
 */
class FileBytes {
  private buf = Buffer.alloc(0);

  /** The bytes of `file`, a regular file (no link followed, no FIFO waited on); valid until the next read. */
  read(file: string): Buffer {
    const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new Error('not a regular file');
      if (st.size > LIMITS.sparkplugDefinitionsMaxBytes) throw new Error(`${st.size} bytes, past what the definitions held may take`);
      if (st.size > this.buf.length) this.buf = Buffer.allocUnsafe(st.size);
      let n = 0;
      for (let r = 1; n < st.size && r > 0; n += r) r = readSync(fd, this.buf, n, st.size - n, n);
      return this.buf.subarray(0, n);
    } finally {
      closeSync(fd);
    }
  }
}

/** A births file opened: what its first line holds, and its births, read one at a time in file order. */
interface Births extends Omit<BirthsHead, 'v'> {
  format: 1 | 2;
  /** the next birth's metrics (zod): each session's node, then its devices */
  next(): MetricEntry[];
  /** throws if anything is left after the last birth */
  end(): void;
}

/**
 * Opens a births file: v2 (store.ts birthsPieces) a line at a time, only the line of the birth read
 * held in the heap beside the file's bytes; v1, written before it, parsed whole (JSON.parse) as
 * before, its births then read one at a time, each released once read.
 */
function openBirths(buf: Buffer): Births {
  let at = buf.indexOf(0x0a);
  let head: unknown;
  try {
    head = JSON.parse(buf.toString('utf8', 0, at < 0 ? buf.length : at));
  } catch {
    head = undefined; // a v1 document over several lines, or damage: read whole below
  }
  if ((head as { v?: unknown } | undefined)?.v === 2) {
    const h = BirthsHeadSchema.safeParse(head);
    if (!h.success) throw new Error(`not a births file: ${issueOf(h.error.issues[0])}`);
    let births = 0;
    let metrics = 0;
    return {
      ...h.data,
      format: 2,
      next() {
        if (at < 0 || at + 1 >= buf.length) throw new Error(`not a births file: ${births} births, fewer than its sessions declare`);
        const from = at + 1;
        at = buf.indexOf(0x0a, from);
        const line: unknown = JSON.parse(buf.toString('utf8', from, at < 0 ? buf.length : at));
        const out = metricsOf(line, `birth ${births++}`);
        metrics += out.length;
        // Counted as read: a file the field client wrote declares no more than the definitions held may take.
        if (metrics * MIN_METRIC_BYTES > LIMITS.sparkplugDefinitionsMaxBytes) throw new Error(`${metrics} metrics, more than the definitions held may have`);
        return out;
      },
      end() {
        if (at >= 0 && at + 1 < buf.length) throw new Error(`not a births file: more than its ${births} births`);
      },
    };
  }
  // The first line taken only when it is the whole file: a v1 document followed by more lines is
  // no file the store wrote, and is refused, as JSON.parse of the whole refused it before v2.
  let raw: unknown = head !== undefined && at < 0 ? head : JSON.parse(buf.toString('utf8'));
  // Its metrics counted before any is read: a birth held takes MIN_METRIC_BYTES a metric at least,
  // so a file the field client wrote declares no more than the definitions held may take.
  const metrics = metricsIn(raw);
  if (metrics * MIN_METRIC_BYTES > LIMITS.sparkplugDefinitionsMaxBytes) throw new Error(`${metrics} metrics, more than the definitions held may have`);
  const parsed = BirthsFileSchema.safeParse(raw);
  raw = undefined;
  if (!parsed.success) throw new Error(`not a births file: ${issueOf(parsed.error.issues[0])}`);
  const { v: _v, sessions, ...rest } = parsed.data;
  const pending: unknown[][] = [];
  for (const s of sessions) pending.push(s.node, ...s.devices.map((d) => d[1]));
  let births = 0;
  return {
    ...rest,
    format: 1,
    sessions: sessions.map((s) => ({ id: s.id, bdSeq: s.bdSeq, bornAt: s.bornAt, birthDigest: s.birthDigest, devices: s.devices.map((d) => d[0]) })),
    next() {
      const m = pending[births];
      pending[births] = []; // released once read
      return metricsOf(m, `birth ${births++}`);
    },
    end() {},
  };
}

/** bytes. A v2 births file's first line is read in pieces from this size, doubling. */
const HEAD_FIRST_BYTES = 16 * 1024;
/**
 * bytes. The longest first line looked for: its record (a few KiB) and each session's device names
 * (LIMITS.sparkplugMaxDevicesPerNode of at most 256 characters, JSON-escaped).
 */
const HEAD_MAX_BYTES = 16 * 1024 * 1024;
const V2_START = Buffer.from('{"v":2,');
const HeadRecordSchema = BirthsHeadSchema.pick({ v: true, gen: true, group: true, edge: true, record: true });

/**
 * The gen, edge node and record of a v2 births file, from its first line only (read in pieces, the
 * rest of the file not read); undefined for anything else (a v1 file, damage: readBirths decides).
 */
function headOf(file: string, fileOf: ReadOptions['fileOf']): Pick<BirthsHead, 'gen' | 'group' | 'edge' | 'record'> | undefined {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return undefined;
    const max = Math.min(st.size, HEAD_MAX_BYTES);
    let buf = Buffer.allocUnsafe(Math.min(max, HEAD_FIRST_BYTES));
    for (let n = 0; n < max; ) {
      if (n === buf.length) {
        const more = Buffer.allocUnsafe(Math.min(max, 2 * buf.length));
        buf.copy(more, 0, 0, n);
        buf = more;
      }
      const r = readSync(fd, buf, n, buf.length - n, n);
      if (r <= 0) return undefined;
      // As birthsPieces starts it (JSON.stringify keeps the keys' order): a v1 file is not read on.
      if (n === 0 && !buf.subarray(0, Math.min(r, V2_START.length)).equals(V2_START.subarray(0, Math.min(r, V2_START.length)))) return undefined;
      const nl = buf.subarray(0, n + r).indexOf(0x0a, n);
      n += r;
      if (nl < 0) continue;
      const h = HeadRecordSchema.safeParse(JSON.parse(buf.toString('utf8', 0, nl)));
      // Another edge node's (damage): readBirths refuses it.
      return h.success && fileOf(key(h.data.group, h.data.edge)) === file ? h.data : undefined;
    }
    return undefined;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/**
 * One birth's metrics, read with zod an entry at a time: the array (MetricsShapeSchema), then each
 * entry (MetricEntrySchema), the entries taken as they are once zod found them valid (a tuple of strings,
 * numbers and nulls, no transform: zod's output would be a copy alike). Parsed as one array, zod's
 * copy of every entry of the birth was held while its definitions were built: 24 MiB more at the
 * peak of a read-back at the bound.
 */
function metricsOf(raw: unknown, where: string): MetricEntry[] {
  const list = MetricsShapeSchema.safeParse(raw);
  if (!list.success) throw new Error(`not a births file: ${where}: ${issueOf(list.error.issues[0])}`);
  for (let i = 0; i < list.data.length; i++) {
    const r = MetricEntrySchema.safeParse(list.data[i]);
    if (!r.success) throw new Error(`not a births file: ${where}: ${i}.${issueOf(r.error.issues[0])}`);
  }
  return list.data as MetricEntry[];
}

function issueOf(issue: { path: PropertyKey[]; message: string } | undefined): string {
  return issue ? `${issue.path.map(String).join('.')} ${issue.message}` : 'invalid';
}

/** The last line of each edge node in the journal, by edge node key; a damaged journal is dropped. */
function readJournal(o: ReadOptions, seen: (gen: number) => void): Map<string, Journaled> {
  const out = new Map<string, Journaled>();
  const path = join(o.dir, JOURNAL);
  let text: string;
  try {
    const st = regularFile(path);
    if (st === undefined) return out;
    // Compacted past LIMITS.sparkplugStoreJournalMaxBytes, or twice its compacted size: the latter
    // bounded by the edge nodes held, each with at most a few KiB of seqs and digests.
    if (st.size > 4 * LIMITS.sparkplugStoreJournalMaxBytes + 2 * LIMITS.sparkplugMaxEdgeNodes * 8 * 1024) throw new Error(`${st.size} bytes, more than it ever holds`);
    text = readFileSync(path, 'utf8');
  } catch (err) {
    // Dropped: load writes the journal again from the births files' records.
    invalid(o.log, path, (err as Error).message);
    removeEntry(path);
    return out;
  }
  let bad = 0;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    try {
      const r = JournalLineSchema.safeParse(JSON.parse(line));
      if (!r.success) throw new Error('not a journal line');
      seen(r.data.gen);
      const k = key(r.data.group, r.data.edge);
      const was = out.get(k);
      if (!was || was.gen <= r.data.gen) out.set(k, r.data);
    } catch {
      bad++; // a line torn by a power cut (its append never acknowledged: the record before it is read), or damage
    }
  }
  if (bad > 0) invalid(o.log, path, `${bad} lines unreadable`);
  return out;
}

/**
 * `file`, a regular file (undefined: there is none), looked at without following a link: throws
 * for anything else in its place (a folder, a link, a FIFO, a device), which readFileSync would
 * fail on, wait on for ever or read without end (a link to /dev/zero).
 */
function regularFile(file: string): Stats | undefined {
  const st = lstatSync(file, { throwIfNoEntry: false });
  if (st === undefined) return undefined;
  if (!st.isFile()) throw new Error('not a regular file');
  return st;
}

/** The metrics a births file as JSON.parse read it declares (its node's and devices' in every session), whatever else it holds. */
function metricsIn(raw: unknown): number {
  const sessions = (raw as { sessions?: unknown } | null)?.sessions;
  if (!Array.isArray(sessions)) return 0;
  let n = 0;
  for (const s of sessions as unknown[]) {
    const { node, devices } = (s ?? {}) as { node?: unknown; devices?: unknown };
    if (Array.isArray(node)) n += node.length;
    if (Array.isArray(devices)) for (const d of devices as unknown[]) if (Array.isArray(d) && Array.isArray(d[1])) n += (d[1] as unknown[]).length;
  }
  return n;
}

/** Removes what stands at `file` in the store's folder, whatever it is (a folder too; a link, not what it points to). */
function removeEntry(file: string): void {
  rmSync(file, { force: true, recursive: true });
}
