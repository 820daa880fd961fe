import type { EventPayload, TimeseriesPayload } from '../../../../shared/contract/payloads.ts';
import { FieldStreamError, type ErrorCode } from '../../../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../../../shared/limits.ts';
import { lifecycleEvent, toReadings, type FieldAt } from './mapping.ts';
import { FieldNames, nameDefinitions, type Collision } from './names.ts';
import type { SparkplugMetric, SparkplugPayload } from './payload.ts';
import { DATA_TYPES } from './proto.ts';
import { emptyOutcome, ReorderBuffers } from './reorder.ts';
import { behind, SEQ_DIGESTS_BYTES, SeqDigests, type Digest } from './duplicates.ts';
import { definitions, resolve, type Definitions } from './definitions.ts';
import type { SparkplugTopic } from './topic.ts';
import { metricValue } from './values.ts';

/**
 * The host application's view of the edge nodes it follows (Sparkplug 3.0.0 §5, "Operational
 * Behavior", and §6.4 for the payload rules), one state per edge node and per device:
 *
 * - NBIRTH starts a session: its `bdSeq` metric, its `seq`, and each metric's name, alias and data
 *   type (§5.7; aliases unique, §6.4.7 "alias"). It replaces the previous session of that edge node
 *   with its devices, which must be born again (DBIRTH) after it (§5.9).
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
 *   another bdSeq is the will of an older connection, delivered late): otherwise it is ignored.
 *
 * The rebirth requests for one edge node are at least `rebirthMinIntervalMs` apart, so a node that
 * keeps gapping is not flooded with commands. Pure: no I/O, the time passed in.
 */
export interface NodeSession {
  bdSeq: number;
  /** the last seq received */
  seq: number;
  defs: Definitions;
  devices: Map<string, Definitions>;
  /** a gap was seen: data is refused until the next NBIRTH */
  stale: boolean;
  /** messages that arrived ahead of the next seq, by their seq (reorder.ts) */
  held: Map<number, HeldMessage>;
  /** when the reorder timeout of the held messages started (§5.9), undefined when none are held */
  heldSince: number | undefined;
  /** the connection its NBIRTH came on, not sent again (see Via); undefined: unknown, or sent again */
  born?: object | undefined;
  /** its NBIRTH's timestamp: with bdSeq, what tells that NBIRTH sent again from a rebirth (see resent) */
  bornAt?: number | undefined;
  /** the digests of the messages it read, by seq: what tells one sent again without DUP (duplicates.ts) */
  digests: SeqDigests;
  /** the digest of its NBIRTH's payload (duplicates.ts); undefined: unknown, or without a timestamp */
  birthDigest?: Digest | undefined;
}

/**
 * Where a message came from, on an input whose publishers send again what they got no PUBACK for
 * (the local MQTT input, QoS 1). MQTT 3.1.1 §4.4 and §3.3.1.1: a client sends a PUBLISH again only
 * on a later connection than the one it first sent it on, with DUP set.
 */
export interface Via {
  /** the MQTT connection (compared by identity) */
  connection: object;
  /** the PUBLISH's DUP flag (MQTT 3.1.1 §3.3.1.1): sent before, on an earlier connection */
  dup: boolean;
}

export interface HeldMessage {
  t: SparkplugTopic;
  p: SparkplugPayload;
  /** what it takes in memory, estimated (reorder.ts) */
  bytes: number;
  /** the digest of its payload (duplicates.ts) */
  digest?: Digest | undefined;
}

export interface HostOutcome {
  readings: TimeseriesPayload[];
  events: EventPayload[];
  /** whether to send this edge node a rebirth request now */
  rebirth: boolean;
  /** the message was refused, or (SPARKPLUG_DEATH_STALE) ignored: why */
  refused?: FieldStreamError | undefined;
  /** metrics left out of the readings (null, not a scalar type, transient, name too long) */
  skipped: number;
  /** the message arrived ahead of its seq and is held for the missing ones (nothing else to do yet) */
  held: boolean;
  /** held messages discarded (each one counted under `code`), and why */
  dropped?: { code: ErrorCode; count: number; message: string } | undefined;
  /** field names this birth's metrics share with other metrics: they were given suffixed names (names.ts) */
  collisions?: Collision[] | undefined;
  /** held messages this one let through, in seq order, each with its own outcome */
  released: Array<{ topic: SparkplugTopic; out: HostOutcome }>;
  /**
   * Puts the edge node's session back as it was before this message (and the held ones it let
   * through): set by handle(), called by the session when the queue did not take what they carried.
   */
  undo?: (() => void) | undefined;
}

/** An edge node's session as it was before a message (see SparkplugHost.handle). */
interface Before {
  s: NodeSession | undefined;
  fields?: Pick<NodeSession, 'bdSeq' | 'seq' | 'defs' | 'stale'>;
  /** every device's definitions, when held messages (of any device) may be let through */
  devices?: Map<string, Definitions>;
  /** the definitions of the device the message is about (undefined: not born) */
  device?: [string, Definitions | undefined];
  /** its previous session (SparkplugHost.previous), as it was too: a message sent again may be read in it */
  previous?: { p: Previous; fields: Pick<NodeSession, 'seq' | 'stale'>; device?: [string, Definitions | undefined] } | undefined;
}

