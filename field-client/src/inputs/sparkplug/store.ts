import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { replaceFileDurably, replaceFileDurablySync, syncDir, syncDirSync } from '../../../../shared/durable-fs.ts';
import { FieldStreamError, isFieldStreamError } from '../../../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../../../shared/limits.ts';
import type { Logger } from '../../../../shared/logger.ts';
import { MIN_METRIC_BYTES, type Definitions } from './definitions.ts';
import type { Previous } from './held.ts';
import { key, type NodeSession, type SparkplugHost } from './host.ts';
import { BirthsFileSchema, JournalLineSchema, rebuild, type MetricEntry, type RecordSession } from './store-format.ts';
import { SeqDigests } from './duplicates.ts';

/**
 * The Sparkplug sessions of the local MQTT input, on disk, so that what an edge node sends again
 * after the field client restarted (a SIGKILL too) is read in the session it was sent in (resend.ts).
 * mqtt.js sends every QoS 1 publish it got no PUBACK for again on its next connection, before its new
 * NBIRTH; Eclipse Paho after it, flagged DUP. With the sessions held in memory only, a restart forgot
 * them: every such message was refused as not born and acknowledged, and one the field client had
 * taken but not yet written to its queue when it was killed was lost, the edge node believing it
 * delivered. Loaded at start as previous sessions born on no connection (held.ts restore).
 *
 * What is saved covers only what the durable queue holds: a batch's sessions are saved once the queue
 * has written its data (session.ts), as they were after its last message, never later ones (the host
 * runs ahead of the queue by the batch on its way). Saved before the queue write, a SIGKILL between
 * the two made the resend of a message not written look read already: a duplicate, acknowledged and
 * not stored. A message is acknowledged only once both are on disk, so a seq acknowledged is never
 * missing from what is loaded (a resend of the next one would be a gap).
 *
 * Two kinds of files, under FIELD_DATA_DIR/sparkplug-sessions/:
 * - one births file per edge node (`<sha256 of its key>.births.json`): each session's NBIRTH and
 *   DBIRTH definitions (names, aliases, data types, and each metric's field name, any collision
 *   suffix included: names.ts) with its seq and digests then. Definitions reach 64 MiB
 *   (LIMITS.sparkplugDefinitionsMaxBytes), so it is written only when a birth or death changes them
 *   (replaced whole, fsynced: durable-fs.ts), before the journal line of that save.
 * - `sessions.journal`: one JSON line per edge node whose seq, stale flag or digests a batch changed,
 *   all of one batch appended with one fdatasync; the last line of an edge node wins. Rewritten with
 *   one line per edge node past LIMITS.sparkplugStoreJournalMaxBytes (or twice its compacted size).
 *
 * Read back at start with zod and every bound of what is held in memory (edge nodes, devices,
 * definitions bytes, TIMINGS.sparkplugResendWindowMs after a session ended, the current ones ending
 * at the restart); a damaged file is dropped and logged (SPARKPLUG_STORE_INVALID).
 */
export const STORE_DIR = 'sparkplug-sessions';
const JOURNAL = 'sessions.journal';
const BIRTHS = '.births.json';
/** bytes. The pieces a births file is written in: one write each (each awaited). */
const PIECE_BYTES = 64 * 1024;

/** One session as a batch left it (see snapshot). */
interface SessionSnap {
  s: NodeSession;
  bdSeq: number;
  bornAt: number | undefined;
  birthDigest: number | undefined;
  seq: number;
  stale: boolean;
  defs: Definitions;
  devices: Array<[string, Definitions]>;
  digests: Uint8Array;
  /** undefined: the current session */
  endedAt: number | undefined;
}

/** An edge node's sessions as a batch left them: previous ones oldest born first, then the current one. */
export interface NodeSnap {
  group: string;
  edge: string;
  sessions: SessionSnap[];
}

interface Known {
  group: string;
  edge: string;
  /** session ids and their definitions (by identity), as the births file holds them */
  births: unknown[];
  /** the record last appended (sessions' seq, stale flag, digests, end) */
  record: string;
}

export class SessionStore {
  private readonly journalPath: string;
  private journal: FileHandle | undefined;
  private journalBytes = 0;
  /** an append failed, perhaps halfway through a line: the next starts on a line of its own */
  private torn = false;
  /** bytes of the journal when last compacted: it is compacted again past twice that (or the limit) */
  private compactedBytes = 0;
  private gen = 0;
  private nextId = 1;
  private readonly ids = new WeakMap<NodeSession, number>();
  private readonly known = new Map<string, Known>();
  /** edge nodes whose metrics' field names may have changed (a collision): their births written again */
  private readonly renamed = new Set<string>();

