import { FieldStreamError } from '../../../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../../../shared/limits.ts';
import { RefusedBirths } from './boundaries.ts';
import type { Definitions } from './definitions.ts';
import { bytesOf, type HostOutcome, type NodeSession } from './host-types.ts';
import { FieldNames } from './names.ts';
import { afterDeath, carriesRefused, plain, type Previous, type RefusedBirth } from './previous.ts';

/**
 * What the Sparkplug host (host.ts) holds in memory beside its state machine, and its bounds: the
 * estimated bytes of every edge node's birth definitions (LIMITS.sparkplugDefinitionsMaxBytes, over
 * every edge node and device), the field names those births declare (names.ts), and each edge node's
 * previous sessions, kept for what it sends again (see resend.ts).
 */
export class HeldDefinitions {
  /** the estimated bytes of each edge node's definitions (its own and its devices'), and their sum: see recount */
  private readonly defBytes = new Map<string, number>();
  private defTotal = 0;
  /** the field names every current birth declares (names.ts; HostOptions.names), and the births this host registered there, by edge node (device, or null) */
  readonly names: FieldNames;
  private readonly named = new Map<string, Map<string | null, Definitions>>();
  /**
   * Each edge node's previous sessions, each for TIMINGS.sparkplugResendWindowMs after it ended: what
   * the edge node sends again after a new NBIRTH (Eclipse Paho's order) belongs to one of them
   * (resend.ts). Per edge node at most LIMITS.sparkplugPreviousSessionsPerNode, oldest born first
   * (their NBIRTH timestamps), so that a publish sent again across several reconnections, after
   * several new NBIRTHs, is still read in the session it was sent in. Edge nodes in the order their
   * last session ended. Their definitions count against LIMITS.sparkplugDefinitionsMaxBytes with the
   * current ones (prevBytes, prevTotal); a current birth that needs the room drops the oldest.
   * Without resends, only the one a refused NBIRTH ended is kept, for its death (Previous.awaitsDeath).
   */
  readonly previous = new Map<string, Previous[]>();
  private readonly prevBytes = new Map<string, number>();
  private prevTotal = 0;
  private readonly maxDefinitionsBytes: number;
  private readonly maxNodeBytes: number;
  private readonly maxPerNode: number;
  /** each edge node's NBIRTHs refused lately, the bounds between its sessions (boundaries.ts) */
  readonly boundaries: RefusedBirths;

  constructor(
    /** the host's current sessions, by edge node key */
    private readonly sessions: ReadonlyMap<string, NodeSession>,
    private readonly o: {
      maxEdgeNodes: number;
      maxDefinitionsBytes?: number | undefined;
      maxDefinitionsBytesPerNode?: number | undefined;
      resends?: boolean | undefined;
      names?: FieldNames | undefined;
    },
  ) {
    this.names = o.names ?? new FieldNames();
    this.maxDefinitionsBytes = o.maxDefinitionsBytes ?? LIMITS.sparkplugDefinitionsMaxBytes;
    this.maxNodeBytes = o.maxDefinitionsBytesPerNode ?? LIMITS.sparkplugDefinitionsMaxBytesPerNode;
    this.maxPerNode = LIMITS.sparkplugPreviousSessionsPerNode;
    this.boundaries = new RefusedBirths(o.maxEdgeNodes);
  }

  /** Bytes of birth definitions held now over every edge node and device (estimated), previous sessions' included. */
  get bytes(): number {
    return this.defTotal + this.prevTotal;
  }

  /** The bytes counted for the current session of `k`. */
  currentBytes(k: string): number {
    return this.defBytes.get(k) ?? 0;
  }

  /** The previous sessions of `k`, oldest born first (none: empty). */
  previousOf(k: string): readonly Previous[] {
    return this.previous.get(k) ?? [];
  }

  /** The previous session of `k` born last, undefined when none is kept. */
  newestPrevious(k: string): Previous | undefined {
    return this.previous.get(k)?.at(-1);
  }

  /** The bytes counted for the previous sessions of `k`. */
  previousBytes(k: string): number {
    return this.prevBytes.get(k) ?? 0;
  }