/** An edge node's session a newer NBIRTH (or its NDEATH) ended, kept for what it sent being sent again. */
interface Previous {
  s: NodeSession;
  /** when it ended */
  at: number;
}

/**
 * How far behind the last seq read a seq sent again is taken for one read already (a duplicate):
 * half of seq's 256 values (Sparkplug B 3.0.0, payload `seq`: 0-255, one more each message, 255
 * wrapping to 0; tck-id-payloads-sequence-num-incrementing). A seq 1 to 128 ahead is one not read
 * yet. So at most 128 messages an edge node sent may be on their way unacknowledged at once: Eclipse
 * Paho's default is 20 (max_inflight_messages).
 */
const SEQ_BEHIND = 128;

export interface HostOptions {
  rebirthMinIntervalMs: number;
  maxEdgeNodes?: number;
  /** devices born at once per edge node at most (default LIMITS.sparkplugMaxDevicesPerNode) */
  maxDevicesPerNode?: number;
  /** milliseconds a message ahead of its seq is held for the missing ones; 0 (the default): none held */
  reorderTimeoutMs?: number;
  /** messages held per edge node at most (default LIMITS.sparkplugReorderMaxHeld) */
  reorderMaxHeld?: number;
  /** bytes of messages held over every edge node at most, estimated (default LIMITS.sparkplugReorderMaxHeldBytes) */
  reorderMaxHeldBytes?: number;
  /** bytes of birth definitions held over every edge node and device, estimated (default LIMITS.sparkplugDefinitionsMaxBytes) */
  maxDefinitionsBytes?: number;
  /**
   * The field names every current birth declares, shared by the Sparkplug inputs of one field client
   * (names.ts): both write into its one device's readings. Default: this host's own.
   */
  names?: FieldNames | undefined;
  /**
   * Publishers send again what they got no PUBACK for (the local MQTT input): each edge node's
   * previous session is kept for it (see resent). Without (a plant's broker, QoS 0, nothing sent
   * again), a session ended is dropped at once.
   */
  resends?: boolean;
}

const BD_SEQ = 'bdSeq';

export class SparkplugHost {
  private readonly sessions = new Map<string, NodeSession>();
  private readonly rebirthAt = new Map<string, number>();
  /** the estimated bytes of each edge node's definitions (its own and its devices'), and their sum: see recount */
  private readonly defBytes = new Map<string, number>();
  private defTotal = 0;
  /** the field names every current birth declares (names.ts; HostOptions.names), and the births this host registered there, by edge node (device, or null) */
  private readonly names: FieldNames;
  private readonly named = new Map<string, Map<string | null, Definitions>>();
  /**
   * Each edge node's previous session, for TIMINGS.sparkplugResendWindowMs after it ended, oldest
   * first: what the edge node sends again after its new NBIRTH (Eclipse Paho's order) belongs to it
   * (see resent). Its definitions count against LIMITS.sparkplugDefinitionsMaxBytes with the
   * current ones (prevBytes, prevTotal); a current birth that needs the room drops the oldest.
   */
  private readonly previous = new Map<string, Previous>();
  private readonly prevBytes = new Map<string, number>();
  private prevTotal = 0;
  readonly reorder: ReorderBuffers;

