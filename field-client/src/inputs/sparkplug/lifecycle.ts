import { FieldStreamError } from '../../../../shared/errors.ts';
import { definitions } from './definitions.ts';
import { SEQ_DIGESTS_BYTES, type Digest } from './duplicates.ts';
import type { HeldDefinitions } from './held.ts';
import type { RefusedBirth } from './previous.ts';
import { bdSeqOf, BD_SEQ, births, key, type HostOutcome, type NodeSession } from './host-types.ts';
import { lifecycleEvent } from './mapping.ts';
import { nameDefinitions } from './naming.ts';
import type { SparkplugPayload } from './payload.ts';
import type { ReorderBuffers } from './reorder.ts';
import { devicesDied, type SequencedMessages } from './sequenced.ts';
import type { SparkplugTopic } from './topic.ts';

/** What of the Sparkplug host (host.ts) an edge node's births and deaths use. */
export interface LifecycleParts {
  readonly sessions: Map<string, NodeSession>;
  readonly held: HeldDefinitions;
  readonly reorder: ReorderBuffers;
  readonly sequenced: SequencedMessages;
  /** edge nodes followed at most (HostOptions.maxEdgeNodes) */
  readonly maxEdgeNodes: number;
  /** whether what is sent again is read (HostOptions.resends) */
  readonly resends: boolean;
}

/**
 * The births and deaths of the Sparkplug host's (host.ts) edge node sessions (Sparkplug 3.0.0 "Edge
 * Node Session Establishment" and "Termination"): an NBIRTH taken starts a session and replaces the
 * one before it, an NBIRTH refused ends it, and the NDEATH of the last birth taken ends it; the
 * devices a session has born die with it when a birth replaces it or its NDEATH comes. The host reads
 * the message, undoes it, and asks for the rebirths a refusal makes; the messages within a session
 * are sequenced.ts's.
 */
export class NodeLifecycle {
  constructor(private readonly o: LifecycleParts) {}

  /**
   * An NBIRTH refused: the edge node has started a new session (§5.7) whose definitions could not be
   * read, so the old ones no longer name what it sends. Its session (`ended`: the one in force when
   * the birth came) is ended: its data is refused (SPARKPLUG_NOT_BORN) until a valid NBIRTH, rather
   * than stored under the old birth's names. It stays the last birth taken, so its NDEATH is still
   * its death (nodeDeath): kept for it (held.ts, Previous.awaitsDeath), and a while, as when a birth
   * replaces it, for what the edge node sends again after this one that was sent in it.
   * `refused`: what was read of the birth: its bdSeq, the edge node's connection then, whose will is
   * the death of that last birth taken too (held.ts, Previous.refusedBdSeq), and the connection it
   * came on, whose plain data after it is of its session, not born (Previous.refusedOn, resend.ts).
   */
  nodeBirthRefused(t: SparkplugTopic, now: number, out: HostOutcome, ended = this.o.sessions.get(key(t.group, t.edge)), refused?: RefusedBirth): void {
    const k = key(t.group, t.edge);
    if (this.o.sessions.has(k)) {
      this.o.reorder.drop(k, 'SPARKPLUG_SEQ_GAP', `held messages of ${t.group}/${t.edge} discarded: its new NBIRTH was refused`, out);
      this.o.sessions.delete(k);
    }
    if (ended) {
      this.o.held.keepPrevious(k, ended, now, true);
      // Within the bound still: a birth refused once its values were read may have dropped it for its own room.
      this.o.held.recount(k, out);
      this.o.held.fitPrevious(k);
    }
    // The latest birth refused: its bdSeq, not an earlier refused one's, is the edge node's connection now.
    if (refused) this.o.held.refusedBirth(k, refused);
    // A bound between sessions for what is sent again (boundaries.ts), a session before it kept or not.
    if (refused && this.o.resends) this.o.held.boundaries.add(k, { at: refused.at, on: refused.on, arrived: now });
  }

