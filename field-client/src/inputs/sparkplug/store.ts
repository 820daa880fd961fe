import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { makeDirDurablySync, replaceFileDurably, replaceFileDurablySync, syncDir, syncDirSync } from '../../../../shared/durable-fs.ts';
import { FieldStreamError, isFieldStreamError } from '../../../../shared/errors.ts';
import { LIMITS } from '../../../../shared/limits.ts';
import type { Logger } from '../../../../shared/logger.ts';
import type { Definitions, MetricDef } from './definitions.ts';
import type { Previous } from './previous.ts';
import { type NodeSession, type SparkplugHost } from './host.ts';
import type { Used } from './host-types.ts';
import type { RecordSession } from './store-format.ts';
import { BIRTHS, JOURNAL, readBack } from './store-read.ts';
import { birthsPieces, chunked, namer, signatureOf, type Namer } from './store-write.ts';

/**
 * The Sparkplug sessions of the local MQTT input, on disk, so that what an edge node sends again
 * after the field client restarted (a SIGKILL too) is read in the session it was sent in (resend.ts).
 * mqtt.js sends every QoS 1 publish it got no PUBACK for again on its next connection, before its new
 * NBIRTH; Eclipse Paho after it, flagged DUP. With the sessions held in memory only, a restart forgot
 * them: every such message was refused as not born and acknowledged, and one the field client had
 * taken but not yet written to its queue when it was killed was lost, the edge node believing it
 * delivered. Loaded at start as previous sessions born on no connection (held.ts restore); one whose
 * death was not recorded (current at the restart, or ended by a refused NBIRTH) still awaits it
 * (previous.ts Previous.awaitsDeath): the local MQTT input records it at start (session.ts willsLost),
 * its will having ended with its broker, else the edge node's next NBIRTH, or that NDEATH, does.
 *
 * What is saved covers only what the durable queue holds: a batch's sessions are saved once the queue
 * has written its data (appends.ts), as they were after its last message, never later ones (the host
 * runs ahead of the queue by the batch on its way). Saved before the queue write, a SIGKILL between
 * the two made the resend of a message not written look read already: a duplicate, acknowledged and
 * not stored. A message is acknowledged only once both are on disk, so a seq acknowledged is never
 * missing from what is loaded (a resend of the next one would be a gap).
 *
 * Two kinds of files, under FIELD_DATA_DIR/sparkplug-sessions/:
 * - one births file per edge node (`<sha256 of its key>.births.json`, a line a birth: birthsPieces):
 *   each session's NBIRTH and DBIRTH definitions (names, aliases, data types, and each metric's field name, any collision
 *   suffix included: names.ts) with its seq and digests then. Definitions reach 64 MiB
 *   (LIMITS.sparkplugDefinitionsMaxBytes), so it is written only when a birth or death changes them
 *   (replaced whole, fsynced: durable-fs.ts), before the journal line of that save; or when another
 *   metric's birth or death changes their field names (markRenamed), before the next batch is
 *   written to the queue (prepare, and saved with that batch). A metric's field is the one its
 *   values in the batch being written went to (appends.ts Batch.used), with the field of now from
 *   the message after the last of them on when a rename came since (namer): the queue may hold
 *   that batch's items unsaved, and a resend read after a SIGKILL must go where the queue has it.
 * - `sessions.journal`: one JSON line per edge node whose seq, stale flag or digests a batch changed,
 *   all of one batch appended with one fdatasync; the last line of an edge node wins. Rewritten with
 *   one line per edge node past LIMITS.sparkplugStoreJournalMaxBytes (or twice its compacted size).
 *
 * Read back at start (store-read.ts) with zod and every bound of what is held in memory (edge nodes,
 * devices, definitions bytes, TIMINGS.sparkplugResendWindowMs after a session ended, the current ones
 * ending at the restart), the newest first, the oldest dropped past them (SPARKPLUG_STORE_DROPPED); a
 * damaged file is dropped and logged (SPARKPLUG_STORE_INVALID).
 */
export const STORE_DIR = 'sparkplug-sessions';

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
  /** when its devices were recorded dead (NodeSession.diedAt) */
  diedAt: number | undefined;
  /** ended with its death still to come (previous.ts Previous.awaitsDeath) */
  awaitsDeath: boolean;
  /** the bdSeq of the latest NBIRTH refused since, whose NDEATH is that death too (previous.ts Previous.refusedBdSeq) */
  refusedBdSeq: number | undefined;
  /** that NBIRTH's payload timestamp: no birth published before it is current (previous.ts Previous.refusedAt) */
  refusedAt: number | undefined;
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
  /**
   * The sessions the births file holds (their digests left out), when known for sure (a save failed
   * since: undefined): what prepare writes again under the field names of now.
   */
  saved?: SessionSnap[] | undefined;
}