  constructor(private readonly options: HostOptions) {
    this.names = options.names ?? new FieldNames();
    this.reorder = new ReorderBuffers(
      {
        timeoutMs: options.reorderTimeoutMs ?? 0,
        maxHeld: options.reorderMaxHeld ?? LIMITS.sparkplugReorderMaxHeld,
        maxHeldBytes: options.reorderMaxHeldBytes ?? LIMITS.sparkplugReorderMaxHeldBytes,
      },
      (k) => this.sessions.get(k),
      (group, edge, now, reason, out) => this.askRebirth(group, edge, now, reason, out),
      (t, p, now, digest) => this.process(t, p, now, undefined, digest),
    );
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

  /** The previous session of an edge node (kept for what it sends again: see resent), for tests. */
  previousSession(group: string, edge: string): Readonly<NodeSession> | undefined {
    return this.previous.get(key(group, edge))?.s;
  }

  /** Bytes of birth definitions held now over every edge node and device (estimated: Definitions.bytes), previous sessions' included. */
  get definitionsBytes(): number {
    return this.defTotal + this.prevTotal;
  }

  /**
   * One message; with it, the held messages it lets through (`released`). `via`: where it came from,
   * on an input whose publishers send again what was not acknowledged (see resent). `digest`: of its
   * payload's bytes, what tells a message sent again without DUP from a new one (duplicates.ts).
   */
  handle(t: SparkplugTopic, p: SparkplugPayload, now: number, via?: Via, digest?: Digest): HostOutcome {
    const k = key(t.group, t.edge);
    this.expirePrevious(now);
    const before = this.before(k, t);
    const r = via && this.sentAgain(k, t, via) ? this.resent(t, p, now, via.connection, !via.dup, digest) : undefined;
    const out = r ? r.out : this.process(t, p, now, via?.connection, digest);
    if (!out.held && t.type !== 'NDEATH' && !r?.previous) this.reorder.release(k, now, out);
    out.undo = () => this.restore(k, before);
    return out;
  }

  /**
   * Whether a message is read as sent again on a new connection (see resent): flagged DUP, or (mqtt.js
   * sends again without DUP, duplicates.ts) a data message while its edge node has no current session
   * and its previous one was born on another connection. Sparkplug B 3.0.0 ("Edge Node Session
   * Establishment") has an edge node publish its NBIRTH first on every connection: a data message on a
   * connection before its NBIRTH was sent on an earlier one, whose session the will (NDEATH) ended.
   */
  private sentAgain(k: string, t: SparkplugTopic, via: Via): boolean {
    if (t.type === 'NDEATH') return false;
    if (via.dup) return true;
    if (t.type === 'NBIRTH' || this.sessions.has(k)) return false;
    const prev = this.previous.get(k);
    return prev !== undefined && prev.s.born !== via.connection;
  }

  /**
   * A message sent again (DUP, MQTT 3.1.1 §3.3.1.1), so first sent on an earlier connection. Read in
   * the session it was sent in, by its seq, so that nothing acknowledged goes unstored:
   *
   * - The current session, unless its NBIRTH came on this very connection (not sent again): then it
   *   began after the message was first sent, and the message is its previous session's (Eclipse
   *   Paho publishes the NBIRTH of its new connection, then sends again what it got no PUBACK for).
   * - A seq at most SEQ_BEHIND behind the last one that session read (or equal to it) was read
   *   already: a duplicate of a message stored (or refused and counted) whose PUBACK was lost. It is
   *   counted and logged (SPARKPLUG_DUPLICATE) and changes nothing: read as a gap, it made the
   *   session stale, and what followed was refused, acknowledged and lost until the rebirth.
   * - The next seq of the previous session: read against that session's births (its aliases), its
   *   seq taken, the current session left as it is. Read against the current one it was a seq gap,
   *   acknowledged unstored (or, by chance the next seq, read against the wrong births).
   * - An NBIRTH is a duplicate only with the bdSeq and the timestamp of a birth read (a rebirth asked
   *   by NCMD keeps its connection's bdSeq, §5.12, but not its timestamp; one without a timestamp,
   *   which §6.4 does not allow, is never taken for one: storing twice loses nothing). Another sent
   *   after the current one is an older session's birth, now the previous one, its values stored.
   *
   * What is neither is refused as any message would be (a gap in the previous session makes only it
   * stale; no rebirth is asked, the current session being what a rebirth would renew).
   *
   * `strict`: not flagged DUP (mqtt.js, see sentAgain; no current session then): a seq behind is a
   * duplicate only with the bytes read at that seq (duplicates.ts); what is neither a duplicate nor the
   * previous session's next seq is read as any message is (process: not born, a rebirth asked).
   */
  private resent(t: SparkplugTopic, p: SparkplugPayload, now: number, connection: object, strict = false, digest?: Digest): { out: HostOutcome; previous: boolean } {
    const k = key(t.group, t.edge);
    const s = this.sessions.get(k);
    const current = s !== undefined && s.born !== connection;
    const out = emptyOutcome();
    // Whether the previous session may change (a birth or a message read in it): counted again then.
    let inPrevious = false;
    try {
      if (t.type === 'NBIRTH') {
        const bdSeq = bdSeqOf(p, 'NBIRTH');
        const read = (x: NodeSession | undefined) => x !== undefined && x.bdSeq === bdSeq && p.timestamp !== undefined && x.bornAt === p.timestamp;
        if (read(s) || (!current && read(this.previous.get(k)?.s))) throw duplicate(t, `the birth of bdSeq ${bdSeq} at ${p.timestamp} was read already`);
        // No newer birth (none, or one of an earlier connection): it starts the current session.
        if (!s || current) return { out: this.process(t, p, now, undefined, digest), previous: false };
        inPrevious = true;
        this.olderBirth(t, p, now, out, digest);
        return { out, previous: true };
      }
      if (p.seq === undefined) throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `${t.type} without seq`);
      const into = current ? s : this.previous.get(k)?.s;
      if (strict) {
        // Neither a duplicate nor the next seq of the session it was sent in: read as any message is.
        if (!into || into.stale) return { out: this.process(t, p, now, connection, digest), previous: false };
        if (behind(into.seq, p.seq)) {
          if (into.digests.read(p.seq, digest)) throw duplicate(t, `seq ${p.seq} with the bytes read at it was read already (its session's last is ${into.seq})`);
          return { out: this.process(t, p, now, connection, digest), previous: false };
        }
        if (p.seq !== (into.seq + 1) % 256) {
          inPrevious = true;
          into.stale = true;
          return { out: this.process(t, p, now, connection, digest), previous: false };
        }
      }
      if (into && (into.seq - p.seq + 256) % 256 < SEQ_BEHIND) throw duplicate(t, `seq ${p.seq} was read already (its session's last is ${into.seq})`);
      if (current) return { out: this.process(t, p, now, undefined, digest), previous: false };
      if (!into) throw new FieldStreamError('SPARKPLUG_NOT_BORN', `${t.type} of ${t.group}/${t.edge} sent again after its new NBIRTH, of a session no longer known`);
      if (into.stale) throw new FieldStreamError('SPARKPLUG_NOT_BORN', `${t.type} of ${t.group}/${t.edge} sent again after its new NBIRTH, of a previous session with a gap`);
      inPrevious = true;
      const expected = (into.seq + 1) % 256;
      if (p.seq !== expected) {
        into.stale = true;
        throw new FieldStreamError('SPARKPLUG_SEQ_GAP', `${t.type} of ${t.group}/${t.edge} sent again after its new NBIRTH has seq ${p.seq}, its previous session's next is ${expected}`);
      }
      try {
        this.take(into, t, p, p.seq, now, out, false, digest);
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
      if (inPrevious) this.recount(k, out);
    }
    return { out, previous: true };
  }

  /**
   * An NBIRTH sent again after a newer one (see resent): the birth of a session older than the
   * current, which becomes the previous session, so that what it sent after it is read in it. Its
   * values and its nbirth event are stored; the current session is left as it is. Refused, it leaves
   * no previous session: what follows it cannot be told from that session's messages.
   */
  private olderBirth(t: SparkplugTopic, p: SparkplugPayload, now: number, out: HostOutcome, digest: Digest | undefined): void {
    const k = key(t.group, t.edge);
    try {
      if (p.seq === undefined) throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', 'NBIRTH without seq');
      const bdSeq = bdSeqOf(p, 'NBIRTH');
      const defs = definitions(p.metrics.filter((m) => m.name !== BD_SEQ));
      nameDefinitions(defs, { group: t.group, edge: t.edge, device: undefined });
      this.roomPrevious(`NBIRTH of ${t.group}/${t.edge} sent again`, defs.bytes + SEQ_DIGESTS_BYTES, k, this.prevBytes.get(k) ?? 0);
      const s: NodeSession = { bdSeq, seq: p.seq, defs, devices: new Map(), stale: false, held: new Map(), heldSince: undefined, bornAt: p.timestamp, ...births(p, digest) };
      this.keepPrevious(k, s, now);
      this.fields(t, p, defs, now, out, (m) => m.name !== BD_SEQ);
      out.events.push(lifecycleEvent('nbirth', t, p.timestamp ?? now, { bdSeq, metrics: defs.byName.size }));
    } catch (err) {
      this.previous.delete(k);
      throw err;
    }
  }

  /** Keeps `s` as the previous session of `k` (the newest: last in the map), within LIMITS.sparkplugMaxEdgeNodes. */
  private keepPrevious(k: string, s: NodeSession, now: number): void {
    this.previous.delete(k);
    if (!this.options.resends) return;
    for (const [other] of this.previous) {
      if (this.previous.size < this.maxEdgeNodes) break;
      this.previous.delete(other);
      this.recount(other);
    }
    this.previous.set(k, { s, at: now });
  }

  /** Previous sessions ended TIMINGS.sparkplugResendWindowMs ago: nothing of theirs is sent again so late. */
  private expirePrevious(now: number): void {
    for (const [k, e] of this.previous) {
      if (now - e.at < TIMINGS.sparkplugResendWindowMs) break;
      this.previous.delete(k);
      this.recount(k);
    }
  }

  /**
   * Current births come first: previous sessions are dropped, oldest first (`keep`'s last), until
   * every definition held fits LIMITS.sparkplugDefinitionsMaxBytes again.
   */
  private fitPrevious(keep?: string): void {
    const max = this.options.maxDefinitionsBytes ?? LIMITS.sparkplugDefinitionsMaxBytes;
    const keys = [...this.previous.keys()].filter((x) => x !== keep);
    if (keep !== undefined && this.previous.has(keep)) keys.push(keep);
    for (const k of keys) {
      if (this.defTotal + this.prevTotal <= max) return;
      this.previous.delete(k);
      this.recount(k);
    }
  }

  /** A birth read into a previous session: room made by dropping other previous sessions, else refused. `freed`: the bytes it replaces. */
  private roomPrevious(what: string, bytes: number, k: string, freed: number): void {
    const max = this.options.maxDefinitionsBytes ?? LIMITS.sparkplugDefinitionsMaxBytes;
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

  /**
   * What a message may change of its edge node's session, kept so that it can be undone: the session
   * object (an NBIRTH replaces it, an NDEATH removes it), its seq, stale flag and definitions, and the
   * definitions of the device it is about (all devices' when held messages may be let through).
   * O(1) per message but for that last case (a reorder timeout, on the plant's broker only).
   */
  private before(k: string, t: SparkplugTopic): Before {
    const s = this.sessions.get(k);
    const p = this.previous.get(k);
    const previous = p && {
      p,
      fields: { seq: p.s.seq, stale: p.s.stale },
      ...(t.device !== undefined ? { device: [t.device, p.s.devices.get(t.device)] as [string, Definitions | undefined] } : {}),
    };
    if (!s) return { s, previous };
    return {
      s,
      previous,
      fields: { bdSeq: s.bdSeq, seq: s.seq, defs: s.defs, stale: s.stale },
      ...(s.held.size > 0 ? { devices: new Map(s.devices) } : {}),
      ...(t.device !== undefined ? { device: [t.device, s.devices.get(t.device)] as [string, Definitions | undefined] } : {}),
    };
  }

  private restore(k: string, b: Before): void {
    try {
      this.putBack(k, b);
    } finally {
      this.recount(k);
    }
  }

  private putBack(k: string, b: Before): void {
    if (b.previous) {
      const { p, fields, device } = b.previous;
      if (this.previous.get(k) !== p) this.previous.set(k, p);
      Object.assign(p.s, fields);
      if (device) {
        if (device[1]) p.s.devices.set(device[0], device[1]);
        else p.s.devices.delete(device[0]);
      }
    } else this.previous.delete(k);
    if (!b.s) {
      this.sessions.delete(k);
      return;
    }
    this.sessions.set(k, b.s);
    Object.assign(b.s, b.fields);
    if (b.devices) b.s.devices = b.devices;
    if (b.device) {
      const [device, defs] = b.device;
      if (defs) b.s.devices.set(device, defs);
      else b.s.devices.delete(device);
    }
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
          if (this.birthRead(key(t.group, t.edge), digest)) throw duplicate(t, `the birth of these bytes was read already`);
          try {
            this.nodeBirth(t, p, now, out, connection, digest);
          } catch (err) {
            this.nodeBirthRefused(t, now, out);
            throw err;
          }
          break;
        case 'NDEATH':
          this.nodeDeath(t, p, now, out);
          break;
        case 'NCMD':
        case 'DCMD':
          break; // commands are for edge nodes (ours among them); a host reads none
        default:
          this.sessionMessage(t, p, now, out, digest);
      }
    } catch (err) {
      if (!(err instanceof FieldStreamError)) throw err;
      out.readings = [];
      out.refused = err;
      // A metric its birth did not declare: that birth no longer describes what the edge node sends
      // (one was missed, or its aliases changed), so its data is refused until the NBIRTH the
      // rebirth request brings, as after a gap, rather than resolved against it.
      if (err.code === 'SPARKPLUG_UNKNOWN_METRIC') this.markStale(t, out);
      // Whatever the birth declared no longer describes what the edge node sends: ask again (§5.12,
      // NCMD Node Control/Rebirth). A birth refused for what it holds (birthRefused) asks too: the
      // old definitions were dropped with it. A birth past a bound does not: it would come back the same.
      if (err.code === 'SPARKPLUG_UNKNOWN_METRIC' || err.code === 'SPARKPLUG_NOT_BORN' || err.code === 'SPARKPLUG_SEQ_GAP' || birthRefused(t, err)) {
        if (t.type !== 'DDEATH') this.askRebirth(t.group, t.edge, now, err.message, out);
      }
    } finally {
      this.recountAfter(t, out);
    }
    return out;
  }

