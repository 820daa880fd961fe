import type { EventPayload, TimeseriesPayload } from '../../../../shared/contract/payloads.ts';
import { FieldStreamError, type ErrorCode } from '../../../../shared/errors.ts';
import type { Definitions, MetricDef } from './definitions.ts';
import { SEQ_DIGESTS_BYTES, SeqDigests, type Digest } from './duplicates.ts';
import type { Collision, FieldNames } from './names.ts';
import type { Unit } from './naming.ts';
import type { SparkplugPayload } from './payload.ts';
import { DATA_TYPES } from './proto.ts';
import type { SparkplugTopic } from './topic.ts';
import { metricValue } from './values.ts';

/**
 * What the parts of the Sparkplug host (host.ts, lifecycle.ts, sequenced.ts, held.ts, resend.ts,
 * undo.ts, reorder.ts) share: an edge node's session, a message's origin and outcome, the host's options, and
 * the helpers they use.
 */

/** The host application's state of one edge node (host.ts). */
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
  /** its NBIRTH's timestamp: with bdSeq, what tells that NBIRTH sent again from a rebirth (resend.ts) */
  bornAt?: number | undefined;
  /** the digests of the messages it read, by seq: what tells one sent again without DUP (duplicates.ts) */
  digests: SeqDigests;
  /** the digest of its NBIRTH's payload (duplicates.ts); undefined: unknown, or without a timestamp */
  birthDigest?: Digest | undefined;
  /**
   * ended: when the devices it had born were recorded dead (lifecycle.ts: the time of the NBIRTH that
   * replaced it, or its NDEATH's arrival), the time a device born in it by a DBIRTH sent again after
   * that dies too (resend.ts); undefined: current, or ended with no death recorded yet
   */
  diedAt?: number | undefined;
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

/** The field a metric's value went to, and the seq of the message it was in (HostOutcome.used). */
export interface Used {
  field: string;
  seq: number | undefined;
}

export interface HostOutcome {
  readings: TimeseriesPayload[];
  events: EventPayload[];
  /** whether to send this edge node a rebirth request now */
  rebirth: boolean;
  /** the message was refused, or (SPARKPLUG_DEATH_STALE) ignored: why */
  refused?: FieldStreamError | undefined;
  /** metrics left out of the readings (null, not a scalar type, transient, BAD or STALE quality, name too long) */
  skipped: number;
  /** the message arrived ahead of its seq and is held for the missing ones (nothing else to do yet) */
  held: boolean;
  /** held messages discarded (each one counted under `code`), and why */
  dropped?: { code: ErrorCode; count: number; message: string } | undefined;
  /** field names this birth's metrics share with other metrics: they were given suffixed names (names.ts) */
  collisions?: Collision[] | undefined;
  /** edge nodes (and devices) whose metrics' fields a birth or death of another changed, beside those of `collisions` (names.ts FieldNames.remove) */
  renamed?: Unit[] | undefined;
  /**
   * The field each declared metric's value went to, for the session store: what a message's readings
   * were written under is what its births file must say until it is saved (appends.ts, store.ts).
   */
  used?: Map<MetricDef, Used> | undefined;
  /** held messages this one let through, in seq order, each with its own outcome */
  released: Array<{ topic: SparkplugTopic; out: HostOutcome }>;
  /**
   * Puts the edge node's session back as it was before this message (and the held ones it let
   * through): set by handle(), called by the session when the queue did not take what they carried.
   * Returns the held messages it discarded with a session it took away (an NBIRTH's), to be counted.
   */
  undo?: (() => HostOutcome['dropped']) | undefined;
}

