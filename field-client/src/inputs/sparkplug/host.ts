import { FieldStreamError } from '../../../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../../../shared/limits.ts';
import type { MetricDef } from './definitions.ts';
import type { Digest } from './duplicates.ts';
import { HeldDefinitions } from './held.ts';
import type { Previous } from './previous.ts';
import { bdSeqIfAny, duplicate, key, type HostOptions, type HostOutcome, type NodeSession, type Via } from './host-types.ts';
import { NodeLifecycle } from './lifecycle.ts';
import type { SparkplugPayload } from './payload.ts';
import { RebirthRequests } from './rebirth.ts';
import { refuse, type RefusalHost } from './refused.ts';
import { emptyOutcome, ReorderBuffers } from './reorder.ts';
import type { SparkplugTopic } from './topic.ts';
import { Resends } from './resend.ts';
import { SequencedMessages } from './sequenced.ts';
import { putBack, snapshot, type Before } from './undo.ts';

export { key } from './host-types.ts';
export type { HeldMessage, HostOptions, HostOutcome, NodeSession, Via } from './host-types.ts';

/**
 * The host application's view of the edge nodes it follows (Sparkplug 3.0.0 §5, "Operational
 * Behavior", and §6.4 for the payload rules), one state per edge node and per device:
 *
 * - NBIRTH starts a session: its `bdSeq` metric, its `seq`, and each metric's name, alias and data
 *   type (§5.7; aliases unique, §6.4.7 "alias"). It replaces the previous session of that edge node
 *   with its devices, which must be born again (DBIRTH) after it (§5.9): those the replaced session
 *   had born, and which did not die since, die with it (lifecycle.ts, nodeBirth).
 * - Every NDATA, DBIRTH, DDATA and DDEATH of the session must carry the next `seq`, 0–255 wrapping
 *   to 0 (§6.4.2 / §5.3). With a reorder timeout (§5.9 "Sparkplug Host Application Message
 *   Ordering"; reorder.ts), a message up to LIMITS.sparkplugReorderMaxHeld ahead is held until the
 *   missing ones arrive, then all are taken in seq order; when they do not arrive in time, or
 *   without a timeout, or further ahead, it is a gap: the message is refused, the session is marked
 *   stale and the edge node is asked to rebirth (§5.12 "Host Application Rebirth Request":
 *   NCMD with `Node Control/Rebirth` = true). Until its next NBIRTH its data is refused (its aliases
 *   may have changed in a birth that was missed).
 * - Data messages name metrics by alias or name, resolved against the birth (§6.4.7); an unknown
 *   one, or data from an edge node or device with no current birth, also asks for a rebirth.
 * - NDEATH ends the session only when its `bdSeq` equals the current birth's (§5.8: a death with
 *   another bdSeq is the will of an older connection, delivered late): otherwise it is ignored. With
 *   no current session, one a refused NBIRTH ended (or one current at a restart, store.ts) is still
 *   the last birth taken, and dies by its NDEATH too, or by that of the latest NBIRTH refused since,
 *   the edge node's connection then (its bdSeq; lifecycle.ts, nodeDeath). The devices the session has born die with it, each
 *   recorded as its DDEATH would be, all at the NDEATH's arrival (its payload timestamp is the
 *   will's, set at connect). A device a DBIRTH sent again bears in a session over already dies at
 *   that session's end too, right after its birth (resend.ts, endOf).
 *
 * The rebirth requests for one edge node are at least `rebirthMinIntervalMs` apart, so a node that
 * keeps gapping is not flooded with commands, and those its refused births, its data naming a metric
 * its birth did not declare, and its data refused as not born after them make come less and less
 * often while they are refused the same after each rebirth (after a birth refused for a bound, none
 * for a while at once: rebirth.ts). Pure: no I/O, the time passed in.
 *
 * Split along its concerns: the types it shares (host-types.ts), the births and deaths of edge node
 * sessions (lifecycle.ts), the messages within a session, in seq order (sequenced.ts), what it holds
 * in memory and its bounds, the field names and the previous sessions (held.ts), undoing a message
 * (undo.ts), the reorder buffers (reorder.ts), the rebirth requests (rebirth.ts) and what a refused
 * message asks of them (refused.ts), the digests of what was read (duplicates.ts) and the NBIRTHs
 * refused, bounds between sessions (boundaries.ts).
 */