  /** Births and deaths change what an edge node's definitions hold: counted again after each (data never does). */
  private recountAfter(t: SparkplugTopic, out: HostOutcome): void {
    if (t.type === 'NBIRTH' || t.type === 'NDEATH' || t.type === 'DBIRTH' || t.type === 'DDEATH') this.recount(key(t.group, t.edge), out);
  }

  /**
   * The bytes of one edge node's definitions counted again, and their sum with them: O(its devices),
   * after a birth or a death only. Counted from what the session holds rather than kept up step by
   * step, so that every way it changes (a birth replacing another, a refusal dropping one, an undo
   * putting an older session back) leaves the sum right.
   */
  private recount(k: string, out?: HostOutcome): void {
    const s = this.sessions.get(k);
    const was = this.defBytes.get(k) ?? 0;
    const n = s ? bytesOf(s) : 0;
    if (s) this.defBytes.set(k, n);
    else this.defBytes.delete(k);
    this.defTotal += n - was;
    // The previous session's are counted apart: a current birth may drop them for room (fitPrevious).
    const p = this.previous.get(k)?.s;
    const pWas = this.prevBytes.get(k) ?? 0;
    const pn = p ? bytesOf(p) : 0;
    if (p) this.prevBytes.set(k, pn);
    else this.prevBytes.delete(k);
    this.prevTotal += pn - pWas;
    // Only current births name fields: a previous session's metrics go to the names they had (names.ts, field).
    this.rename(k, s, out);
  }