  constructor(
    private readonly dir: string,
    private readonly log: Logger,
  ) {
    this.journalPath = join(dir, JOURNAL);
  }

  private fileOf(k: string): string {
    return join(this.dir, `${createHash('sha256').update(k).digest('hex').slice(0, 32)}${BIRTHS}`);
  }

  private idOf(s: NodeSession): number {
    let id = this.ids.get(s);
    if (id === undefined) this.ids.set(s, (id = this.nextId++));
    return id;
  }

  private invalid(what: string, message: string): void {
    const err = new FieldStreamError('SPARKPLUG_STORE_INVALID', `${what}: ${message.slice(0, 500)}; dropped`);
    this.log.error({ code: err.code, file: what }, err.message);
  }

  /**
   * Reads what was saved into `host` (as previous sessions, see the class), once, before any message.
   * Never throws for what the files hold: a damaged file is logged and removed.
   */
  load(host: SparkplugHost, now: number): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const records = this.readJournal();
    const found: Array<{ k: string; group: string; edge: string; entries: Previous[]; births: unknown[]; file: string }> = [];
    let bytesRead = 0;
    /** bytes: the definitions rebuilt so far, estimated (Definitions.bytes) */
    let defBytes = 0;
    for (const name of readdirSync(this.dir)) {
      const file = join(this.dir, name);
      // A births file or journal aside, left by a writer killed before its rename (another pid's,
      // so never written over by this one): never read.
      if (name.includes(`${BIRTHS}.tmp-`) || name.startsWith(`${JOURNAL}.tmp-`)) {
        removeEntry(file);
        continue;
      }
      if (!name.endsWith(BIRTHS)) continue;
      try {
        const size = regularFileSize(file);
        if (size === undefined) continue; // gone since it was listed
        bytesRead += size;
        // What the definitions held may take in memory bounds what their files may take on disk.
        if (size > LIMITS.sparkplugDefinitionsMaxBytes || bytesRead > 2 * LIMITS.sparkplugDefinitionsMaxBytes) throw new Error(`${size} bytes, past what the definitions held may take`);
        const raw: unknown = JSON.parse(readFileSync(file, 'utf8'));
        // Its metrics counted before zod copies them: a birth held takes MIN_METRIC_BYTES a metric at
        // least, so a file the field client wrote holds no more than the definitions held may take.
        const metrics = metricsIn(raw);
        if (metrics * MIN_METRIC_BYTES > LIMITS.sparkplugDefinitionsMaxBytes || defBytes + metrics * MIN_METRIC_BYTES > 2 * LIMITS.sparkplugDefinitionsMaxBytes) {
          throw new Error(`${metrics} metrics, more than the definitions held may have`);
        }
        const parsed = BirthsFileSchema.safeParse(raw);
        if (!parsed.success) throw new Error(`not a births file: ${parsed.error.issues[0]?.path.join('.')} ${parsed.error.issues[0]?.message}`);
        const b = parsed.data;
        const k = key(b.group, b.edge);
        if (this.fileOf(k) !== file) throw new Error(`holds the edge node ${b.group}/${b.edge}, another file's`);
        this.gen = Math.max(this.gen, b.gen);
        const journal = records.get(k);
        const record = journal && journal.gen >= b.gen ? journal.sessions : b.record;
        const entries: Previous[] = [];
        const births: unknown[] = [];
        // Bounded as they are rebuilt, one birth's at a time: the bytes of a file bound its entries,
        // not what they take rebuilt (a 60 MiB file of short names made 1.1 GB of definitions, 1.7 GB
        // held at start, before restorePrevious refused them: two such files took the process down at
        // each start). What the host may hold, and at most twice that over every file, as the bytes.
        let fileDefBytes = 0;
        const counted = (d: Definitions): Definitions => {
          fileDefBytes += d.bytes;
          if (fileDefBytes > LIMITS.sparkplugDefinitionsMaxBytes || defBytes + fileDefBytes > 2 * LIMITS.sparkplugDefinitionsMaxBytes) {
            throw new Error(`definitions past what those held may take (${LIMITS.sparkplugDefinitionsMaxBytes} bytes)`);
          }
          return d;
        };
        for (const r of record) {
          const saved = b.sessions.find((x) => x.id === r.id);
          if (!saved) continue;
          const at = r.endedAt ?? now; // the current one ended with the field client
          if (now - at >= TIMINGS.sparkplugResendWindowMs) continue;
          const defs = counted(rebuild(saved.node, { group: b.group, edge: b.edge, device: undefined }));
          const devices = new Map<string, Definitions>();
          for (const [device, metrics] of saved.devices) devices.set(device, counted(rebuild(metrics, { group: b.group, edge: b.edge, device })));
          const s: NodeSession = {
            bdSeq: saved.bdSeq,
            seq: r.seq,
            defs,
            devices,
            stale: r.stale,
            held: new Map(),
            heldSince: undefined,
            bornAt: saved.bornAt ?? undefined,
            digests: SeqDigests.fromBytes(Buffer.from(r.digests, 'base64')),
            birthDigest: saved.birthDigest ?? undefined,
          };
          this.ids.set(s, saved.id);
          this.nextId = Math.max(this.nextId, saved.id + 1);
          entries.push({ s, at });
          births.push(...signatureOf(saved.id, defs, [...devices]));
        }
        if (entries.length === 0) {
          rmSync(file, { force: true });
          continue;
        }
        defBytes += fileDefBytes;
        found.push({ k, group: b.group, edge: b.edge, entries, births, file });
      } catch (err) {
        this.invalid(file, (err as Error).message);
        removeEntry(file);
      }
    }
    // In the order their edge nodes' last sessions ended (held.ts expirePrevious relies on it).
    found.sort((x, y) => Math.max(...x.entries.map((e) => e.at)) - Math.max(...y.entries.map((e) => e.at)));
    const lines: string[] = [];
    for (const f of found) {
      try {
        host.restorePrevious(f.group, f.edge, f.entries);
      } catch (err) {
        const code = isFieldStreamError(err) ? err.code : 'SPARKPLUG_STORE_INVALID';
        this.log.error({ code, file: f.file }, `saved Sparkplug sessions of ${f.group}/${f.edge} not restored: ${(err as Error).message}`);
        rmSync(f.file, { force: true });
        continue;
      }
      // Ended now, as saved from now on: another restart counts their window from this one.
      const { record, line } = this.lineOf(f.group, f.edge, host.sessionsOf(f.k).previous.map((p) => this.snapOf(p.s, p.at)));
      lines.push(line);
      this.known.set(f.k, { group: f.group, edge: f.edge, births: f.births, record });
    }
    syncDirSync(this.dir);
    // Compacted: one line per edge node restored, nothing damaged read again.
    replaceFileDurablySync(this.journalPath, lines.map((l) => `${l}\n`));
    this.journalBytes = this.compactedBytes = lines.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
    if (found.length > 0) this.log.info({ edgeNodes: this.known.size }, 'Sparkplug sessions saved before the restart restored: what their edge nodes send again is read in them');
  }

  private readJournal(): Map<string, { gen: number; sessions: RecordSession[] }> {
    const out = new Map<string, { gen: number; sessions: RecordSession[] }>();
    let text: string;
    try {
      const size = regularFileSize(this.journalPath);
      if (size === undefined) return out;
      // Compacted past LIMITS.sparkplugStoreJournalMaxBytes, or twice its compacted size: the latter
      // bounded by the edge nodes held, each with at most a few KiB of seqs and digests.
      if (size > 4 * LIMITS.sparkplugStoreJournalMaxBytes + 2 * LIMITS.sparkplugMaxEdgeNodes * 8 * 1024) throw new Error(`${size} bytes, more than it ever holds`);
      text = readFileSync(this.journalPath, 'utf8');
    } catch (err) {
      // Dropped: load writes the journal again from the births files' records.
      this.invalid(this.journalPath, (err as Error).message);
      removeEntry(this.journalPath);
      return out;
    }
    let bad = 0;
    for (const line of text.split('\n')) {
      if (line === '') continue;
      try {
        const r = JournalLineSchema.safeParse(JSON.parse(line));
        if (!r.success) throw new Error('not a journal line');
        this.gen = Math.max(this.gen, r.data.gen);
        const k = key(r.data.group, r.data.edge);
        const was = out.get(k);
        if (!was || was.gen <= r.data.gen) out.set(k, { gen: r.data.gen, sessions: r.data.sessions });
      } catch {
        bad++; // a line torn by a power cut (its append never acknowledged: the record before it is read), or damage
      }
    }
    if (bad > 0) this.invalid(this.journalPath, `${bad} lines unreadable`);
    return out;
  }

  /** Edge node `k` as the host holds it now (see session.ts: taken as a batch's queue write starts). */
  snapshot(host: SparkplugHost, k: string): NodeSnap {
    const [group, edge] = k.split('\u0000') as [string, string];
    const { current, previous } = host.sessionsOf(k);
    const sessions = previous.map((p) => this.snapOf(p.s, p.at));
    if (current) sessions.push(this.snapOf(current, undefined));
    return { group, edge, sessions };
  }

  private snapOf(s: NodeSession, endedAt: number | undefined): SessionSnap {
    return {
      s,
      bdSeq: s.bdSeq,
      bornAt: s.bornAt,
      birthDigest: s.birthDigest,
      seq: s.seq,
      stale: s.stale,
      defs: s.defs,
      devices: [...s.devices],
      digests: s.digests.toBytes(),
      endedAt,
    };
  }

  /** The field names of edge node `k`'s metrics may have changed (a birth shares one with them): saved again. */
  markRenamed(k: string): void {
    // Only edge nodes saved already: one not yet saved is written whole at its first save, and the
    // other Sparkplug input's edge nodes (the names are shared) are never saved here.
    if (this.known.has(k)) this.renamed.add(k);
  }

  private lineOf(group: string, edge: string, sessions: SessionSnap[]): { record: string; line: string; sessions: RecordSession[] } {
    const rs: RecordSession[] = sessions.map((x) => ({
      id: this.idOf(x.s),
      seq: x.seq,
      stale: x.stale,
      digests: Buffer.from(x.digests).toString('base64'),
      endedAt: x.endedAt ?? null,
    }));
    const record = JSON.stringify(rs);
    return { record, sessions: rs, line: JSON.stringify({ gen: ++this.gen, group, edge, sessions: rs }) };
  }

  /**
   * Saves the edge nodes of one batch as `snaps` found them (its queue write done): the births files
   * whose definitions changed, then one journal line each whose record changed, one fdatasync for
   * all. Edge nodes the host no longer holds are removed. Rejects (SPARKPLUG_STORE_FAILED) when the
   * disk refuses: the batch is then not acknowledged (session.ts).
   */
  async save(snaps: ReadonlyMap<string, NodeSnap>, host: SparkplugHost): Promise<void> {
    try {
      const lines: string[] = [];
      const gone: string[] = [];
      for (const [k, snap] of snaps) {
        const known = this.known.get(k);
        if (snap.sessions.length === 0) {
          if (known) gone.push(k);
          continue;
        }
        const births = snap.sessions.flatMap((x) => signatureOf(this.idOf(x.s), x.defs, x.devices));
        const birthsChanged = !known || this.renamed.has(k) || births.length !== known.births.length || births.some((v, i) => v !== known.births[i]);
        const { record, line, sessions } = this.lineOf(snap.group, snap.edge, snap.sessions);
        if (!birthsChanged && known.record === record) continue;
        if (birthsChanged) {
          await replaceFileDurably(this.fileOf(k), chunked(birthsPieces(snap, sessions, this.gen, (d) => host.fieldOf(d), (s) => this.idOf(s))), `${this.fileOf(k)}.tmp-${process.pid}`);
          this.renamed.delete(k);
        }
        lines.push(line);
        this.known.set(k, { group: snap.group, edge: snap.edge, births, record });
      }
      // Edge nodes dropped from memory (their sessions ended past the window, or made room): their
      // files too, so that invented edge node ids do not fill the disk. Looked for only when more are
      // saved than the host can hold.
      if (this.known.size > host.edgeNodesHeldAtMost) for (const k of this.known.keys()) if (!snaps.has(k) && !host.follows(k)) gone.push(k);
      for (const k of gone) {
        const kn = this.known.get(k) as Known;
        lines.push(JSON.stringify({ gen: ++this.gen, group: kn.group, edge: kn.edge, sessions: [] }));
      }
      if (lines.length > 0) await this.append(lines);
      for (const k of gone) {
        this.known.delete(k);
        await rm(this.fileOf(k), { force: true });
      }
      if (gone.length > 0) await syncDir(this.dir);
      if (this.journalBytes > Math.max(LIMITS.sparkplugStoreJournalMaxBytes, 2 * this.compactedBytes)) await this.compact();
    } catch (err) {
      // What is on disk is no longer known for sure (a births file written, its journal line not):
      // each edge node's births, and with them its record, are written again at its next save. Its
      // record is kept: a compaction before that save writes it (the journal then holds no other
      // line of that edge node), and the batch it is from is in the queue already (session.ts).
      for (const kn of this.known.values()) kn.births = [];
      // Opened again at the next append: the journal may be another file by then (its folder restored).
      await this.journal?.close().catch(() => undefined);
      this.journal = undefined;
      throw new FieldStreamError('SPARKPLUG_STORE_FAILED', `Sparkplug sessions not saved in ${this.dir}: ${(err as Error).message}`);
    }
  }

  private async append(lines: string[]): Promise<void> {
    if (!this.journal) {
      this.journal = await open(this.journalPath, 'a', 0o600);
      await syncDir(this.dir);
    }
    const bytes = Buffer.from(`${this.torn ? '\n' : ''}${lines.join('\n')}\n`, 'utf8');
    this.torn = true;
    for (let at = 0; at < bytes.length; ) {
      const { bytesWritten } = await this.journal.write(bytes, at, bytes.length - at);
      if (bytesWritten <= 0) throw new Error(`the disk took none of the bytes of ${this.journalPath}`);
      at += bytesWritten;
    }
    await this.journal.datasync();
    this.torn = false;
    this.journalBytes += bytes.length;
  }

  /** The journal rewritten with the last record of each edge node saved. */
  private async compact(): Promise<void> {
    const lines: string[] = [];
    for (const kn of this.known.values()) lines.push(`${JSON.stringify({ gen: this.gen, group: kn.group, edge: kn.edge, sessions: JSON.parse(kn.record) as unknown })}\n`);
    await this.journal?.close();
    this.journal = undefined;
    await replaceFileDurably(this.journalPath, lines, `${this.journalPath}.tmp-${process.pid}`);
    this.journalBytes = this.compactedBytes = lines.reduce((n, l) => n + Buffer.byteLength(l), 0);
  }

  async close(): Promise<void> {
    await this.journal?.close();
    this.journal = undefined;
  }
}