export class SparkplugHost {
  private readonly sessions = new Map<string, NodeSession>();
  private readonly rebirths: RebirthRequests;
  /** the definitions' bytes, the field names and the previous sessions (held.ts) */
  private readonly held: HeldDefinitions;
  /** each edge node's previous sessions (held.ts) */
  private readonly previous: HeldDefinitions['previous'];
  readonly reorder: ReorderBuffers;
  /** messages sent again on a new connection (resend.ts) */
  private readonly resends: Resends;
  /** NDATA, DBIRTH, DDATA, DDEATH: in seq order within a session (sequenced.ts) */
  private readonly sequenced: SequencedMessages;
  /** NBIRTH, NDEATH: an edge node's sessions born and dead (lifecycle.ts) */
  private readonly lifecycle: NodeLifecycle;
  /** what a refused message needs of it (refused.ts) */
  private readonly refusals: RefusalHost;

  constructor(private readonly options: HostOptions) {
    this.held = new HeldDefinitions(this.sessions, {
      maxEdgeNodes: this.maxEdgeNodes,
      maxDefinitionsBytes: options.maxDefinitionsBytes,
      maxDefinitionsBytesPerNode: options.maxDefinitionsBytesPerNode,
      resends: options.resends,
      names: options.names,
    });
    this.previous = this.held.previous;
    this.rebirths = new RebirthRequests({
      minIntervalMs: options.rebirthMinIntervalMs,
      afterBoundMs: options.rebirthAfterBoundMs ?? TIMINGS.sparkplugRebirthAfterBoundMs,
      maxEdgeNodes: this.maxEdgeNodes,
    });
    this.resends = new Resends({
      sessions: this.sessions,
      held: this.held,
      process: (t, p, now, connection, digest) => this.process(t, p, now, connection, digest),
      take: (s, t, p, seq, now, out, current, digest) => this.sequenced.take(s, t, p, seq, now, out, current, digest),
      fields: (t, p, defs, now, out, keep) => this.sequenced.fields(t, p, defs, now, out, keep),
    });
    this.reorder = new ReorderBuffers(
      {
        timeoutMs: options.reorderTimeoutMs ?? 0,
        maxHeld: options.reorderMaxHeld ?? LIMITS.sparkplugReorderMaxHeld,
        maxHeldBytes: options.reorderMaxHeldBytes ?? LIMITS.sparkplugReorderMaxHeldBytes,
      },
      (k) => this.sessions.get(k),
      (group, edge, now, reason, out) => this.rebirths.ask(group, edge, now, reason, out),
      (t, p, now, digest) => this.process(t, p, now, undefined, digest),
    );
    this.sequenced = new SequencedMessages({
      sessions: this.sessions,
      held: this.held,
      reorder: this.reorder,
      rebirths: this.rebirths,
      maxDevicesPerNode: options.maxDevicesPerNode ?? LIMITS.sparkplugMaxDevicesPerNode,
      recordFields: options.recordFields ?? false,
    });
    this.lifecycle = new NodeLifecycle({
      sessions: this.sessions,
      held: this.held,
      reorder: this.reorder,
      sequenced: this.sequenced,
      maxEdgeNodes: this.maxEdgeNodes,
      resends: options.resends === true,
    });
    this.refusals = { sessions: this.sessions, reorder: this.reorder, rebirths: this.rebirths };
  }

  /** Edge nodes followed at most: a publisher inventing edge node ids cannot grow this without bound. */
  private get maxEdgeNodes(): number {
    return this.options.maxEdgeNodes ?? LIMITS.sparkplugMaxEdgeNodes;
  }