  /**
   * The bytes of one edge node's definitions counted again, and their sum with them: O(its devices),
   * after a birth or a death only. Counted from what the session holds rather than kept up step by
   * step, so that every way it changes (a birth replacing another, a refusal dropping one, an undo
   * putting an older session back) leaves the sum right.
   */
  recount(k: string, out?: HostOutcome): void {
    const s = this.sessions.get(k);
    const was = this.defBytes.get(k) ?? 0;
    const n = s ? bytesOf(s) : 0;
    if (s) this.defBytes.set(k, n);
    else this.defBytes.delete(k);
    this.defTotal += n - was;
    // The previous session's are counted apart: a current birth may drop them for room (fitPrevious).
    const list = this.previous.get(k);
    const pWas = this.prevBytes.get(k) ?? 0;
    let pn = 0;
    for (const p of list ?? []) pn += bytesOf(p.s);
    if (list) this.prevBytes.set(k, pn);
    else this.prevBytes.delete(k);
    this.prevTotal += pn - pWas;
    // Only current births name fields: a previous session's metrics go to the names they had (names.ts, field).
    this.rename(k, s, out);
  }

  /**
   * The field names of one edge node's births brought in line with what its session holds now: those
   * of a birth no longer in force forgotten, those of a new one taken (names.ts), each birth compared
   * by identity, so O(its devices). The names a new birth shares with other metrics go into `out`,
   * and the edge nodes whose metrics' fields one gone changed (out.renamed).
   */
  private rename(k: string, s: NodeSession | undefined, out: HostOutcome | undefined): void {
    const was = this.named.get(k);
    const now = new Map<string | null, Definitions>();
    if (s) {
      now.set(null, s.defs);
      for (const [device, defs] of s.devices) now.set(device, defs);
    }
    if (was) {
      for (const [unit, defs] of was) {
        if (now.get(unit) === defs) continue;
        const renamed = this.names.remove(defs);
        if (renamed.length > 0 && out) (out.renamed ??= []).push(...renamed);
      }
    }
    for (const [unit, defs] of now) {
      if (was?.get(unit) === defs) continue;
      const shared = this.names.add(defs);
      if (shared.length > 0 && out) (out.collisions ??= []).push(...shared);
    }
    if (now.size > 0) this.named.set(k, now);
    else this.named.delete(k);
  }

  /**
   * A birth whose definitions would take those held past the bound is refused, so that a publisher
   * declaring ever more (or ever longer) metric names cannot grow the client's memory without bound
   * (the count bounds alone allow edge nodes × devices × metrics × 1,024-character names). `freed`:
   * the bytes of the definitions it would replace; `session`: the bytes of its edge node's session
   * once it is in, held to that edge node's share (see share).
   */
  room(what: string, bytes: number, freed: number, session: number): void {
    this.share(what, session);
    const max = this.maxDefinitionsBytes;
    if (this.defTotal - freed + bytes <= max) return;
    throw new FieldStreamError(
      'SPARKPLUG_DEFINITIONS_FULL',
      `${what} refused: its definitions (about ${bytes} bytes) would take those held past ${max} bytes (${this.defTotal} held now)`,
    );
  }


  /**
   * Keeps `s` among the previous sessions of `k`, placed by its NBIRTH timestamp (one without, last),
   * the oldest born dropped past LIMITS.sparkplugPreviousSessionsPerNode; the edge nodes with
   * previous sessions kept within LIMITS.sparkplugMaxEdgeNodes, those whose last one ended first
   * dropped. Counted again by the caller (recount). `awaitsDeath` (Previous): kept for its death
   * where nothing is sent again too, alone; a session kept already is kept once, flagged so.
   */
  keepPrevious(k: string, s: NodeSession, now: number, awaitsDeath = false): void {
    if (!this.o.resends && !awaitsDeath) {
      this.previous.delete(k);
      return;
    }
    const list = this.o.resends ? (this.previous.get(k) ?? []).filter((e) => e.s !== s) : [];
    // Last in the map: the edge node whose session ended last (expirePrevious relies on that order).
    this.previous.delete(k);
    for (const [other] of this.previous) {
      if (this.previous.size < this.o.maxEdgeNodes) break;
      this.previous.delete(other);
      this.recount(other);
    }
    let i = list.length;
    if (s.bornAt !== undefined) while (i > 0 && (list[i - 1]!.s.bornAt ?? -Infinity) > s.bornAt) i--;
    list.splice(i, 0, awaitsDeath ? { s, at: now, awaitsDeath: true } : { s, at: now });
    while (list.length > this.maxPerNode) list.shift();
    this.previous.set(k, list);
  }