  /**
   * The field names of one edge node's births brought in line with what its session holds now: those
   * of a birth no longer in force forgotten, those of a new one taken (names.ts), each birth compared
   * by identity, so O(its devices). The names a new birth shares with other metrics go into `out`.
   */
  private rename(k: string, s: NodeSession | undefined, out: HostOutcome | undefined): void {
    const was = this.named.get(k);
    const now = new Map<string | null, Definitions>();
    if (s) {
      now.set(null, s.defs);
      for (const [device, defs] of s.devices) now.set(device, defs);
    }
    if (was) for (const [unit, defs] of was) if (now.get(unit) !== defs) this.names.remove(defs);
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
   * the bytes of the definitions it would replace.
   */
  private room(what: string, bytes: number, freed: number): void {
    const max = this.options.maxDefinitionsBytes ?? LIMITS.sparkplugDefinitionsMaxBytes;
    if (this.defTotal - freed + bytes <= max) return;
    throw new FieldStreamError(
      'SPARKPLUG_DEFINITIONS_FULL',
      `${what} refused: its definitions (about ${bytes} bytes) would take those held past ${max} bytes (${this.defTotal} held now)`,
    );
  }

  private markStale(t: SparkplugTopic, out: HostOutcome): void {
    const k = key(t.group, t.edge);
    const s = this.sessions.get(k);
    if (!s) return;
    s.stale = true;
    this.reorder.drop(k, 'SPARKPLUG_SEQ_GAP', `held messages of ${t.group}/${t.edge} discarded: it named a metric its birth did not declare`, out);
  }

  /**
   * An NBIRTH refused: the edge node has started a new session (§5.7) whose definitions could not be
   * read, so the old ones no longer name what it sends. Its session is ended: its data is refused
   * (SPARKPLUG_NOT_BORN) until a valid NBIRTH, rather than stored under the old birth's names.
   */
  private nodeBirthRefused(t: SparkplugTopic, now: number, out: HostOutcome): void {
    const k = key(t.group, t.edge);
    const s = this.sessions.get(k);
    if (!s) return;
    this.reorder.drop(k, 'SPARKPLUG_SEQ_GAP', `held messages of ${t.group}/${t.edge} discarded: its new NBIRTH was refused`, out);
    // Kept a while, as when a birth replaces it: what the edge node sends again after this one was sent in it.
    this.keepPrevious(k, s, now);
    this.sessions.delete(k);
  }

  private nodeBirth(t: SparkplugTopic, p: SparkplugPayload, now: number, out: HostOutcome, connection: object | undefined, digest: Digest | undefined): void {
    if (p.seq === undefined) throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', 'NBIRTH without seq');
    const bdSeq = bdSeqOf(p, 'NBIRTH');
    const defs = definitions(p.metrics.filter((m) => m.name !== BD_SEQ));
    nameDefinitions(defs, { group: t.group, edge: t.edge, device: undefined });
    const at = p.timestamp ?? now;
    const k = key(t.group, t.edge);
    if (!this.sessions.has(k) && this.sessions.size >= this.maxEdgeNodes) {
      throw new FieldStreamError('SPARKPLUG_TOO_MANY_EDGE_NODES', `NBIRTH of ${t.group}/${t.edge} refused: ${this.maxEdgeNodes} edge nodes are followed already`);
    }
    // It replaces the edge node's session, its devices' births with it.
    this.room(`NBIRTH of ${t.group}/${t.edge}`, defs.bytes + SEQ_DIGESTS_BYTES, this.defBytes.get(k) ?? 0);
    // A new session: what was held for the old one is of no use any more.
    this.reorder.drop(k, 'SPARKPLUG_SEQ_GAP', `held messages of ${t.group}/${t.edge} discarded: a new NBIRTH started its session`, out);
    // The old one is kept a while: what the edge node sends again after this birth was sent in it (resent).
    const old = this.sessions.get(k);
    if (old) this.keepPrevious(k, old, now);
    // In force before its values are read, so that they go to the fields its names get beside every
    // other metric followed (names.ts); a value that is refused ends it again.
    this.sessions.set(k, { bdSeq, seq: p.seq, defs, devices: new Map(), stale: false, held: new Map(), heldSince: undefined, born: connection, bornAt: p.timestamp, ...births(p, digest) });
    this.recount(k, out);
    this.fitPrevious(k);
    try {
      this.fields(t, p, defs, now, out, (m) => m.name !== BD_SEQ);
    } catch (err) {
      // Ended again; the session it replaced stays the previous one (nodeBirthRefused finds none to keep).
      this.sessions.delete(k);
      throw err;
    }
    out.events.push(lifecycleEvent('nbirth', t, at, { bdSeq, metrics: defs.byName.size }));
  }

  private nodeDeath(t: SparkplugTopic, p: SparkplugPayload, now: number, out: HostOutcome): void {
    const bdSeq = bdSeqOf(p, 'NDEATH');
    const s = this.sessions.get(key(t.group, t.edge));
    if (!s || s.bdSeq !== bdSeq) {
      throw new FieldStreamError(
        'SPARKPLUG_DEATH_STALE',
        `NDEATH of ${t.group}/${t.edge} with bdSeq ${bdSeq} ignored: ${s ? `the current birth has bdSeq ${s.bdSeq}` : 'no current birth'}`,
      );
    }
    this.reorder.drop(key(t.group, t.edge), 'SPARKPLUG_SEQ_GAP', `held messages of ${t.group}/${t.edge} discarded: its NDEATH ended its session`, out);
    // Kept a while: a connection lost (its will) leaves unacknowledged messages its edge node sends again.
    this.keepPrevious(key(t.group, t.edge), s, now);
    this.sessions.delete(key(t.group, t.edge));
    out.events.push(lifecycleEvent('ndeath', t, p.timestamp ?? now, { bdSeq }));
  }

  /** NDATA, DBIRTH, DDATA, DDEATH: within the session of a born edge node, in seq order. */
  private sessionMessage(t: SparkplugTopic, p: SparkplugPayload, now: number, out: HostOutcome, digest: Digest | undefined): void {
    const s = this.sessions.get(key(t.group, t.edge));
    if (!s) throw new FieldStreamError('SPARKPLUG_NOT_BORN', `${t.type} from edge node ${t.group}/${t.edge}, which has no current birth`);
    if (s.stale) throw new FieldStreamError('SPARKPLUG_NOT_BORN', `${t.type} from edge node ${t.group}/${t.edge}, whose rebirth is awaited after a gap`);
    if (p.seq === undefined) throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `${t.type} without seq`);
    const expected = (s.seq + 1) % 256;
    if (p.seq !== expected) {
      // The bytes of a message read at that seq: sent again without DUP (mqtt.js after a lost PUBACK,
      // duplicates.ts), not a gap. Its session goes on; it is not stored again.
      if (behind(s.seq, p.seq) && s.digests.read(p.seq, digest)) throw duplicate(t, `seq ${p.seq} with the bytes read at it was read already (the last is ${s.seq})`);
      if (this.reorder.hold(key(t.group, t.edge), s, { t, p, digest }, expected, now)) {
        out.held = true;
        return;
      }
      s.stale = true;
      this.reorder.drop(key(t.group, t.edge), 'SPARKPLUG_SEQ_GAP', `held messages of ${t.group}/${t.edge} discarded: seq ${p.seq} is a gap`, out);
      throw new FieldStreamError('SPARKPLUG_SEQ_GAP', `${t.type} of ${t.group}/${t.edge} has seq ${p.seq}, expected ${expected}`);
    }
    this.take(s, t, p, p.seq, now, out, true, digest);
  }