  /**
   * An NBIRTH: a new session of its edge node, in force from now on (its definitions, its seq, the
   * connection it came on), the one it replaces kept a while for what is sent again in it (held.ts,
   * resend.ts). Throws (FieldStreamError) when it is refused, the session it replaced kept the same.
   */
  nodeBirth(t: SparkplugTopic, p: SparkplugPayload, now: number, out: HostOutcome, connection: object | undefined, digest: Digest | undefined): void {
    if (p.seq === undefined) throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', 'NBIRTH without seq');
    const bdSeq = bdSeqOf(p, 'NBIRTH');
    const defs = definitions(p.metrics.filter((m) => m.name !== BD_SEQ));
    nameDefinitions(defs, { group: t.group, edge: t.edge, device: undefined });
    const at = p.timestamp ?? now;
    const k = key(t.group, t.edge);
    if (!this.o.sessions.has(k) && this.o.sessions.size >= this.o.maxEdgeNodes) {
      throw new FieldStreamError('SPARKPLUG_TOO_MANY_EDGE_NODES', `NBIRTH of ${t.group}/${t.edge} refused: ${this.o.maxEdgeNodes} edge nodes are followed already`);
    }
    // It replaces the edge node's session, its devices' births with it.
    this.o.held.room(`NBIRTH of ${t.group}/${t.edge}`, defs.bytes + SEQ_DIGESTS_BYTES, this.o.held.currentBytes(k), defs.bytes + SEQ_DIGESTS_BYTES);
    // A new session: what was held for the old one is of no use any more.
    this.o.reorder.drop(k, 'SPARKPLUG_SEQ_GAP', `held messages of ${t.group}/${t.edge} discarded: a new NBIRTH started its session`, out);
    // The old one is kept a while: what the edge node sends again after this birth was sent in it (resend.ts).
    const old = this.o.sessions.get(k);
    // The last birth taken before it, which no NDEATH ended: the current session, or one a refused NBIRTH ended.
    const replaced = old ?? this.o.held.awaitingDeath(k)?.s;
    if (old) this.o.held.keepPrevious(k, old, now);
    // In force before its values are read, so that they go to the fields its names get beside every
    // other metric followed (names.ts); a value that is refused ends it again.
    this.o.sessions.set(k, { bdSeq, seq: p.seq, defs, devices: new Map(), stale: false, held: new Map(), heldSince: undefined, born: connection, bornAt: p.timestamp, ...births(p, digest) });
    this.o.held.recount(k, out);
    this.o.held.fitPrevious(k);
    try {
      this.o.sequenced.fields(t, p, defs, now, out, (m) => m.name !== BD_SEQ);
    } catch (err) {
      // Ended again; the session it replaced stays the previous one (nodeBirthRefused finds none to keep).
      this.o.sessions.delete(k);
      throw err;
    }
    // The last birth taken now: the death of one before it is stale (nodeDeath), and no birth refused is the latest.
    this.o.held.settle(k, true);
    // The devices of the session it replaces die with it (Sparkplug 3.0.0, NBIRTH payload: a new
    // NBIRTH means a new session, in which devices born before are STALE until their new DBIRTH),
    // each recorded as its DDEATH would be: else one not born again stayed online downstream. At the
    // birth's time, when that session ended by the edge node's clock that dates the DBIRTHs after it.
    // Only once the birth is taken: a birth refused leaves them to that session's NDEATH.
    if (replaced) {
      devicesDied(t, replaced.devices.keys(), at, out);
      replaced.diedAt = at;
    }
    out.events.push(lifecycleEvent('nbirth', t, at, { bdSeq, metrics: defs.byName.size }));
  }

  /**
   * The death of the last birth taken (§5 "Edge Node Session Establishment": the NDEATH whose bdSeq
   * matches the NBIRTH's): of the current session, or, when none is, of the one a refused NBIRTH
   * ended (nodeBirthRefused), which nothing took for dead: ignored, the edge node and its devices
   * stayed online downstream after it died. With no current session, the NDEATH of the latest NBIRTH
   * refused since (its bdSeq: held.ts, Previous.refusedBdSeq) is that death too: the edge node
   * believed itself online with that bdSeq, and its will is its real death; ignored, the devices of
   * the session awaiting it stayed online downstream until the next birth taken. An NDEATH of any
   * other bdSeq is stale (an older connection's will) or forged, and never ends a current session.
   */
  nodeDeath(t: SparkplugTopic, p: SparkplugPayload, now: number, out: HostOutcome): void {
    const bdSeq = bdSeqOf(p, 'NDEATH');
    const k = key(t.group, t.edge);
    const s = this.o.sessions.get(k);
    const awaiting = s ? undefined : this.o.held.awaitingDeath(k);
    const last = s ?? awaiting?.s;
    if (!last || (last.bdSeq !== bdSeq && awaiting?.refusedBdSeq !== bdSeq)) {
      const refused = awaiting?.refusedBdSeq !== undefined ? `, the NBIRTH refused after it ${awaiting.refusedBdSeq}` : '';
      const why = s ? `the current birth has bdSeq ${s.bdSeq}` : last ? `the last birth taken has bdSeq ${last.bdSeq}${refused}` : 'no current birth';
      throw new FieldStreamError('SPARKPLUG_DEATH_STALE', `NDEATH of ${t.group}/${t.edge} with bdSeq ${bdSeq} ignored: ${why}`);
    }
    // Both at its arrival, not its payload timestamp: an NDEATH is the will registered in the MQTT
    // CONNECT, its timestamp (if any) set then, not when the edge node died (Sparkplug 3.0.0 "Edge
    // Node Session Termination": the host marks the edge node and its devices offline "using the
    // current Host Application's system UTC time",
    // tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-offline, -devices-offline).
    this.died(t, s, last, now, out, 'its NDEATH ended its session', bdSeq);
  }

