import { FieldStreamError } from '../../../../shared/errors.ts';
import { definitions, type Definitions } from './definitions.ts';
import { behind, SEQ_DIGESTS_BYTES, type Digest } from './duplicates.ts';
import type { HeldDefinitions } from './held.ts';
import { bdSeqOf, BD_SEQ, births, duplicate, key, SEQ_BEHIND, type HostOutcome, type NodeSession, type Via } from './host-types.ts';
import { lifecycleEvent } from './mapping.ts';
import { nameDefinitions } from './naming.ts';
import type { SparkplugMetric, SparkplugPayload } from './payload.ts';
import { emptyOutcome } from './reorder.ts';
import { devicesDied } from './sequenced.ts';
import type { SparkplugTopic } from './topic.ts';

/** What of the Sparkplug host (host.ts) reading a message sent again uses. */
export interface HostParts {
  readonly sessions: ReadonlyMap<string, NodeSession>;
  readonly held: HeldDefinitions;
  process(t: SparkplugTopic, p: SparkplugPayload, now: number, connection: object | undefined, digest: Digest | undefined): HostOutcome;
  take(s: NodeSession, t: SparkplugTopic, p: SparkplugPayload, seq: number, now: number, out: HostOutcome, current: boolean, digest: Digest | undefined): void;
  fields(t: SparkplugTopic, p: SparkplugPayload, defs: Definitions, now: number, out: HostOutcome, keep?: (m: SparkplugMetric) => boolean): void;
}

/**
 * Messages an edge node sends again on a new connection, on an input whose publishers send again what
 * they got no PUBACK for (the local MQTT input, QoS 1): which ones are (sentAgain), and reading each in
 * the session it was sent in (read), the current one or one of the previous ones kept (held.ts).
 */
export class Resends {
  constructor(private readonly host: HostParts) {}

  /**
   * Whether a message is read as sent again on a new connection (see read): flagged DUP, or (mqtt.js
   * sends again without DUP, duplicates.ts) a data message while its edge node has no current session
   * and its previous one was born on another connection. Sparkplug B 3.0.0 ("Edge Node Session
   * Establishment") has an edge node publish its NBIRTH first on every connection: a data message on a
   * connection before its NBIRTH was sent on an earlier one, whose session the will (NDEATH) ended.
   * Not after its NBIRTH on that connection, refused (previous.ts Previous.refusedOn): what it sends there
   * without DUP then is of the session that birth began (mqtt.js sends again before it), whose aliases
   * could not be read; read in an older session it was stored under another birth's metrics (its
   * seq 1, after the birth's 0, the next of an old session that sent nothing after its birth). Read
   * as any message (process): not born, a rebirth asked (§5.12).
   */
  sentAgain(k: string, t: SparkplugTopic, via: Via): boolean {
    if (t.type === 'NDEATH') return false;
    if (via.dup) return true;
    if (t.type === 'NBIRTH' || this.host.sessions.has(k)) return false;
    // The connection of any NBIRTH refused lately (boundaries.ts): with no session before it to carry it too.
    if (this.host.held.refusedOf(k)?.refusedOn === via.connection || this.host.held.boundaries.cameOn(k, via.connection)) return false;
    const prev = this.host.held.newestPrevious(k);
    return prev !== undefined && prev.s.born !== via.connection;
  }

