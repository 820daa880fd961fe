import { lstatSync, readdirSync, readFileSync, rmSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { FieldStreamError } from '../../../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../../../shared/limits.ts';
import type { Logger } from '../../../../shared/logger.ts';
import type { Definitions } from './definitions.ts';
import { SEQ_DIGESTS_BYTES, SeqDigests } from './duplicates.ts';
import type { Previous } from './previous.ts';
import { key, type NodeSession } from './host.ts';
import { FileBytes, headOf, openBirths } from './store-births.ts';
import { JournalLineSchema, rebuild, type RecordSession } from './store-format.ts';

/**
 * Reading the session store (store.ts) back at start, within what the host may hold: its edge nodes
 * (LIMITS.sparkplugMaxEdgeNodes) and its definitions' bytes (LIMITS.sparkplugDefinitionsMaxBytes,
 * estimated: Definitions.bytes). The store on disk may hold more than that: an edge node's births
 * file keeps the previous sessions a newer birth dropped from memory until that edge node is saved
 * again. So the files are read newest first (their edge node's last session's end, as the journal
 * has it or the file's first line where newer, then the file's mtime) and one file at a time: its text released once parsed, each birth's
 * metrics read (zod, store-births.ts) and built one at a time, its definitions counted as they are built against
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
    // ended. Awaiting it still (previous.ts Previous.awaitsDeath), the edge node's next NBIRTH, or that
    // NDEATH, records its devices' deaths; restored as over, nothing ever did, and a device not born
    // again stayed online downstream.
    // An NBIRTH refused after it: that birth's NDEATH is its death too (previous.ts Previous.refusedBdSeq).
    // And the time of that birth, whose session no birth published before it takes the place of (Previous.refusedAt).
    const refused = r.awaitsDeath && r.refusedBdSeq !== undefined ? { refusedBdSeq: r.refusedBdSeq } : {};
    const refusedAt = r.refusedAt !== undefined ? { refusedAt: r.refusedAt } : {};
    entries.push(r.endedAt === null || r.awaitsDeath ? { s, at, awaitsDeath: true, ...refused, ...refusedAt } : { s, at, ...refusedAt });
  }
  if (entries.length === 0) return undefined;
  return { restored: { k, group: b.group, edge: b.edge, file: c.file, entries, ids, v1: b.format === 1 }, bytes };
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

/** Removes what stands at `file` in the store's folder, whatever it is (a folder too; a link, not what it points to). */
function removeEntry(file: string): void {
  rmSync(file, { force: true, recursive: true });
}