  /** The session of an edge node, for tests and the input's stats. */
  session(group: string, edge: string): Readonly<NodeSession> | undefined {
    return this.sessions.get(key(group, edge));
  }

  get edgeNodes(): number {
    return this.sessions.size;
  }

  /** The previous session of an edge node born last (kept for what it sends again: see resend.ts), for tests. */
  previousSession(group: string, edge: string): Readonly<NodeSession> | undefined {
    return this.held.newestPrevious(key(group, edge))?.s;
  }

  /** The previous sessions of an edge node, oldest born first, for tests. */
  previousSessions(group: string, edge: string): ReadonlyArray<Readonly<NodeSession>> {
    return this.held.previousOf(key(group, edge)).map((e) => e.s);
  }

  /**
   * What the session store saves of edge node `k` (store.ts): its previous sessions, oldest born
   * first, and its current one.
   */
  sessionsOf(k: string): { current: NodeSession | undefined; previous: readonly Previous[] } {
    return { current: this.sessions.get(k), previous: this.held.previousOf(k) };
  }

  /** Whether anything of edge node `k` is held (its current session or a previous one). */
  follows(k: string): boolean {
    return this.sessions.has(k) || this.held.previousOf(k).length > 0;
  }

  /** Edge nodes with a current or a previous session held, counted from above (both maps' sizes). */
  get edgeNodesHeldAtMost(): number {
    return this.sessions.size + this.previous.size;
  }

  /** The field a declared metric's values go to now (names.ts), for the session store. */
  fieldOf(def: MetricDef): string | undefined {
    return this.held.names.field(def);
  }

  /**
   * Sessions of an edge node saved before the field client restarted (store.ts), kept as its previous
   * sessions, born on no connection: what it sends again after the restart is read in the session it
   * was sent in (resend.ts), as after a reconnection. One whose death is still to come (current at
   * the restart, or ended by a refused NBIRTH) awaits it (previous.ts Previous.awaitsDeath): the next
   * birth taken, or its NDEATH, records its devices' deaths. Throws (SPARKPLUG_TOO_MANY_EDGE_NODES,
   * SPARKPLUG_DEFINITIONS_FULL) past the bounds of what is held.
   */
  restorePrevious(group: string, edge: string, entries: readonly Previous[]): void {
    this.held.restore(key(group, edge), entries);
  }

  /**
   * The deaths of the edge nodes whose wills were lost with the broker that held them (lifecycle.ts,
   * willLost): those whose last birth taken awaits its death, restored after a restart (store.ts),
   * one outcome each, undone as a message's is when the queue does not take it.
   */
  willsLost(now: number): Array<{ group: string; edge: string; out: HostOutcome }> {
    const keys = [...this.previous.keys()].filter((k) => this.held.awaitingDeath(k) && !this.sessions.has(k));
    return this.deaths(keys, (t, out) => this.lifecycle.willLost(t, now, out));
  }

  /**
   * The deaths of every edge node known when the host lost its connection to the broker (lifecycle.ts,
   * connectionLost): the current sessions, and the last births taken that await their deaths.
   */
  connectionLost(now: number): Array<{ group: string; edge: string; out: HostOutcome }> {
    const keys = new Set([...this.sessions.keys(), ...[...this.previous.keys()].filter((k) => this.held.awaitingDeath(k))]);
    return this.deaths([...keys], (t, out) => this.lifecycle.connectionLost(t, now, out));
  }

  /** One outcome per edge node of `keys`, `record` its death, undone as a message's is. */
  private deaths(keys: readonly string[], record: (t: { group: string; edge: string }, out: HostOutcome) => void): Array<{ group: string; edge: string; out: HostOutcome }> {
    return keys.map((k) => {
      const [group, edge] = k.split('\u0000') as [string, string];
      const before = snapshot(this.sessions, this.previous, this.held.boundaries, k, { type: 'NDEATH', group, edge });
      const out = emptyOutcome();
      try {
        record({ group, edge }, out);
      } finally {
        this.held.recount(k, out);
      }
      out.undo = () => this.restore(k, before);
      return { group, edge, out };
    });
  }