/**
 * The size of `file`, a regular file (undefined: there is none), read without following a link:
 * throws for anything else in its place (a folder, a link, a FIFO, a device), which readFileSync
 * would fail on, wait on for ever or read without end (a link to /dev/zero).
 */
function regularFileSize(file: string): number | undefined {
  const st = lstatSync(file, { throwIfNoEntry: false });
  if (st === undefined) return undefined;
  if (!st.isFile()) throw new Error('not a regular file');
  return st.size;
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

/** A session's identity and its definitions' (by identity): what its births file holds. */
function signatureOf(id: number, defs: Definitions, devices: ReadonlyArray<[string, Definitions]>): unknown[] {
  const out: unknown[] = [id, defs];
  for (const [name, d] of devices) out.push(name, d);
  return out;
}

function* metricsOf(defs: Definitions, fieldOf: (d: Definitions['byName'] extends Map<string, infer D> ? D : never) => string | undefined): Generator<string> {
  const aliased = new Set<string>();
  let first = true;
  for (const [alias, def] of defs.byAlias) {
    aliased.add(def.name);
    const e: MetricEntry = [def.name, def.datatype, fieldOf(def) ?? null, alias];
    yield `${first ? '' : ','}${JSON.stringify(e)}`;
    first = false;
  }
  for (const def of defs.byName.values()) {
    if (aliased.has(def.name)) continue;
    const e: MetricEntry = [def.name, def.datatype, fieldOf(def) ?? null, null];
    yield `${first ? '' : ','}${JSON.stringify(e)}`;
    first = false;
  }
}

function* birthsPieces(
  snap: NodeSnap,
  record: RecordSession[],
  gen: number,
  fieldOf: Parameters<typeof metricsOf>[1],
  idOf: (s: NodeSession) => number,
): Generator<string> {
  yield `{"v":1,"gen":${gen},"group":${JSON.stringify(snap.group)},"edge":${JSON.stringify(snap.edge)},"record":${JSON.stringify(record)},"sessions":[`;
  for (let i = 0; i < snap.sessions.length; i++) {
    const x = snap.sessions[i] as SessionSnap;
    yield `${i === 0 ? '' : ','}{"id":${idOf(x.s)},"bdSeq":${x.bdSeq},"bornAt":${x.bornAt ?? null},"birthDigest":${x.birthDigest ?? null},"node":[`;
    yield* metricsOf(x.defs, fieldOf);
    yield '],"devices":[';
    for (let j = 0; j < x.devices.length; j++) {
      const [name, defs] = x.devices[j] as [string, Definitions];
      yield `${j === 0 ? '' : ','}[${JSON.stringify(name)},[`;
      yield* metricsOf(defs, fieldOf);
      yield ']]';
    }
    yield ']}';
  }
  yield ']}';
}

/** Small pieces joined into pieces of about PIECE_BYTES: one awaited write each. */
function* chunked(pieces: Iterable<string>): Generator<string> {
  let buf: string[] = [];
  let n = 0;
  for (const p of pieces) {
    buf.push(p);
    n += p.length;
    if (n >= PIECE_BYTES) {
      yield buf.join('');
      buf = [];
      n = 0;
    }
  }
  if (buf.length > 0) yield buf.join('');
}