  /**
   * The death of the current session of `t` when the host lost its connection to the broker it
   * follows (the plant's, sparkplug-input.ts), or, when none is, of the last birth taken awaiting its
   * death (willLost): away from that broker the host sees neither the edge node's NDEATH nor its data,
   * and Sparkplug 3.0.0 has it mark the data of every edge node it knew there STALE ("All metric data
   * associated with any Sparkplug Edge Node that was connected to that MQTT Server and known by the
   * Host Application MUST be updated to a STALE data quality if the Host Application loses connection
   * to the MQTT Server"). Recorded as that NDEATH would be, at `now`: the edge node and
   * its devices are offline until born again; its data after the loss is of no current session, and
   * asks for its births (§5.12).
   */
  connectionLost(t: Pick<SparkplugTopic, 'group' | 'edge'>, now: number, out: HostOutcome): void {
    const s = this.o.sessions.get(key(t.group, t.edge));
    if (s) this.died(t, s, s, now, out, 'the connection to its broker was lost', s.bdSeq);
    else this.willLost(t, now, out);
  }

  /**
   * The death of `last`, the current session `s` of `t` or, without one, the last birth taken;
   * `bdSeq`: the connection that died (its NDEATH's: `last`'s, or that of an NBIRTH refused after it).
   */
  private died(t: Pick<SparkplugTopic, 'group' | 'edge'>, s: NodeSession | undefined, last: NodeSession, now: number, out: HostOutcome, why: string, bdSeq: number): void {
    const k = key(t.group, t.edge);
    if (s) {
      this.o.reorder.drop(k, 'SPARKPLUG_SEQ_GAP', `held messages of ${t.group}/${t.edge} discarded: ${why}`, out);
      // Kept a while: a connection lost (its will) leaves unacknowledged messages its edge node sends again.
      this.o.held.keepPrevious(k, s, now);
      this.o.sessions.delete(k);
    } else this.o.held.settle(k); // dead once: the same death again is stale
    // Its devices die with it (§5 "Edge Node Session Termination"): each one it has born recorded
    // dead as its DDEATH would be, else it stayed online downstream after its edge node died.
    // Their definitions stay in the session kept, for what is sent again in it (resend.ts).
    devicesDied(t, last.devices.keys(), now, out);
    last.diedAt = now;
    out.events.push(lifecycleEvent('ndeath', t, now, { bdSeq }));
  }

  /**
   * The death of the last birth taken whose will was lost: the broker that held it (the local MQTT
   * input's, in this process) ended with the field client, and with it the edge node's connection
   * and the NDEATH it was to publish for it. Recorded as that NDEATH would have been (nodeDeath), at
   * `now`, once: the edge node and its devices are offline until they are born again (Sparkplug
   * 3.0.0 "Edge Node Session Establishment": the server issues the NDEATH when the edge node's
   * connection is lost). Nothing when no session of `k` awaits its death (held.ts awaitingDeath).
   */
  willLost(t: Pick<SparkplugTopic, 'group' | 'edge'>, now: number, out: HostOutcome): void {
    const k = key(t.group, t.edge);
    const last = this.o.held.awaitingDeath(k)?.s;
    if (!last) return;
    this.o.held.settle(k);
    devicesDied(t, last.devices.keys(), now, out);
    last.diedAt = now;
    out.events.push(lifecycleEvent('ndeath', t, now, { bdSeq: last.bdSeq }));
  }

  /**
   * Whether an NBIRTH of these bytes started the current session of `k` (duplicates.ts), one that
   * awaits no rebirth: a session that does (stale) takes any NBIRTH, so that an edge node answering
   * each request with the same bytes (a birth payload it keeps, timestamp and all) is born again rather
   * than asked without end. A previous session's NBIRTH sent again starts its session again: its values
   * stored twice, nothing lost.
   */
  birthRead(k: string, digest: Digest | undefined): boolean {
    const s = this.o.sessions.get(k);
    return digest !== undefined && s !== undefined && !s.stale && s.birthDigest === digest;
  }
}