  /**
   * An NBIRTH of `k` refused (lifecycle.ts nodeBirthRefused), `r` what was read of it, kept on the
   * session awaiting its death, else (its NDEATH taken before) on the previous one born last. There,
   * with its bdSeq (Previous.refusedBdSeq, awaitsDeath only), the session awaiting its death dies by
   * that bdSeq's NDEATH too, no longer by an earlier refused birth's; and the connection it came on
   * (Previous.refusedOn; one of a birth flagged DUP, or unknown, leaves the one before) refuses
   * the plain data that follows it there, and its timestamp (Previous.refusedAt, the latest known)
   * keeps what is sent again published before it out of its place (resend.ts). Its entries replaced, not changed (undo.ts
   * puts back the entries a message found); their bytes the same, nothing to count again.
   */
  refusedBirth(k: string, r: RefusedBirth): void {
    const list = this.previous.get(k);
    // None kept: its time and connection are kept among the refused births all the same (boundaries.ts).
    if (!list || list.length === 0) return;
    const awaiting = list.findIndex((e) => e.awaitsDeath);
    const target = awaiting >= 0 ? awaiting : list.length - 1;
    const was = this.refusedOf(k);
    const e = list[target]!;
    // Its bdSeq unread (no bdSeq metric, or a payload not decodable): on the connection of the birth
    // refused before it, a rebirth, which keeps its connection's bdSeq (§5.12), so that one's will is
    // still the death; where either connection is unknown (the plant's broker, a birth sent again) the
    // same is assumed. On another connection it is of a new bdSeq, the one kept an older connection's
    // whose will is stale (§5.8): left, it recorded the death of the session awaiting it while the edge
    // node was online on the new connection, and that connection's own will was then ignored.
    const sameConnection = r.on === undefined || was?.refusedOn === undefined || r.on === was.refusedOn;
    const bdSeq = !e.awaitsDeath ? undefined : (r.bdSeq ?? (sameConnection ? was?.refusedBdSeq : undefined));
    const on = r.on ?? was?.refusedOn;
    // One refused later on the edge node's clock (it has one) but without a timestamp read: published after the one known still.
    const at = r.at !== undefined && (was?.refusedAt === undefined || r.at > was.refusedAt) ? r.at : was?.refusedAt;
    for (let j = 0; j < list.length; j++) if (j !== target && carriesRefused(list[j]!)) list[j] = plain(list[j]!);
    list[target] = {
      ...plain(e),
      ...(bdSeq !== undefined ? { refusedBdSeq: bdSeq } : {}),
      ...(on !== undefined ? { refusedOn: on } : {}),
      ...(at !== undefined ? { refusedAt: at } : {}),
    };
  }

  /** The previous session of `k` that carries what is known of its latest NBIRTH refused (refusedBirth), if one does. */
  refusedOf(k: string): Previous | undefined {
    return this.previous.get(k)?.find(carriesRefused);
  }

  /** The previous session of `k` whose NDEATH is still its death (Previous.awaitsDeath), if one is kept. */
  awaitingDeath(k: string): Previous | undefined {
    return this.previous.get(k)?.find((e) => e.awaitsDeath);
  }

  /**
   * No previous session of `k` awaits its death any more: it died, or a birth was taken since (the
   * last birth taken then). Where nothing is sent again, none is kept then. Counted again by the caller.
   */
  settle(k: string, birthTaken = false): void {
    const list = this.previous.get(k);
    if (!list?.some((e) => e.awaitsDeath || (birthTaken && carriesRefused(e)))) return;
    if (!this.o.resends) this.previous.delete(k);
    // A death leaves the connection and the time of a birth refused since (Previous.refusedOn,
    // refusedAt): the late will of an older connection, that edge node's data on it still follows
    // that birth, and no birth published before it is current. A birth taken is current.
    else this.previous.set(k, list.map((e) => (birthTaken ? { s: e.s, at: e.at } : afterDeath(e))));
  }

  /**
   * Sessions saved before a restart (store.ts), kept as the previous sessions of `k`, each ended at
   * its `at`, one whose death is still to come (Previous.awaitsDeath: current at the restart, or
   * ended by a refused NBIRTH) still awaiting it: within the bounds of every other session
   * (LIMITS.sparkplugMaxEdgeNodes, LIMITS.sparkplugPreviousSessionsPerNode, the oldest born
   * dropped, and LIMITS.sparkplugDefinitionsMaxBytes: refused whole past it). Called in the order
   * their edge nodes' last sessions ended (expirePrevious relies on that order).
   */
  restore(k: string, entries: readonly Previous[]): void {
    if (!this.o.resends || entries.length === 0) return;
    if (!this.previous.has(k) && this.previous.size >= this.o.maxEdgeNodes) {
      throw new FieldStreamError('SPARKPLUG_TOO_MANY_EDGE_NODES', `${this.o.maxEdgeNodes} edge nodes have sessions kept already`);
    }
    const sorted = [...entries].sort((a, b) => (a.s.bornAt ?? Infinity) - (b.s.bornAt ?? Infinity)).slice(-this.maxPerNode);
    // One last birth taken at most (awaitingDeath finds the first): the one born last, should a
    // file that was changed mark more.
    let last = -1;
    sorted.forEach((e, i) => (last = e.awaitsDeath ? i : last));
    const list = sorted.map((e, i) => (e.awaitsDeath && i !== last ? { s: e.s, at: e.at } : e));
    let bytes = 0;
    for (const e of list) bytes += bytesOf(e.s);
    if (this.defTotal + this.prevTotal - this.previousBytes(k) + bytes > this.maxDefinitionsBytes) {
      throw new FieldStreamError('SPARKPLUG_DEFINITIONS_FULL', `their definitions (about ${bytes} bytes) would take those held past ${this.maxDefinitionsBytes} bytes`);
    }
    this.previous.set(k, list);
    this.recount(k);
  }

