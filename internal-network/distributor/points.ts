import type { EnvelopeOf, UplinkEnvelope } from '../../shared/contract/envelope.ts';
import { z } from 'zod';
import { TimestampSchema, timestampToMs, type Scalar, type Timestamp } from '../../shared/contract/primitives.ts';

/**
 * A database point independent of any client library: what every time-series sink writes.
 * (measurement, tags, time) identifies it, as in InfluxDB, so writing the same point again after a
 * redelivery changes nothing. In InfluxDB a point of a measurement kept one per message
 * ({@link ONE_POINT_PER_MESSAGE}) lies at `time` plus {@link subMillisecondNs} nanoseconds, so that
 * two messages of one series in one millisecond stay two points.
 */
export interface StoredPoint {
  measurement: string;
  tags: Record<string, string>;
  fields: Record<string, Scalar>;
  /** epoch milliseconds */
  time: number;
  /** which message the point came from, stable across redeliveries (see {@link POINT_KEY}) */
  [POINT_KEY]?: string;
}

/**
 * The identity of the message a point came from, for stores that keep one row per message and
 * refuse a second (PostgreSQL: a unique key, docs/postgres.md). A symbol, so that it travels with
 * the point to every sink yet stays out of each JSON form of a point (the local store's lines and
 * the stored feed, read back with strict schemas).
 */
export const POINT_KEY: unique symbol = Symbol('fieldstream.pointKey');

/**
 * The key of an uplink message: its authenticated (epoch, seq) when the device signed it (what a
 * commit receipt names, docs/end-to-end-commit.md), else the message id the device chose.
 */
export function uplinkKey(messageId: string, signed?: { epoch: string; seq: number }): string {
  return signed ? `s:${signed.epoch}:${signed.seq}` : `m:${messageId}`;
}

/** Whether a message key ({@link uplinkKey}) is of a message whose signature the distributor verified. */
export function isSignedKey(key: string | undefined): boolean {
  return key?.startsWith('s:') === true;
}

/** The key of a chunked file's record: one per transfer, whichever chunk completed or repeats it. */
export function transferKey(transferId: string): string {
  return `t:${transferId}`;
}

/** The point with its message key, when there is one. */
function keyed<P extends StoredPoint>(point: P, key: string | undefined): P {
  if (key !== undefined) point[POINT_KEY] = key;
  return point;
}

export const MEASUREMENTS = {
  readings: 'readings',
  events: 'events',
  responses: 'command_responses',
  files: 'files',
  status: 'device_status',
  gatewayStatus: 'gateway_status',
  securityEvents: 'security_events',
  health: 'device_health',
} as const;

/**
 * The measurements whose points are one per message, never merged with another message's point of
 * the same series and millisecond: InfluxDB keeps one point per (measurement, tags, time), and
 * device timestamps are often whole seconds (the contract's ISO form), so two alarms of one device in
 * one second were one point, the other message acknowledged, receipted and lost. Each is written
 * {@link subMillisecondNs} nanoseconds into its millisecond (line-protocol.ts), as PostgreSQL keeps
 * a row per message key.
 * Not here:
 * - `readings`: a reading is identified by device and time, and two messages of one device at one
 *   time merge their fields (the time-series semantics the console and the benchmark count by).
 * - `device_status`, `gateway_status`: states, whose order within a millisecond matters and which a
 *   hash would scramble (the later write of the same millisecond wins, as before).
 * - the console's own `device_state` and `anomalies`: one per (series, time) by design, without keys.
 */
export const ONE_POINT_PER_MESSAGE: ReadonlySet<string> = new Set<string>([
  MEASUREMENTS.events,
  MEASUREMENTS.responses,
  MEASUREMENTS.files,
  MEASUREMENTS.health,
  MEASUREMENTS.securityEvents,
]);

/**
 * Nanoseconds (0 to 999,999) into its millisecond at which a point of {@link ONE_POINT_PER_MESSAGE}
 * is written: a hash (32-bit FNV-1a) of its message key ({@link POINT_KEY}), so a
 * redelivered or replayed copy (the same key) is the same point, and two messages of one series and
 * millisecond differ but once in a million pairs. 0 for every other point and for a point without a
 * key. Not a secret, nor meant to be: a series holds one device's messages, and a device choosing
 * its keys to collide loses only its own. (Gateways' reports share a series per device and reason: a
 * compromised gateway could aim one at another's report of the same millisecond, which without the
 * offset it overwrote by merely sharing that millisecond.)
 */