  /**
   * An NDATA, DBIRTH, DDATA or DDEATH carrying the next seq of session `s`: the current one
   * (`current`), or its previous one for a message sent again (resent), whose births' room is made
   * among the previous sessions only.
   */
  private take(s: NodeSession, t: SparkplugTopic, p: SparkplugPayload, seq: number, now: number, out: HostOutcome, current: boolean, digest: Digest | undefined): void {
    s.seq = seq;
    s.digests.set(seq, digest);
    const at = p.timestamp ?? now;
    if (t.type === 'NDATA') return this.fields(t, p, s.defs, now, out);
    const device = t.device as string;
    if (t.type === 'DBIRTH') {
      // A new device id past the bound is refused (its seq is taken: no gap, no rebirth, which would
      // only bring the same births again); a rebirth of a device already born is taken.
      const maxDevices = this.options.maxDevicesPerNode ?? LIMITS.sparkplugMaxDevicesPerNode;
      if (!s.devices.has(device) && s.devices.size >= maxDevices) {
        throw new FieldStreamError('SPARKPLUG_TOO_MANY_DEVICES', `DBIRTH of ${t.group}/${t.edge}/${device} refused: the edge node has ${maxDevices} devices born already`);
      }
      let defs: Definitions;
      try {
        defs = definitions(p.metrics);
        nameDefinitions(defs, { group: t.group, edge: t.edge, device });
        const what = `DBIRTH of ${t.group}/${t.edge}/${device}`;
        if (current) this.room(what, defs.bytes, s.devices.get(device)?.bytes ?? 0);
        else this.roomPrevious(`${what} sent again`, defs.bytes, key(t.group, t.edge), s.devices.get(device)?.bytes ?? 0);
        // In force before its values are read, as for an NBIRTH (nodeBirth).
        s.devices.set(device, defs);
        this.recount(key(t.group, t.edge), out);
        if (current) this.fitPrevious(key(t.group, t.edge));
        this.fields(t, p, defs, now, out);
      } catch (err) {
        // The device was born again with definitions that could not be read: the old ones no longer
        // name what it sends. Dropped, its DDATA is refused (not born) until a valid DBIRTH.
        s.devices.delete(device);
        throw err;
      }
      out.events.push(lifecycleEvent('dbirth', t, at, { metrics: defs.byName.size }));
      return;
    }
    const defs = s.devices.get(device);
    if (!defs) throw new FieldStreamError('SPARKPLUG_NOT_BORN', `${t.type} from device ${t.group}/${t.edge}/${device}, which has no current birth`);
    if (t.type === 'DDATA') return this.fields(t, p, defs, now, out);
    s.devices.delete(device);
    out.events.push(lifecycleEvent('ddeath', t, at));
  }