  /** Bytes of birth definitions held now over every edge node and device (estimated: Definitions.bytes), previous sessions' included. */
  get definitionsBytes(): number {
    return this.held.bytes;
  }

  /**
   * One message; with it, the held messages it lets through (`released`). `via`: where it came from,
   * on an input whose publishers send again what was not acknowledged (see resend.ts). `digest`: of its
   * payload's bytes, what tells a message sent again without DUP from a new one (duplicates.ts).
   */
  handle(t: SparkplugTopic, p: SparkplugPayload, now: number, via?: Via, digest?: Digest): HostOutcome {
    const k = key(t.group, t.edge);
    this.held.expirePrevious(now, k);
    const before = snapshot(this.sessions, this.previous, this.held.boundaries, k, t);
    const r = via && this.resends.sentAgain(k, t, via) ? this.resends.read(t, p, now, via.connection, !via.dup, digest) : undefined;
    const out = r ? r.out : this.process(t, p, now, via?.connection, digest);
    if (!out.held && t.type !== 'NDEATH' && !r?.previous) this.reorder.release(k, now, out);
    out.undo = () => this.restore(k, before);
    return out;
  }

  /**
   * An NBIRTH whose payload could not be decoded (payload.ts refused it: malformed, compressed, past a
   * bound such as a string value or a name too long): refused with `err`, and, as for any birth
   * refused (lifecycle.ts, nodeBirthRefused), the edge node's session ends. It has started a new session all the
   * same (§5.7; tck-id-operational-behavior-edge-node-birth-sequence-num: its seq starts again at 0),
   * whose aliases are unknown: left in force, the old birth read the new session's first NDATA (seq 1
   * after a birth at 0) against its own aliases, and stored its values under another metric's name.
   * Its data is refused as not born until a valid NBIRTH (and that refusal asks for it, §5.12, less
   * and less often while its births are refused in a row: rebirth.ts); the birth itself asks for
   * nothing, as it would likely come back the same. Its bdSeq unread, the NDEATH of an NBIRTH
   * refused before it still counts for the session awaiting its death (lifecycle.ts, nodeDeath) when
   * it came on that birth's connection (a rebirth keeps its bdSeq, §5.12) or on one unknown, never
   * when on another (an older connection's will then: held.ts refusedBirth), as for an NBIRTH
   * decoded without a bdSeq.
   * Not for a publish flagged DUP while a session is current: sent again (MQTT 3.1.1 §3.3.1.1), it
   * may have come before and ended its session then, and its timestamp unread, nothing places it
   * after the current birth (resend.ts places what is sent again by it), whether that birth came on
   * a connection or was itself sent again. A DBIRTH, NDATA or DDATA that could not be decoded
   * takes its seq in its session (sequenced.ts, unreadable).
   */
  unreadableBirth(t: SparkplugTopic, err: FieldStreamError, now: number, via?: Via, digest?: Digest): HostOutcome {
    if (t.type === 'DBIRTH' || t.type === 'NDATA' || t.type === 'DDATA') return this.unreadableSequenced(t, err, now, via, digest);
    const k = key(t.group, t.edge);
    const out = emptyOutcome();
    out.refused = err;
    if (t.type !== 'NBIRTH' || (via?.dup && this.sessions.has(k))) return out;
    this.held.expirePrevious(now, k);
    const before = snapshot(this.sessions, this.previous, this.held.boundaries, k, t);
    // Refused as any birth for what it holds (process), but asks for no rebirth itself: the data
    // refused as not born after it does, as often as births refused in a row allow (rebirth.ts).
    this.rebirths.refused(k, now, false);
    try {
      // Its connection (unless flagged DUP: sent before, on an earlier one) refuses the plain data after it (resend.ts).
      this.lifecycle.nodeBirthRefused(t, now, out, undefined, via?.dup ? undefined : { bdSeq: undefined, on: via?.connection });
    } finally {
      this.recountAfter(t, out);
    }
    out.undo = () => this.restore(k, before);
    return out;
  }