export function subMillisecondNs(p: StoredPoint): number {
  const key = p[POINT_KEY];
  if (key === undefined || !ONE_POINT_PER_MESSAGE.has(p.measurement)) return 0;
  return keyHash(key) % 1_000_000;
}

/**
 * Milliseconds (0 to 999) before its envelope's arrival at which a refusal's security event lies: the hash's
 * bits above those {@link subMillisecondNs} takes, so that events of one device stamped with the
 * same millisecond (refused messages of one envelope, or of envelopes of one arrival time) lie
 * apart within the second before it, and two of them share a point about once in 10^9 pairs. A function of the
 * key alone: the same refusal checked again, by this process or the next, is the same point.
 */
export function keyMillisecond(key: string): number {
  return Math.floor(keyHash(key) / 1_000_000) % 1000;
}

/** 32-bit FNV-1a of the key's UTF-16 code units. */
function keyHash(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** The device's own timestamp when it gave one, else the moment the gateway accepted the message. */
function timeOf(ts: Timestamp | undefined, receivedAt: number): number {
  if (ts === undefined) return receivedAt;
  const ms = timestampToMs(ts);
  return Number.isFinite(ms) ? ms : receivedAt;
}

/** One point per reading: numbers stay numbers, strings and booleans are kept. */
export function readingPoints(env: EnvelopeOf<'timeseries'>, keys?: readonly string[]): StoredPoint[] {
  // One tags object for the envelope: the line protocol encoder escapes a series once per run of
  // points that share it.
  const tags = { device: env.deviceId };
  return env.messages.map(({ payload, receivedAt }, i) => {
    const { timestamp, ...fields } = payload;
    return keyed(
      {
        measurement: MEASUREMENTS.readings,
        tags,
        fields,
        time: timeOf(timestamp as Timestamp | undefined, receivedAt ?? env.receivedAt),
      },
      keys?.[i],
    );
  });
}

export function eventPoints(env: EnvelopeOf<'event'>, keys?: readonly string[]): StoredPoint[] {
  return env.messages.map(({ payload, receivedAt }, i) => {
    const { eventType, severity, message, timestamp, ...extra } = payload;
    return keyed(
      {
        measurement: MEASUREMENTS.events,
        tags: { device: env.deviceId, event_type: eventType, ...(severity ? { severity } : {}) },
        fields: { message: message ?? '', ...(extra as Record<string, Scalar>) },
        time: timeOf(timestamp, receivedAt ?? env.receivedAt),
      },
      keys?.[i],
    );
  });
}

/**
 * How a command response's `result` field holds the device's result: `string`, the string itself;
 * `json`, the JSON text of any other value (a number, a boolean, null, an object, an array); `none`,
 * no result (''). `result` stays as it always was (a string as it is, for dashboards and queries
 * that read it); the type tells 42 from "42" and "" from none, which `result` alone cannot.
 */
export type ResultType = 'string' | 'json' | 'none';

export function resultFields(result: unknown): { result: string; result_type: ResultType } {
  if (result === undefined) return { result: '', result_type: 'none' };
  if (typeof result === 'string') return { result, result_type: 'string' };
  return { result: JSON.stringify(result), result_type: 'json' };
}

/**
 * The field of a `command_responses` point that holds the command's id. Not `command_id`, the tag
 * that held it in points written before (still in the database): InfluxQL tells a field from a tag
 * of the same key only with `::field` / `::tag` on every mention, so under another name a reader
 * matches either simply (`"cmd_id" = 'x' OR "command_id" = 'x'`).
 */
export const RESPONSE_COMMAND_FIELD = 'cmd_id';

/** The tag that held a response's command id in points written before {@link RESPONSE_COMMAND_FIELD}. */
export const RESPONSE_COMMAND_TAG_BEFORE = 'command_id';

/**
 * One point per command response. `signed`: whether the distributor verified the device's signature
 * over it (its key is `s:…`). InfluxDB keeps no message key, and the command API takes from it,
 * for a device with a registered key, only a response stored as signed: with
 * DISTRIBUTOR_REQUIRE_SIGNATURES=false an unsigned response is stored too, and may be the DMZ's
 * forgery (docs/commands.md). Points written before this field existed have none: read as unsigned.
 * `result` and `result_type`: {@link resultFields}.
 *
 * The command's id is the field {@link RESPONSE_COMMAND_FIELD}, not a tag: it is whatever the device
 * sends, a new value with every command, and as a tag it made a series per command, which InfluxDB
 * 1.x refuses past `max-values-per-tag` (100,000 by default: a device sending 5,000 messages/s
 * reaches it in seconds, ordinary traffic within a year), and then refused every device's
 * responses. Tags are only `device` and `status`, bounded. Points written before held the id as the
 * tag `command_id`: readers take either (command-api/influx-responses.ts).
 */
export function responsePoints(env: EnvelopeOf<'response'>, keys?: readonly string[]): StoredPoint[] {
  return env.messages.map(({ payload, receivedAt }, i) =>
    keyed(
      {
        measurement: MEASUREMENTS.responses,
        tags: { device: env.deviceId, status: payload.status },
        fields: { [RESPONSE_COMMAND_FIELD]: payload.commandId, ...resultFields(payload.result), signed: isSignedKey(keys?.[i]) },
        time: timeOf(payload.timestamp, receivedAt ?? env.receivedAt),
      },
      keys?.[i],
    ),
  );
}

/**
 * One point per health message, its fields under the names the console reads (docs/operations.md);
 * each value a local program reported becomes `local_<name>`. What the device could not tell is
 * absent, not zero.
 */
export function healthPoints(env: EnvelopeOf<'health'>, keys?: readonly string[]): StoredPoint[] {
  const tags = { device: env.deviceId };
  return env.messages.map(({ payload: h, receivedAt }, i) => {
    const fields: Record<string, Scalar> = {
      uptime_s: h.uptimeSeconds,
      queue_messages: h.queueMessages,
      queue_bytes: h.queueBytes,
      awaiting_receipt: h.awaitingReceipt,
    };
    if (h.oldestUnsentAgeSeconds !== undefined) fields.oldest_unsent_age_s = h.oldestUnsentAgeSeconds;
    if (h.freeDiskBytes !== undefined) fields.free_disk_bytes = h.freeDiskBytes;
    if (h.certDaysLeft !== undefined) fields.cert_days_left = h.certDaysLeft;
    if (h.clockOffsetMs !== undefined) fields.clock_offset_ms = h.clockOffsetMs;
    fields.version = h.version;
    fields.interval_s = h.intervalSeconds;
    for (const [name, value] of Object.entries(h.local ?? {})) fields[`local_${name}`] = value;
    return keyed({ measurement: MEASUREMENTS.health, tags, fields, time: timeOf(h.timestamp, receivedAt ?? env.receivedAt) }, keys?.[i]);
  });
}

/** A stored file, as its point describes it; also kept as a transfer's done marker (file-store.ts). */
export const StoredFileInfoSchema = z.object({
  filename: z.string(),
  path: z.string(),
  /** bytes */
  size: z.number().int().min(0),
  sha256: z.string(),
  contentType: z.string(),
  /** bytes, as the device declared them */
  declaredSize: z.number().optional(),
  timestamp: TimestampSchema.optional(),
});
export type StoredFileInfo = z.infer<typeof StoredFileInfoSchema>;

export function filePoint(deviceId: string, receivedAt: number, file: StoredFileInfo, key?: string): StoredPoint {
  return keyed({
    measurement: MEASUREMENTS.files,
    tags: { device: deviceId },
    fields: {
      filename: file.filename,
      path: file.path,
      size: file.size,
      sha256: file.sha256,
      content_type: file.contentType,
      ...(file.declaredSize !== undefined ? { declared_size: file.declaredSize } : {}),
    },
    time: timeOf(file.timestamp, receivedAt),
  }, key);
}

/**
 * The points of an envelope of data other than files (a file is stored before its point: the
 * message handler's concern). `keys`: each message's key, in its order.
 */
export function dataPoints(env: Exclude<UplinkEnvelope, EnvelopeOf<'file'>>, keys?: readonly string[]): StoredPoint[] {
  switch (env.dataType) {
    case 'timeseries':
      return readingPoints(env, keys);
    case 'event':
      return eventPoints(env, keys);
    case 'response':
      return responsePoints(env, keys);
    case 'health':
      return healthPoints(env, keys);
  }
}

/** A message's points and its security events as one write; no copy when one of them is empty (the usual case). */
export function joined(points: StoredPoint[], events: StoredPoint[]): StoredPoint[] {
  if (events.length === 0) return points;
  return points.length === 0 ? events : [...points, ...events];
}
