import { escape } from '@influxdata/influxdb-client';
import type { Scalar } from '../../../shared/contract/primitives.ts';
import { FieldStreamError } from '../../../shared/errors.ts';
import { LIMITS } from '../../../shared/limits.ts';
import { ONE_POINT_PER_MESSAGE, POINT_KEY, subMillisecondNs, type StoredPoint } from '../points.ts';

/**
 * InfluxDB line protocol (https://docs.influxdata.com/influxdb/v1/write_protocols/line_protocol_reference/),
 * escaped by the client library's escapers, which own the escaping rules (a string field's value
 * excepted: {@link quoted}). The library's Point
 * builds the same text (a unit test holds the two equal) but costs about 1.5 µs per reading more,
 * an object and two sorts each (measured): every reading passes through here.
 *
 * Every number is written as a float: InfluxDB fixes a field's type at its first write, and a
 * reading that is 23 today and 23.5 tomorrow must not be refused as a type conflict.
 * Times are epoch milliseconds, or in a request holding a point of a measurement kept one point
 * per message (points.ts ONE_POINT_PER_MESSAGE), epoch nanoseconds: each such point's millisecond
 * and its sub-millisecond offset (points.ts subMillisecondNs), so that two messages of one series in
 * one millisecond are not one point; every other point on its millisecond exactly. The request says
 * which ({@link precisionOf}): a request of readings alone, the hot path, is written as it was,
 * without six more digits a reading (0.1 µs a reading more in the encoder, measured).
 * A number that is not finite is refused (DISTRIBUTOR_WRITE_REJECTED), never written as `Infinity` or `NaN`.
 */
function fieldValue(value: Scalar, key: string): string {
  if (typeof value === 'number') {
    if (Number.isFinite(value)) return String(value);
    // String() would write Infinity or NaN, which line protocol has no form for: InfluxDB answers
    // the whole batch 400. The contract keeps them out of device data; a point built elsewhere (the
    // console's own anomalies) is refused here, alone, like a name that cannot be carried.
    throw new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', `field ${JSON.stringify(key.slice(0, 200))} is ${value}: line protocol has only finite numbers`);
  }
  if (typeof value === 'boolean') return value ? 'T' : 'F';
  if (LONE_SURROGATE.test(value)) throw new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', `field ${JSON.stringify(key.slice(0, 200))} holds a lone UTF-16 surrogate: line protocol (UTF-8) cannot carry it unchanged`);
  return quoted(value);
}

/**
 * With the u flag, `\p{Cs}` matches only a surrogate that is not half of a pair. JSON's `"\ud800"`
 * gives one, and the contract bounds a string's length only. The request body is UTF-8, which has
 * no form for it: Buffer.from wrote U+FFFD, and InfluxDB 1.x stored and answered 204 for a value
 * that was not the device's (checked against it). Refused instead, as the PostgreSQL sink's server
 * refuses it (postgres/copy.ts): the message is a dead letter, kept as it came.
 */
const LONE_SURROGATE = /\p{Cs}/u;