  /** The metrics of a birth or data message as fields of readings, resolved against `defs`. */
  private fields(t: SparkplugTopic, p: SparkplugPayload, defs: Definitions, now: number, out: HostOutcome, keep: (m: SparkplugMetric) => boolean = () => true): void {
    const fields: FieldAt[] = [];
    for (const m of p.metrics) {
      if (!keep(m)) continue;
      const def = resolve(m, defs, t);
      // §6.4.7 is_transient: a value not to be stored as history.
      if (m.isTransient) {
        out.skipped++;
        continue;
      }
      // The birth's data type, not the one a data message may repeat (§6.4.7: it MUST be in the
      // birth, tck-id-payloads-metric-datatype-req, and SHOULD NOT be in NDATA/DDATA,
      // -datatype-not-req): read by a type of its own, a Double's metric carried a string into
      // a number's field, and the database refused the reading with every metric of the message.
      // A value whose member contradicts the birth's type is refused (values.ts).
      const v = metricValue(def.datatype, m.raw, m.isNull);
      const field = this.names.field(def);
      if ('skip' in v || field === undefined) {
        out.skipped++;
        continue;
      }
      fields.push({ field, value: v.value, at: m.timestamp ?? p.timestamp ?? now });
    }
    out.readings.push(...toReadings(fields));
  }