  /**
   * A message sent again (DUP, MQTT 3.1.1 §3.3.1.1), so first sent on an earlier connection. Read in
   * the session it was sent in, by its seq, so that nothing acknowledged goes unstored:
   *
   * - The session it was sent in (sessionOf): among the current session, unless its NBIRTH came on
   *   this very connection (not sent again: then it began after the message was first sent; Eclipse
   *   Paho publishes the NBIRTH of its new connection, then sends again what it got no PUBACK for),
   *   and the previous ones kept (held.ts), the one born last at or before the message's timestamp.
   * - A seq at most SEQ_BEHIND behind the last one that session read (or equal to it) was read
   *   already: a duplicate of a message stored (or refused and counted) whose PUBACK was lost. It is
   *   counted and logged (SPARKPLUG_DUPLICATE) and changes nothing: read as a gap, it made the
   *   session stale, and what followed was refused, acknowledged and lost until the rebirth.
   * - The next seq of a previous session: read against that session's births (its aliases), its
   *   seq taken, the current session left as it is. Read against the current one it was a seq gap,
   *   acknowledged unstored (or, by chance the next seq, read against the wrong births). A DBIRTH
   *   of a device new to that session, over already, records its death at that session's end (endOf).
   * - An NBIRTH is a duplicate only with the bdSeq and the timestamp of a birth read (a rebirth asked
   *   by NCMD keeps its connection's bdSeq, §5.12, but not its timestamp; one without a timestamp,
   *   which §6.4 does not allow, is never taken for one: storing twice loses nothing). Another sent
   *   after the current one, or published before it (with none current, before the previous one
   *   born last), is an older session's birth, kept among the previous ones, its values stored.
   *
   * What is neither is refused as any message would be (a gap in the previous session makes only it
   * stale; no rebirth is asked, the current session being what a rebirth would renew).
   *
   * `strict`: not flagged DUP (mqtt.js, see sentAgain; no current session then): a seq behind is a
   * duplicate only with the bytes read at that seq (duplicates.ts); what is neither a duplicate nor the
   * previous session's next seq is read as any message is (process: not born, a rebirth asked).
   */
  read(t: SparkplugTopic, p: SparkplugPayload, now: number, connection: object, strict = false, digest?: Digest): { out: HostOutcome; previous: boolean } {
    const k = key(t.group, t.edge);
    const s = this.host.sessions.get(k);
    const current = s !== undefined && s.born !== connection;
    const out = emptyOutcome();
    // Whether a previous session may change (a birth or a message read in it): counted again then.
    let inPrevious = false;
    try {
      if (t.type === 'NBIRTH') {
        const bdSeq = bdSeqOf(p, 'NBIRTH');
        // tck-id-payloads-nbirth-bdseq / -nbirth-timestamp: every NBIRTH carries its connection's bdSeq
        // and the time it was published; both the same: the very birth, read already.
        const read = (x: NodeSession | undefined) => x !== undefined && x.bdSeq === bdSeq && p.timestamp !== undefined && x.bornAt === p.timestamp;
        if (read(s) || this.host.held.previousOf(k).some((x) => read(x.s))) throw duplicate(t, `the birth of bdSeq ${bdSeq} at ${p.timestamp} was read already`);
        // Published before the NBIRTH of the newest session known: an older session's birth, kept
        // among the previous ones, the current one left in force. With none current (an NBIRTH
        // refused, or an NDEATH, ended it), the newest is the previous one born last
        // (tck-id-payloads-nbirth-timestamp: every NBIRTH carries the time it was published, on the
        // edge node's one clock): taken for current, an older birth took its place, the death of the
        // last birth taken recorded at its time, and what the edge node sent next read against its aliases.
        // Newer still, an NBIRTH refused since (previous.ts Previous.refusedAt): the edge node's session is
        // the one it began, and a birth published before it, taken for current, read what the edge
        // node sent next against its aliases. Any NBIRTH refused lately counts (boundaries.ts), one with
        // no session left before it too (an older birth sent again refused, dropping them), and the
        // one read back after a restart (Previous.refusedAt).
        const refusedAt = s ? undefined : Math.max(this.host.held.refusedOf(k)?.refusedAt ?? -Infinity, this.host.held.boundaries.latestAt(k) ?? -Infinity);
        const newest = s ? s.bornAt : Math.max(-Infinity, refusedAt ?? -Infinity, ...this.host.held.previousOf(k).map((x) => x.s.bornAt ?? -Infinity));
        const older = p.timestamp !== undefined && newest !== undefined && p.timestamp < newest;
        // No newer birth (none, or one of an earlier connection): it starts the current session.
        if ((!s || current) && !older) return { out: this.host.process(t, p, now, undefined, digest), previous: false };
        inPrevious = true;
        this.olderBirth(t, p, now, out, digest);
        return { out, previous: true };
      }
      if (p.seq === undefined) throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `${t.type} without seq`);
      const into = this.sessionOf(k, p, current ? s : undefined);
      // Published before the NBIRTH of every session it could be read in (the payload timestamp is
      // the time of publishing, §6.4.5, on the edge node's one clock): sent in an older session still,
      // whose births are no longer kept (more reconnections than LIMITS.sparkplugPreviousSessionsPerNode,
      // or ended past the window). Refused rather than read against births, and aliases, that did not
      // exist when it was sent.
      if (into === 'older') {
        throw new FieldStreamError('SPARKPLUG_NOT_BORN', `${t.type} of ${t.group}/${t.edge} sent again, published at ${p.timestamp}, before the birth of every session kept: of an older session, no longer known`);
      }
      // Published after an NBIRTH refused that came after the birth of the session it would be read
      // in (boundaries.ts): of the session that refused birth began, whose aliases are unknown. With
      // none current, read as any message (not born, a rebirth asked); else refused, the current
      // session what a rebirth would renew.
      if (into === 'refused') {
        if (!s) return { out: this.host.process(t, p, now, connection, digest), previous: false };
        throw new FieldStreamError('SPARKPLUG_NOT_BORN', `${t.type} of ${t.group}/${t.edge} sent again, published at ${p.timestamp}, after an NBIRTH refused and before the next birth taken: of a session whose aliases are unknown`);
      }
      const inCurrent = into !== undefined && into === s;
      // Published at or after an NBIRTH refused since every session it could be read in was born
      // (none current: a birth taken since is), so in the session that birth began, whose aliases
      // are unknown: read as any message (not born, a rebirth asked), never against an older birth's.
      const refusedAt = s ? undefined : this.host.held.refusedOf(k)?.refusedAt;
      if (refusedAt !== undefined && p.timestamp !== undefined && p.timestamp >= refusedAt) return { out: this.host.process(t, p, now, connection, digest), previous: false };
      if (strict) {
        // Neither a duplicate nor the next seq of the session it was sent in: read as any message is.
        if (!into || into.stale) return { out: this.host.process(t, p, now, connection, digest), previous: false };
        if (behind(into.seq, p.seq)) {
          if (into.digests.read(p.seq, digest)) throw duplicate(t, `seq ${p.seq} with the bytes read at it was read already (its session's last is ${into.seq})`);
          return { out: this.host.process(t, p, now, connection, digest), previous: false };
        }
        if (p.seq !== (into.seq + 1) % 256) {
          inPrevious = true;
          into.stale = true;
          return { out: this.host.process(t, p, now, connection, digest), previous: false };
        }
      }
      if (into && (into.seq - p.seq + 256) % 256 < SEQ_BEHIND) throw duplicate(t, `seq ${p.seq} was read already (its session's last is ${into.seq})`);
      if (inCurrent) return { out: this.host.process(t, p, now, undefined, digest), previous: false };
      if (!into) throw new FieldStreamError('SPARKPLUG_NOT_BORN', `${t.type} of ${t.group}/${t.edge} sent again after its new NBIRTH, of a session no longer known`);
      if (into.stale) throw new FieldStreamError('SPARKPLUG_NOT_BORN', `${t.type} of ${t.group}/${t.edge} sent again after its new NBIRTH, of a previous session with a gap`);
      inPrevious = true;
      const expected = (into.seq + 1) % 256;
      if (p.seq !== expected) {
        into.stale = true;
        throw new FieldStreamError('SPARKPLUG_SEQ_GAP', `${t.type} of ${t.group}/${t.edge} sent again after its new NBIRTH has seq ${p.seq}, the next of the previous session it was sent in is ${expected}`);
      }
      // A device not born in that session yet: none of its devices' deaths, recorded at its end, was its.
      const unborn = t.type === 'DBIRTH' && !into.devices.has(t.device as string);
      try {
        this.host.take(into, t, p, p.seq, now, out, false, digest);
        if (unborn) {
          const end = this.endOf(k, into);
          if (end !== undefined) devicesDied(t, [t.device as string], end, out);
        }
      } catch (err) {
        if (err instanceof FieldStreamError && err.code === 'SPARKPLUG_UNKNOWN_METRIC') into.stale = true;
        throw err;
      }
    } catch (err) {
      if (!(err instanceof FieldStreamError)) throw err;
      out.readings = [];
      out.events = [];
      out.refused = err;
    } finally {
      if (inPrevious) this.host.held.recount(k, out);
    }
    return { out, previous: true };
  }

  /**
   * The session a message sent again was sent in: of `current` (the current session, unless its NBIRTH
   * came on the connection the message comes on) and the previous sessions kept, the one born last at
   * or before the message's payload timestamp. Sparkplug B 3.0.0 §6.4.5: a payload's timestamp is the
   * time it was published (tck-id-payloads-nbirth-timestamp, -ndata-timestamp, -dbirth-timestamp,
   * -ddata-timestamp), on the edge node's clock, the one its births' timestamps come from; each new
   * MQTT connection starts a session with an NBIRTH, its bdSeq that of the connection's will
   * (tck-id-payloads-nbirth-bdseq-repeat, -ndeath-bdseq), its seq starting again; data messages carry
   * neither the bdSeq nor anything else naming their session, and their seq (0–255, wrapping;
   * tck-id-payloads-sequence-num-incrementing) starts again in every session. So the timestamp is
   * what places a message sent again across several reconnections in its session: after the birth it
   * was sent under, before the next. A session born later than the message was published is never
   * its own; when every one kept was: 'older' (its own no longer kept). Without a timestamp (which
   * §6.4.5 does not allow), or when no session kept has a birth timestamp at or before it but one has
   * none: the current session, else the previous one born last. An NBIRTH refused (boundaries.ts)
   * after that birth and at or before the message is a bound too: the message was published in the
   * session that birth began, whose aliases could not be read: 'refused'.
   */
  private sessionOf(k: string, p: SparkplugPayload, current: NodeSession | undefined): NodeSession | 'older' | 'refused' | undefined {
    const candidates = this.host.held.previousOf(k).map((e) => e.s);
    if (current) candidates.push(current);
    const fallback = candidates.at(-1);
    if (p.timestamp === undefined) return fallback;
    let best: NodeSession | undefined;
    for (const c of candidates) if (c.bornAt !== undefined && c.bornAt <= p.timestamp && (best?.bornAt === undefined || c.bornAt >= best.bornAt)) best = c;
    if (best) return this.host.held.boundaries.between(k, best.bornAt as number, p.timestamp) ? 'refused' : best;
    if (fallback === undefined) return undefined;
    return candidates.some((c) => c.bornAt === undefined) ? fallback : 'older';
  }

  /**
   * When the devices of `into`, a previous session of `k`, died: a device its DBIRTH sent again (read)
   * bears in it dies then too, after its sparkplug.dbirth, as it would have with the others had the
   * DBIRTH come before that end. Left online, nothing later recorded its death (the birth and the
   * death that end its session are past) and it stayed online downstream, born in a session over
   * already. The time its other devices were recorded dead (NodeSession.diedAt: the NBIRTH that replaced
   * it, or its NDEATH's arrival); without one recorded, the birth of the session born after it (an
   * older NBIRTH sent again, olderBirth, that none replaced; a session read back from a store file
   * written before it was saved there), else when it ended. None (undefined) for one a refused NBIRTH ended, or one current at a restart
   * (previous.ts Previous.awaitsDeath), whose devices die with its NDEATH or the next birth taken
   * (lifecycle.ts), this one with them.
   */
  private endOf(k: string, into: NodeSession): number | undefined {
    const list = this.host.held.previousOf(k);
    const i = list.findIndex((e) => e.s === into);
    const e = list[i];
    if (e === undefined || e.awaitsDeath) return undefined;
    if (into.diedAt !== undefined) return into.diedAt;
    return (list[i + 1]?.s ?? this.host.sessions.get(k))?.bornAt ?? e.at;
  }

  /**
   * An NBIRTH sent again after a newer one (see read): the birth of a session older than the
   * current, kept among the previous sessions (by its timestamp), so that what it sent after it is
   * read in it. Its values and its nbirth event are stored; the current session is left as it is.
   * Refused, it leaves no previous session: what follows it cannot be told from that session's
   * messages. But the last birth taken, if it awaits its death (previous.ts Previous.awaitsDeath), stays:
   * born after this one (see read), it takes none of that session's messages
   * (sessionOf), and its NDEATH, or the next birth taken, still records its devices' deaths.
   */
  private olderBirth(t: SparkplugTopic, p: SparkplugPayload, now: number, out: HostOutcome, digest: Digest | undefined): void {
    const k = key(t.group, t.edge);
    try {
      if (p.seq === undefined) throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', 'NBIRTH without seq');
      const bdSeq = bdSeqOf(p, 'NBIRTH');
      const defs = definitions(p.metrics.filter((m) => m.name !== BD_SEQ));
      nameDefinitions(defs, { group: t.group, edge: t.edge, device: undefined });
      this.host.held.roomPrevious(`NBIRTH of ${t.group}/${t.edge} sent again`, defs.bytes + SEQ_DIGESTS_BYTES, k, 0, defs.bytes + SEQ_DIGESTS_BYTES);
      const s: NodeSession = { bdSeq, seq: p.seq, defs, devices: new Map(), stale: false, held: new Map(), heldSince: undefined, bornAt: p.timestamp, ...births(p, digest) };
      this.host.held.keepPrevious(k, s, now);
      this.host.fields(t, p, defs, now, out, (m) => m.name !== BD_SEQ);
      out.events.push(lifecycleEvent('nbirth', t, p.timestamp ?? now, { bdSeq, metrics: defs.byName.size }));
    } catch (err) {
      this.host.held.dropPrevious(k, true);
      throw err;
    }
  }
}