export interface HostOptions {
  rebirthMinIntervalMs: number;
  /** milliseconds data refused as not born asks no rebirth after a birth of its edge node was refused for a bound, and the longest hold-off after births refused in a row (default TIMINGS.sparkplugRebirthAfterBoundMs; rebirth.ts) */
  rebirthAfterBoundMs?: number;
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
  /** record the field each value went to (HostOutcome.used): for the session store, which names them in births files (store.ts) */
  recordFields?: boolean;
  /** bytes of birth definitions one edge node's session may hold, estimated (default LIMITS.sparkplugDefinitionsMaxBytesPerNode) */
  maxDefinitionsBytesPerNode?: number;
  /**
   * The field names every current birth declares, shared by the Sparkplug inputs of one field client
   * (names.ts): both write into its one device's readings. Default: this host's own.
   */
  names?: FieldNames | undefined;
  /**
   * Publishers send again what they got no PUBACK for (the local MQTT input): each edge node's
   * previous session is kept for it (resend.ts). Without (a plant's broker, QoS 0, nothing sent
   * again), a session ended is dropped at once, but for one a refused NBIRTH ended, kept for its
   * death (held.ts, Previous.awaitsDeath).
   */
  resends?: boolean;
}

/** An edge node's key: MQTT topics hold no U+0000 (MQTT 3.1.1 §1.5.3), so it splits back exactly. */
export const key = (group: string, edge: string) => `${group}\u0000${edge}`;

/** What a session's definitions take, its devices' with them (Definitions.bytes), and its digests (duplicates.ts). */
export function bytesOf(s: NodeSession): number {
  let n = s.defs.bytes + SEQ_DIGESTS_BYTES;
  for (const d of s.devices.values()) n += d.bytes;
  return n;
}

/**
 * How far behind the last seq read a seq sent again is taken for one read already (a duplicate):
 * half of seq's 256 values (Sparkplug B 3.0.0, payload `seq`: 0-255, one more each message, 255
 * wrapping to 0; tck-id-payloads-sequence-num-incrementing). A seq 1 to 128 ahead is one not read
 * yet. So at most 128 messages an edge node sent may be on their way unacknowledged at once: Eclipse
 * Paho's default is 20 (max_inflight_messages).
 */
export const SEQ_BEHIND = 128;

export const BD_SEQ = 'bdSeq';

/** §6.4.7 / §5.7–5.8: the `bdSeq` metric of an NBIRTH or NDEATH, an Int64 or UInt64 (0–255 in use). */
export function bdSeqOf(p: SparkplugPayload, type: string): number {
  const m = p.metrics.find((x) => x.name === BD_SEQ);
  if (!m) throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `${type} without a bdSeq metric`);
  const datatype = m.datatype ?? DATA_TYPES.UInt64;
  if (datatype !== DATA_TYPES.Int64 && datatype !== DATA_TYPES.UInt64) throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `${type} bdSeq is not an Int64 or UInt64`);
  const v = metricValue(datatype, m.raw, m.isNull);
  if ('skip' in v || typeof v.value !== 'number') throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `${type} bdSeq has no value`);
  return v.value;
}

/** The bdSeq of an NBIRTH refused for what it holds, undefined when it has none (bdSeqOf throws). */
export function bdSeqIfAny(p: SparkplugPayload): number | undefined {
  try {
    return bdSeqOf(p, 'NBIRTH');
  } catch {
    return undefined;
  }
}

/** A message sent again that its session read already (see resend.ts, duplicates.ts). */
export function duplicate(t: SparkplugTopic, why: string): FieldStreamError {
  return new FieldStreamError('SPARKPLUG_DUPLICATE', `${t.type} of ${[t.group, t.edge, t.device].filter(Boolean).join('/')} sent again: ${why}; not stored again`);
}

/**
 * What a new session keeps to tell what is sent again: its digests, and its NBIRTH's digest when that
 * has a timestamp (§6.4.5: every NBIRTH has one; without, two births may be alike, and a rebirth is
 * never taken for a duplicate).
 */
export function births(p: SparkplugPayload, digest: Digest | undefined): Pick<NodeSession, 'digests' | 'birthDigest'> {
  return { digests: new SeqDigests(), birthDigest: p.timestamp !== undefined ? digest : undefined };
}