/** The two characters escaped in a string field's value (line protocol reference, "Special characters"). */
const QUOTED_SPECIALS = /["\\]/g;

/**
 * A string field's value quoted, `"` and `\` escaped by a backslash: the rules of the library's
 * `escape.quoted` (the unit test comparing with its Point holds them equal), as one flat string.
 * The library's escaper appends a character at a time, and V8 keeps such a string as a piece per
 * character until it is read: a value of 32 Ki backslashes held about 16 times its escaped text in
 * memory, and a batch of readings of such values, one message from each consumer, ran the
 * distributor out of memory (over 4 GB for 32 messages of 8 MB).
 */
function quoted(value: string): string {
  return `"${value.replace(QUOTED_SPECIALS, '\\$&')}"`;
}

/**
 * A name (measurement, tag key or value, field key) whose escaped form could change the line's
 * structure, or would not be stored as it is:
 * - a backslash before a comma, an equals sign or a space, or at the end. The escapers escape those
 *   three by putting a backslash before them, and InfluxDB's scanner takes every backslash as
 *   escaping the character after it (1.x and 2.x: models/points.go, scanKey/scanLine): a data
 *   backslash there pairs with the escaper's backslash, or with the `=`/`,`/space that follows the
 *   name, and the character it should have protected becomes structure. `zz\` as a field key made
 *   `zz\="…"` read as a key `zz\="` and left the quoted value unquoted, so a newline in the value
 *   began a second line: a point of another device (the review's forged write).
 *   Escaping the backslash (`\\`) is no cure: line protocol has no escape for a backslash in a name
 *   (influxdata/telegraf#3004: a name ending in one is invalid), and InfluxDB 1.x stores `\\` in a
 *   key or tag value as two backslashes (checked against it: test/e2e/line-protocol-influx.test.ts), so the
 *   name would be stored changed. Refused instead; no name the contract lets through holds a
 *   backslash (FIELD_NAME_PATTERN, DeviceIdSchema). A backslash before any other character is kept:
 *   the scanner pairs it with that character and InfluxDB stores both as they are.
 * - a newline, carriage return or tab: the library writes them as the two characters `\n`, `\r`,
 *   `\t` (not a line break, but a different name from the one given), and the line protocol
 *   reference does not support newlines in keys or tag values.
 */
const HOSTILE_NAME = /[\n\r\t]|\\(?=[ ,=]|$)/;

/** The name, or DISTRIBUTOR_WRITE_REJECTED: see {@link HOSTILE_NAME}. The write batcher retries a refused batch one message at a time, so only the message holding the name is dead-lettered. */
function checkedName(name: string, what: string): string {
  if (LONE_SURROGATE.test(name)) throw new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', `${what} ${JSON.stringify(name.slice(0, 200))} holds a lone UTF-16 surrogate: line protocol (UTF-8) cannot carry it unchanged`);
  if (HOSTILE_NAME.test(name)) {
    throw new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', `${what} ${JSON.stringify(name.slice(0, 200))} holds a backslash before ",", "=", " " or at its end, or a line break or tab: line protocol cannot carry it unchanged`);
  }
  return name;
}

/** `measurement,tag=value,...`: the series a point belongs to. */
function seriesOf(p: StoredPoint): string {
  let series = escape.measurement(checkedName(p.measurement, 'measurement'));
  for (const key of Object.keys(p.tags).sort()) {
    const value = p.tags[key];
    if (key !== '' && value) series += `,${escape.tag(checkedName(key, 'tag key'))}=${escape.tag(checkedName(value, 'tag value'))}`; // an empty tag value is no tag
  }
  return series;
}

type FieldShape = ReadonlyArray<readonly [key: string, escaped: string]>;
/**
 * Each shape of fields seen (its keys, in their order, joined) with its keys sorted and escaped. The
 * readings of a device have the same few fields every time, and sorting and escaping their keys again
 * for each reading was a third of this encoder's time (0.9 µs a reading against 0.6, measured).
 */
const fieldShapes = new Map<string, FieldShape>();

/**
 * The keys sorted (InfluxDB stores them so, and it makes each line depend on the point alone), each
 * with its escaped form. Each key is checked here (HOSTILE_NAME), so a remembered shape holds only
 * keys that passed, and the check costs a reading nothing once its shape is known.
 */
function sortedShape(keys: string[]): FieldShape {
  return keys.sort().map((k) => [k, escape.tag(checkedName(k, 'field key'))] as const);
}

function shapeOf(keys: string[]): FieldShape {
  const id = keys.join('\u0000');
  // A long shape is not remembered: LIMITS.lineProtocolShapeMaxChars bounds what each one holds.
  if (id.length > LIMITS.lineProtocolShapeMaxChars) return sortedShape(keys);
  let shape = fieldShapes.get(id);
  if (shape === undefined || shape.length !== keys.length) {
    shape = sortedShape(keys);
    if (fieldShapes.size >= LIMITS.lineProtocolFieldShapes) fieldShapes.clear();
    fieldShapes.set(id, shape);
  }
  return shape;
}

/**
 * `key=value,...` of the point's fields in the shape's order, leaving out fields without a value;
 * with `exact`, undefined instead when the shape names a key the point has no value for.
 */
function fieldsIn(p: StoredPoint, shape: FieldShape, exact: boolean): string | undefined {
  let fields = '';
  for (const [key, escaped] of shape) {
    const value = p.fields[key];
    if (value === undefined) {
      if (exact) return undefined;
      continue;
    }
    if (key !== '') fields += `${fields === '' ? '' : ','}${escaped}=${fieldValue(value, key)}`;
  }
  return fields;
}

/**
 * `key=value,...`, or '' for a point without fields (line protocol requires at least one). A
 * remembered shape naming a key the point lacks (a field without a value, or a shape mistaken for
 * another, which only a key holding the joining character could cause) sends it the long way.
 */
function fieldsOf(p: StoredPoint): string {
  return fieldsIn(p, shapeOf(Object.keys(p.fields)), true) ?? fieldsIn(p, sortedShape(Object.keys(p.fields)), false) ?? '';
}

/**
 * DISTRIBUTOR_WRITE_REJECTED for a field named as one of its point's tags. InfluxDB keeps the two
 * apart, but InfluxQL reads an unqualified name as the field once the measurement has one (InfluxDB
 * 1.x docs, "Tag key and field key with the same name": `::tag` is needed): `WHERE "device" =
 * 'victim'`, the console's history query, then matched a point of another device holding the field
 * device="victim" and none of the victim's own (checked against InfluxDB 1.x:
 * test/e2e/line-protocol-influx.test.ts). The contract keeps such names out of device data
 * (FIELD_NAME_PATTERN); this holds for any point, whatever let it through.
 */
function checkFieldsApartFromTags(p: StoredPoint): void {
  for (const key in p.tags) {
    // As written: an empty tag value is no tag, a field without a value or with an empty key is left out.
    if (key !== '' && p.tags[key] && Object.hasOwn(p.fields, key) && p.fields[key] !== undefined) {
      throw new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', `field ${JSON.stringify(key.slice(0, 200))} is also a tag of measurement ${JSON.stringify(p.measurement.slice(0, 200))}: InfluxQL would read the field for the tag`);
    }
  }
}

/** The `precision` of a write request (InfluxDB 1.x and 2.x name them so). */
export type Precision = 'ms' | 'ns';

/**
 * 'ns' when a point of `points` lies off its millisecond (a point of ONE_POINT_PER_MESSAGE with a
 * message key), else 'ms'. One look at the measurement per run of points of one measurement.
 */
export function precisionOf(points: readonly StoredPoint[]): Precision {
  let last = '';
  let perMessage = false;
  for (const p of points) {
    if (p.measurement !== last) {
      last = p.measurement;
      perMessage = ONE_POINT_PER_MESSAGE.has(last);
    }
    if (perMessage && p[POINT_KEY] !== undefined) return 'ns';
  }
  return 'ms';
}

/**
 * Epoch milliseconds `ms` (an integer) and `ns` nanoseconds more (0 to 999,999) as line protocol's
 * integer nanoseconds. Built as text: nanoseconds since the epoch pass 2^53 within 1970, where a
 * number would lose the offset.
 */
export function nanosecondTime(ms: number, ns: number): string {
  if (ns === 0) return ms === 0 ? '0' : `${ms}000000`;
  if (ms >= 0) return ms === 0 ? String(ns) : `${ms}${String(ns).padStart(6, '0')}`;
  // Before the epoch: ms × 10^6 + ns = −((−ms − 1) × 10^6 + (10^6 − ns)).
  const whole = -ms - 1;
  const rest = 1_000_000 - ns;
  return whole === 0 ? `-${rest}` : `-${whole}${String(rest).padStart(6, '0')}`;
}

/**
 * One line at `precision`, or undefined for a point without fields. `perMessage`: whether the
 * point's measurement is kept one point per message (toLines knows it once per run of one series).
 */
export function toLine(p: StoredPoint, series = seriesOf(p), precision: Precision = precisionOf([p]), perMessage = ONE_POINT_PER_MESSAGE.has(p.measurement)): string | undefined {
  checkFieldsApartFromTags(p);
  const fields = fieldsOf(p);
  if (fields === '') return undefined;
  const ms = Math.floor(p.time);
  return `${series} ${fields} ${precision === 'ms' ? ms : nanosecondTime(ms, perMessage ? subMillisecondNs(p) : 0)}`;
}

/** The lines of `points`, at `precision` (the request's: {@link precisionOf} unless told). */
export function toLines(points: readonly StoredPoint[], precision: Precision = precisionOf(points)): string[] {
  const lines: string[] = [];
  // The points of one envelope share their tags object (see points.ts): its series is escaped once.
  let lastTags: StoredPoint['tags'] | undefined;
  let lastMeasurement = '';
  let series = '';
  let perMessage = false;
  for (const p of points) {
    if (p.tags !== lastTags || p.measurement !== lastMeasurement) {
      lastTags = p.tags;
      lastMeasurement = p.measurement;
      series = seriesOf(p);
      perMessage = ONE_POINT_PER_MESSAGE.has(p.measurement);
    }
    const line = toLine(p, series, precision, perMessage);
    if (line !== undefined) lines.push(line);
  }
  return lines;
}

export function toLineProtocol(points: readonly StoredPoint[], precision: Precision = precisionOf(points)): string {
  return toLines(points, precision).join('\n');
}

/**
 * `lines` cut into the bodies of successive requests (each its lines joined by newlines), in order:
 * each body at most `maxBytes` of UTF-8 and `maxLines` lines, but a line larger than `maxBytes` by
 * itself is a body alone (a line is never cut; the database may refuse it, 413, as too large).
 */
export function requestsOf(lines: readonly string[], maxBytes: number = LIMITS.influxRequestMaxBytes, maxLines = Number.POSITIVE_INFINITY): string[][] {
  const requests: string[][] = [];
  let current: string[] = [];
  let bytes = 0;
  for (const line of lines) {
    const size = Buffer.byteLength(line, 'utf8');
    // + 1: the newline before it
    if (current.length > 0 && (bytes + 1 + size > maxBytes || current.length >= maxLines)) {
      requests.push(current);
      current = [];
    }
    bytes = current.length === 0 ? size : bytes + 1 + size;
    current.push(line);
  }
  if (current.length > 0) requests.push(current);
  return requests;
}