const NO_DIGESTS = new Uint8Array(0);
/** What Known.saved keeps of a session as saved: its digests are in the record. */
const savedOf = (x: SessionSnap): SessionSnap => ({ ...x, digests: NO_DIGESTS });

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
  /**
   * edge nodes whose metrics' field names may have changed (a collision): their births written again;
   * each with the count of renames when it was last marked, so that a rename during a write keeps it
   */
  private readonly renamed = new Map<string, number>();
  private renames = 0;

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

  /**
   * Reads what was saved into `host` (as previous sessions, see the class), once, before any message:
   * within what it may hold, the newest kept (store-read.ts). Never throws for what the files hold:
   * a damaged file is logged and removed.
   */
  load(host: SparkplugHost, now: number): void {
    makeDirDurablySync(this.dir, 0o700);
    const { found, gen } = readBack({
      dir: this.dir,
      log: this.log,
      now,
      fileOf: (k) => this.fileOf(k),
      room: { bytes: LIMITS.sparkplugDefinitionsMaxBytes - host.definitionsBytes, edgeNodes: LIMITS.sparkplugMaxEdgeNodes - host.edgeNodesHeldAtMost },
    });
    this.gen = Math.max(this.gen, gen);
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
      for (const [s, id] of f.ids) {
        this.ids.set(s, id);
        this.nextId = Math.max(this.nextId, id + 1);
      }
      // Ended now, as saved from now on: another restart counts their window from this one. Their
      // births as the next save finds them (the host's order), so that it does not write them again.
      const previous = host.sessionsOf(f.k).previous;
      const { record, line } = this.lineOf(f.group, f.edge, previous.map((p) => this.snapOf(p.s, p.at, p)));
      lines.push(line);
      // A file of the format written before (v1): none known, so that its next save writes it
      // again (v2), even one that changes only its record.
      const births = f.v1 ? [] : previous.flatMap((p) => signatureOf(this.idOf(p.s), p.s.defs, [...p.s.devices]));
      const saved = f.v1 ? undefined : previous.map((p) => savedOf(this.snapOf(p.s, p.at, p)));
      this.known.set(f.k, { group: f.group, edge: f.edge, births, record, saved });
    }
    syncDirSync(this.dir);
    // Compacted: one line per edge node restored, nothing damaged read again.
    replaceFileDurablySync(this.journalPath, lines.map((l) => `${l}\n`));
    this.journalBytes = this.compactedBytes = lines.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
    if (found.length > 0) this.log.info({ edgeNodes: this.known.size }, 'Sparkplug sessions saved before the restart restored: what their edge nodes send again is read in them');
  }

  /** Edge node `k` as the host holds it now (see appends.ts: taken as a batch's queue write starts). */
  snapshot(host: SparkplugHost, k: string): NodeSnap {
    const [group, edge] = k.split('\u0000') as [string, string];
    const { current, previous } = host.sessionsOf(k);
    const sessions = previous.map((p) => this.snapOf(p.s, p.at, p));
    if (current) sessions.push(this.snapOf(current, undefined));
    return { group, edge, sessions };
  }

  /** `entry`: a previous session's (previous.ts Previous), undefined for the current one. */
  private snapOf(s: NodeSession, endedAt: number | undefined, entry?: Previous): SessionSnap {
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
      diedAt: s.diedAt,
      awaitsDeath: entry?.awaitsDeath === true,
      refusedBdSeq: entry?.awaitsDeath ? entry.refusedBdSeq : undefined,
      refusedAt: entry?.refusedAt,
    };
  }

  /**
   * The field names of edge node `k`'s metrics may have changed (another metric's birth or death,
   * taken or undone, on either Sparkplug input: names.ts FieldNames.watch): its births written again
   * before the next batch is written to the queue (prepare) and saved with that batch (marked).
   */
  markRenamed(k: string): void {
    // Only edge nodes saved already: one not yet saved is written whole at its first save, and the
    // other Sparkplug input's edge nodes (the names are shared) are never saved here.
    if (this.known.has(k)) this.renamed.set(k, ++this.renames);
  }

  /**
   * `k`'s births written as `n` named them. Some name not the one of now: marked renamed (an edge
   * node saved for the first time too), so that the next batch writes them again under the names of
   * now before data under those is written. All of now, and no rename during the write: no longer marked.
   */
  private written(k: string, n: Namer): void {
    if (n.stale) this.renamed.set(k, ++this.renames);
    else if (this.renamed.get(k) === n.mark) this.renamed.delete(k);
  }

  /**
   * The edge nodes marked renamed (markRenamed) whose births are not written again yet: taken into
   * each batch's snapshots (appends.ts) with the edge nodes of its messages, so that their births are
   * saved with it whatever prepare could not write (a save failed since theirs).
   */
  marked(): Iterable<string> {
    return this.renamed.keys();
  }

  /**
   * Before a batch's queue write (appends.ts): the births file of each edge node marked renamed
   * written again as it was saved last (Known.saved, its record), with the field names of now, so
   * that the journal line of its next save still wins. Written only at that edge node's own next
   * save, after its next message was written to the queue under the new names, a SIGKILL between
   * the two left the births file naming the field before the rename: that message's resend after the
   * restart went to the old field, another metric's. Rejects as save does.
   */
  async prepare(host: SparkplugHost, used?: ReadonlyMap<MetricDef, Used>): Promise<void> {
    try {
      for (const k of [...this.renamed.keys()]) {
        const known = this.known.get(k);
        if (!known?.saved || known.saved.length === 0) continue;
        const snap: NodeSnap = { group: known.group, edge: known.edge, sessions: known.saved };
        const record = JSON.parse(known.record) as RecordSession[];
        const n = namer((d) => host.fieldOf(d), used, this.renamed.get(k));
        await replaceFileDurably(this.fileOf(k), chunked(birthsPieces(snap, record, ++this.gen, n.nameOf, (s) => this.idOf(s))), `${this.fileOf(k)}.tmp-${process.pid}`);
        this.written(k, n);
      }
    } catch (err) {
      for (const kn of this.known.values()) (kn.births = []), (kn.saved = undefined);
      throw new FieldStreamError('SPARKPLUG_STORE_FAILED', `Sparkplug sessions not saved in ${this.dir}: ${(err as Error).message}`);
    }
  }

  private lineOf(group: string, edge: string, sessions: SessionSnap[]): { record: string; line: string; sessions: RecordSession[] } {
    const rs: RecordSession[] = sessions.map((x) => ({
      id: this.idOf(x.s),
      seq: x.seq,
      stale: x.stale,
      digests: Buffer.from(x.digests).toString('base64'),
      endedAt: x.endedAt ?? null,
      ...(x.diedAt !== undefined ? { diedAt: x.diedAt } : {}),
      ...(x.awaitsDeath ? { awaitsDeath: true as const } : {}),
      ...(x.awaitsDeath && x.refusedBdSeq !== undefined ? { refusedBdSeq: x.refusedBdSeq } : {}),
      ...(x.refusedAt !== undefined ? { refusedAt: x.refusedAt } : {}),
    }));
    const record = JSON.stringify(rs);
    return { record, sessions: rs, line: JSON.stringify({ gen: ++this.gen, group, edge, sessions: rs }) };
  }

  /**
   * Saves the edge nodes of one batch as `snaps` found them (its queue write done): the births files
   * whose definitions changed, then one journal line each whose record changed, one fdatasync for
   * all. Edge nodes the host no longer holds are removed. Rejects (SPARKPLUG_STORE_FAILED) when the
   * disk refuses: the batch is then not acknowledged (appends.ts).
   */
  async save(snaps: ReadonlyMap<string, NodeSnap>, host: SparkplugHost, used?: ReadonlyMap<MetricDef, Used>): Promise<void> {
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
          const n = namer((d) => host.fieldOf(d), used, this.renamed.get(k));
          await replaceFileDurably(this.fileOf(k), chunked(birthsPieces(snap, sessions, this.gen, n.nameOf, (s) => this.idOf(s))), `${this.fileOf(k)}.tmp-${process.pid}`);
          this.written(k, n);
        }
        lines.push(line);
        this.known.set(k, { group: snap.group, edge: snap.edge, births, record, saved: birthsChanged ? snap.sessions.map(savedOf) : known.saved });
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
        this.renamed.delete(k);
        await rm(this.fileOf(k), { force: true });
      }
      if (gone.length > 0) await syncDir(this.dir);
      if (this.journalBytes > Math.max(LIMITS.sparkplugStoreJournalMaxBytes, 2 * this.compactedBytes)) await this.compact();
    } catch (err) {
      // What is on disk is no longer known for sure (a births file written, its journal line not):
      // each edge node's births, and with them its record, are written again at its next save. Its
      // record is kept: a compaction before that save writes it (the journal then holds no other
      // line of that edge node), and the batch it is from is in the queue already (appends.ts).
      for (const kn of this.known.values()) (kn.births = []), (kn.saved = undefined);
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