  /** A DBIRTH, NDATA or DDATA whose payload could not be decoded: refused with `err`, its seq taken (sequenced.ts); only refused when sent again (resend.ts). */
  private unreadableSequenced(t: SparkplugTopic, err: FieldStreamError, now: number, via: Via | undefined, digest: Digest | undefined): HostOutcome {
    const k = key(t.group, t.edge);
    const out = emptyOutcome();
    out.refused = err;
    if (via && this.resends.sentAgain(k, t, via)) return out;
    this.held.expirePrevious(now, k);
    const before = snapshot(this.sessions, this.previous, this.held.boundaries, k, t);
    try {
      this.sequenced.unreadable(t, err, now, out, digest);
    } finally {
      this.recountAfter(t, out);
    }
    out.undo = () => this.restore(k, before);
    return out;
  }

  private restore(k: string, b: Before): HostOutcome['dropped'] {
    const out = emptyOutcome();
    try {
      // A session the undo takes away (an undone NBIRTH's) may hold messages that arrived ahead of
      // their seq after it: discarded with it, their bytes given back (reorder.ts). Left in it, they
      // were counted against LIMITS.sparkplugReorderMaxHeldBytes for as long as the process ran, and
      // once that was reached nothing was ever held again: every message out of order was a gap.
      const current = this.sessions.get(k);
      if (current !== undefined && current !== b.s) {
        this.reorder.drop(k, 'SPARKPLUG_SEQ_GAP', `held messages of ${k.replace('\u0000', '/')} discarded: the NBIRTH they followed was undone, its data not queued`, out);
      }
      putBack(this.sessions, this.previous, this.held.boundaries, k, b);
    } finally {
      this.held.recount(k);
    }
    return out.dropped;
  }

  /** The held messages whose reorder timeout is over at `now`: discarded, a rebirth asked for (§5.9). */
  expire(now: number): Array<{ group: string; edge: string; out: HostOutcome }> {
    return this.reorder.expire(now);
  }

  private process(t: SparkplugTopic, p: SparkplugPayload, now: number, connection?: object, digest?: Digest): HostOutcome {
    const out = emptyOutcome();
    try {
      switch (t.type) {
        case 'NBIRTH':
          // The very NBIRTH read (its bytes, so its bdSeq and timestamp), sent again without DUP: a
          // duplicate, which must not start its session again (duplicates.ts).
          if (this.lifecycle.birthRead(key(t.group, t.edge), digest)) throw duplicate(t, `the birth of these bytes was read already`);
          {
            // The session it replaces, ended by it refused whether or not it was in force by then.
            const ended = this.sessions.get(key(t.group, t.edge));
            try {
              this.lifecycle.nodeBirth(t, p, now, out, connection, digest);
            } catch (err) {
              this.lifecycle.nodeBirthRefused(t, now, out, ended, { bdSeq: bdSeqIfAny(p), on: connection, at: p.timestamp });
              throw err;
            }
          }
          break;
        case 'NDEATH':
          this.lifecycle.nodeDeath(t, p, now, out);
          break;
        case 'NCMD':
        case 'DCMD':
          break; // commands are for edge nodes (ours among them); a host reads none
        default:
          this.sequenced.next(t, p, now, out, digest);
      }
    } catch (err) {
      if (!(err instanceof FieldStreamError)) throw err;
      refuse(this.refusals, t, err, now, out);
    } finally {
      this.recountAfter(t, out);
    }
    return out;
  }

  /** Births and deaths change what an edge node's definitions hold: counted again after each (data never does). */
  private recountAfter(t: SparkplugTopic, out: HostOutcome): void {
    if (t.type === 'NBIRTH' || t.type === 'NDEATH' || t.type === 'DBIRTH' || t.type === 'DDEATH') this.held.recount(key(t.group, t.edge), out);
  }
}