  /**
   * Whether an NBIRTH of these bytes started the current session of `k` (duplicates.ts), one that
   * awaits no rebirth: a session that does (stale) takes any NBIRTH, so that an edge node answering
   * each request with the same bytes (a birth payload it keeps, timestamp and all) is born again rather
   * than asked without end. A previous session's NBIRTH sent again starts its session again: its values
   * stored twice, nothing lost.
   */
  private birthRead(k: string, digest: Digest | undefined): boolean {
    const s = this.sessions.get(k);
    return digest !== undefined && s !== undefined && !s.stale && s.birthDigest === digest;
  }

  private askRebirth(group: string, edge: string, now: number, reason: string, out: HostOutcome): void {
    const k = key(group, edge);
    const last = this.rebirthAt.get(k);
    if (last !== undefined && now - last < this.options.rebirthMinIntervalMs) return;
    if (last === undefined && this.rebirthAt.size >= this.maxEdgeNodes) {
      // Only the requests still inside their interval need remembering.
      for (const [other, at] of this.rebirthAt) if (now - at >= this.options.rebirthMinIntervalMs) this.rebirthAt.delete(other);
      if (this.rebirthAt.size >= this.maxEdgeNodes) return;
    }
    this.rebirthAt.set(k, now);
    out.rebirth = true;
    out.events.push(lifecycleEvent('rebirth_requested', { group, edge }, now, { reason }));
  }
}

/** A birth refused for what it holds (not for a bound, nor out of its session's order, nor read already). */
function birthRefused(t: SparkplugTopic, err: FieldStreamError): boolean {
  if (t.type !== 'NBIRTH' && t.type !== 'DBIRTH') return false;
  return !['SPARKPLUG_SEQ_GAP', 'SPARKPLUG_NOT_BORN', 'SPARKPLUG_TOO_MANY_EDGE_NODES', 'SPARKPLUG_TOO_MANY_DEVICES', 'SPARKPLUG_DEFINITIONS_FULL', 'SPARKPLUG_DUPLICATE'].includes(err.code);
}

/** An edge node's key: MQTT topics hold no U+0000 (MQTT 3.1.1 §1.5.3), so it splits back exactly. */
export const key = (group: string, edge: string) => `${group}\u0000${edge}`;

/** §6.4.7 / §5.7–5.8: the `bdSeq` metric of an NBIRTH or NDEATH, an Int64 or UInt64 (0–255 in use). */
function bdSeqOf(p: SparkplugPayload, type: string): number {
  const m = p.metrics.find((x) => x.name === BD_SEQ);
  if (!m) throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `${type} without a bdSeq metric`);
  const datatype = m.datatype ?? DATA_TYPES.UInt64;
  if (datatype !== DATA_TYPES.Int64 && datatype !== DATA_TYPES.UInt64) throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `${type} bdSeq is not an Int64 or UInt64`);
  const v = metricValue(datatype, m.raw, m.isNull);
  if ('skip' in v || typeof v.value !== 'number') throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `${type} bdSeq has no value`);
  return v.value;
}

/** What a session's definitions take, its devices' with them (Definitions.bytes), and its digests (duplicates.ts). */
function bytesOf(s: NodeSession): number {
  let n = s.defs.bytes + SEQ_DIGESTS_BYTES;
  for (const d of s.devices.values()) n += d.bytes;
  return n;
}

/** A message sent again that its session read already (see SparkplugHost.resent, duplicates.ts). */
function duplicate(t: SparkplugTopic, why: string): FieldStreamError {
  return new FieldStreamError('SPARKPLUG_DUPLICATE', `${t.type} of ${[t.group, t.edge, t.device].filter(Boolean).join('/')} sent again: ${why}; not stored again`);
}

/**
 * What a new session keeps to tell what is sent again: its digests, and its NBIRTH's digest when that
 * has a timestamp (§6.4.5: every NBIRTH has one; without, two births may be alike, and a rebirth is
 * never taken for a duplicate).
 */
function births(p: SparkplugPayload, digest: Digest | undefined): Pick<NodeSession, 'digests' | 'birthDigest'> {
  return { digests: new SeqDigests(), birthDigest: p.timestamp !== undefined ? digest : undefined };
}