  /**
   * Drops every previous session of `k`, but, with `keepAwaiting`, the one awaiting its death and the
   * one that carries the latest NBIRTH refused (refusedOf; counted again by the caller).
   */
  dropPrevious(k: string, keepAwaiting = false): void {
    const kept = keepAwaiting ? (this.previous.get(k) ?? []).filter((e) => e.awaitsDeath || carriesRefused(e)) : [];
    if (kept.length > 0) this.previous.set(k, kept);
    else this.previous.delete(k);
  }

  /**
   * Previous sessions ended TIMINGS.sparkplugResendWindowMs ago: nothing of theirs is sent again so
   * late. The edge nodes whose last one ended so long ago (first in the map), and those of `k` (the
   * edge node of the message now read: an older one of an edge node still in the window is dropped
   * when the edge node next sends, it counts against the bounds until then).
   */
  expirePrevious(now: number, k?: string): void {
    this.boundaries.expire(now, k);
    for (const [other, list] of this.previous) {
      if (list.length > 0 && now - Math.max(...list.map((e) => e.at)) < TIMINGS.sparkplugResendWindowMs) break;
      this.previous.delete(other);
      this.recount(other);
    }
    const list = k === undefined ? undefined : this.previous.get(k);
    if (!list || k === undefined) return;
    const kept = list.filter((e) => now - e.at < TIMINGS.sparkplugResendWindowMs);
    if (kept.length === list.length) return;
    if (kept.length > 0) this.previous.set(k, kept);
    else this.previous.delete(k);
    this.recount(k);
  }

  /**
   * Current births come first: previous sessions are dropped, oldest first (the edge node whose last
   * one ended first, its oldest born first; `keep`'s last), until
   * every definition held fits LIMITS.sparkplugDefinitionsMaxBytes again.
   */
  fitPrevious(keep?: string): void {
    const max = this.maxDefinitionsBytes;
    const keys = [...this.previous.keys()].filter((x) => x !== keep);
    if (keep !== undefined && this.previous.has(keep)) keys.push(keep);
    for (const k of keys) {
      const list = this.previous.get(k) ?? [];
      while (list.length > 0) {
        if (this.defTotal + this.prevTotal <= max) return;
        list.shift();
        if (list.length === 0) this.previous.delete(k);
        this.recount(k);
      }
    }
  }

  /**
   * One edge node's session (`bytes` with the birth in, its devices' and its digests included) is
   * held to LIMITS.sparkplugDefinitionsMaxBytesPerNode, a share of the budget over every edge node:
   * bounded by that budget alone, one edge node declaring ever more metrics took it all, and every
   * birth of the plant's other edge nodes was refused until it died.
   */
  private share(what: string, bytes: number): void {
    const max = this.maxNodeBytes;
    if (bytes <= max) return;
    throw new FieldStreamError('SPARKPLUG_EDGE_NODE_DEFINITIONS_FULL', `${what} refused: its edge node's definitions would take about ${bytes} bytes, past its share of ${max} bytes`);
  }

  /**
   * A birth read into a previous session: room made by dropping other edge nodes' previous sessions,
   * else refused. `freed`: the bytes it replaces; `session`: that session's bytes with it in (share).
   */
  roomPrevious(what: string, bytes: number, k: string, freed: number, session: number): void {
    this.share(what, session);
    const max = this.maxDefinitionsBytes;
    for (const other of [...this.previous.keys()]) {
      if (this.defTotal + this.prevTotal - freed + bytes <= max) return;
      if (other === k) continue;
      this.previous.delete(other);
      this.recount(other);
    }
    if (this.defTotal + this.prevTotal - freed + bytes <= max) return;
    throw new FieldStreamError(
      'SPARKPLUG_DEFINITIONS_FULL',
      `${what} refused: its definitions (about ${bytes} bytes) would take those held past ${max} bytes (${this.defTotal + this.prevTotal} held now)`,
    );
  }
}
