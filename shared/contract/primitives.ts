import { z } from 'zod';
import { LIMITS } from '../limits.ts';

/**
 * A device id is at once a certificate CN, one MQTT topic level and a folder name, so it may hold
 * none of MQTT's special characters (`/ + #`, MQTT 3.1.1 §4.7), no path separators and no
 * leading dot.
 */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export const DeviceIdSchema = predicate<string>(
  (v) => typeof v === 'string' && v.length <= LIMITS.deviceIdMaxChars && DEVICE_ID_PATTERN.test(v),
  `must be 1 to ${LIMITS.deviceIdMaxChars} characters, start with a letter or digit and hold only letters, digits, ".", "_" and "-"`,
);
export type DeviceId = z.infer<typeof DeviceIdSchema>;

/**
 * A schema tested by one predicate. The schemas below are checked for every message at both trust
 * boundaries (gateway and distributor); there, zod's chained checks (the type, then each `.int()`,
 * `.min()`, `.regex()`) cost about 0.3 µs per value each, where one predicate costs a tenth of that
 * (measured with zod 4 on the benchmark machine).
 */
export function predicate<T>(test: (value: unknown) => boolean, message: string) {
  return z.custom<T>(test, message);
}

const MESSAGE_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
/** Message ids are chosen by devices; they appear in acks and logs, so they stay printable. */
export const MessageIdSchema = predicate<string>(
  (v) => typeof v === 'string' && MESSAGE_ID_PATTERN.test(v),
  'must be a string of 1 to 128 letters, digits, ".", "_", ":" and "-"',
);

/** A sequence number: a non-negative integer that fits a double exactly (at most 2^53 − 1). */
export const SeqSchema = predicate<number>((v) => Number.isSafeInteger(v) && (v as number) >= 0, 'must be an integer from 0 to 2^53 − 1');

/** A device timestamp: ISO 8601 with a zone (as in the seed, "2024-01-01T12:00:00Z") or epoch milliseconds. */
export const TimestampSchema = z.union([
  z.iso.datetime({ offset: true }),
  z.number().int().min(0).max(8.64e15), // the range of a JavaScript Date, in ms (MAX_DATE_MS)
]);
export type Timestamp = z.infer<typeof TimestampSchema>;

const MAX_DATE_MS = 8.64e15;

/**
 * An instant as epoch ms that a JavaScript Date can hold. What crosses the DMZ (arrival times,
 * presence, report windows) is held to it: one past it made `new Date(t).toISOString()` throw in a
 * store, and a message retried for ever held its consumer.
 */
export const EpochMsSchema = z.number().int().min(0).max(MAX_DATE_MS);

/** TimestampSchema's test as a predicate; epoch milliseconds (the common case) without a parse. */
export function isTimestamp(value: unknown): boolean {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 && value <= MAX_DATE_MS;
  return TimestampSchema.safeParse(value).success;
}

export function timestampToMs(ts: Timestamp): number {
  return typeof ts === 'number' ? ts : Date.parse(ts);
}

/** A scalar field value: kept as the device sent it (numbers as numbers, strings, booleans). */
export type Scalar = number | string | boolean;

/**
 * Why a value is not a {@link Scalar}, or undefined when it is one. Non-finite numbers are refused
 * (JSON.parse turns 1e999 into Infinity): line protocol cannot hold them.
 */
export function scalarProblem(value: unknown): string | undefined {
  switch (typeof value) {
    case 'number':
      return Number.isFinite(value) ? undefined : 'must be a finite number';
    case 'string':
      return value.length <= LIMITS.stringMaxChars ? undefined : `must be at most ${LIMITS.stringMaxChars} characters`;
    case 'boolean':
      return undefined;
    default:
      return 'must be a number, a string or a boolean';
  }
}

export const ScalarSchema = z.custom<Scalar>().superRefine((value, ctx) => {
  const problem = scalarProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/**
 * A field name: what InfluxDB accepts as a field or tag key, without the surprises. Not `time`:
 * InfluxDB 1.x answers 204 to a point with a field of that name beside others and drops the field
 * (a reading acknowledged, its device told it is stored, one of its values gone). Not `device` or
 * `event_type`, the tags readings and events are stored with (points.ts): InfluxQL reads an
 * unqualified name as the field once the measurement has a field of that name, so one reading with
 * the field device="victim" was listed as the victim's by `WHERE "device" = 'victim'` (the
 * console's history query), and the victim's own readings no longer were
 * (test/e2e/line-protocol-influx.test.ts).
 */
export const FIELD_NAME_PATTERN = /^(?!(?:time|device|event_type)$)[A-Za-z_][A-Za-z0-9_.-]{0,127}$/;
export const FIELD_NAME_RULE = 'must be at most 128 characters, start with a letter or "_", hold only letters, digits, "_", "." and "-", and not be "time", "device" or "event_type"';
export const FieldNameSchema = z.string().regex(FIELD_NAME_PATTERN, FIELD_NAME_RULE);

/**
 * Whether `v` is an object of more than `max` own keys, counting no further than `max + 1`.
 * JSON.parse makes only plain objects, whose enumerable keys are all their own.
 */
export function hasMoreKeysThan(v: unknown, max: number): boolean {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  let n = 0;
  for (const _ in v) if (++n > max) return true;
  return false;
}

/**
 * `schema`, looked at only once the value holds at most `max` keys; more are refused with
 * `message` alone. For record-shaped schemas (an object's catchall, a record): zod checks each of
 * their keys and values before a refinement counts them, so a frame of 8 MiB, hundreds of
 * thousands of keys, held the event loop for seconds (one issue each when their values were
 * wrong), at the gateway every device of it waiting. Counted first, nothing past the bound is
 * checked. (Enumerating an object's keys is itself as long as they are, but it costs a fraction of
 * the JSON.parse that made them.)
 */
export function keysAtMost<S extends z.ZodType>(max: number, message: string, schema: S) {
  return z
    .custom<unknown>()
    .superRefine((value, ctx) => {
      if (hasMoreKeysThan(value, max)) ctx.addIssue({ code: 'custom', message });
    })
    .pipe(schema);
}

/**
 * A contract issue's text for a refusal (an error frame, a log line), cut at
 * LIMITS.contractIssueMaxChars: zod names every unknown key of a strict object in one issue, and a
 * frame of 100,000 of them was refused with an error frame of 2.4 MB.
 */
export function issueText(text: string): string {
  return text.length > LIMITS.contractIssueMaxChars ? `${text.slice(0, LIMITS.contractIssueMaxChars)}…` : text;
}

/**
 * A zod error as a coded error carries it, whatever the boundary (a device's frame, an HTTP body or
 * query): its first problem as "path: message" (`whole` naming an issue of the value itself), and
 * at most 10 issues for the details, every text cut (issueText).
 */
export function describeIssues(error: z.ZodError, whole = '(value)'): { first: string; issues: Array<{ path: string; message: string }> } {
  const issues = error.issues.slice(0, 10).map((i) => ({ path: issueText(i.path.join('.')), message: issueText(i.message) }));
  const f = issues[0];
  return { first: f ? `${f.path || whole}: ${f.message}` : 'invalid', issues };
}
