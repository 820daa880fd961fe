import { z } from 'zod';
import { LIMITS } from '../limits.ts';

/**
 * A device id is at once a certificate CN, one MQTT topic level and a folder name, so it may hold
 * none of MQTT's special characters (`/ + #`, MQTT 3.1.1 §4.7), no path separators and no
 * leading dot.
 */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export const DeviceIdSchema = z
  .string()
  .min(1)
  .max(LIMITS.deviceIdMaxChars)
  .regex(DEVICE_ID_PATTERN, 'must start with a letter or digit and hold only letters, digits, ".", "_" and "-"');
export type DeviceId = z.infer<typeof DeviceIdSchema>;

/** Message ids are chosen by devices; they appear in acks and logs, so they stay printable. */
export const MessageIdSchema = z
  .string()
  // One pattern holds the length too: these are checked for every message, twice (gateway and distributor).
  .regex(/^[A-Za-z0-9._:-]{1,128}$/, 'must be 1 to 128 letters, digits, ".", "_", ":" and "-"');

/** A sequence number: a non-negative integer that fits a double exactly. */
export const SeqSchema = z.int().min(0); // z.int() admits safe integers only (at most 2^53 − 1)

/** A device timestamp: ISO 8601 with a zone (as in the seed, "2024-01-01T12:00:00Z") or epoch milliseconds. */
export const TimestampSchema = z.union([
  z.iso.datetime({ offset: true }),
  z.number().int().min(0).max(8.64e15), // the range of a JavaScript Date, in ms (MAX_DATE_MS)
]);
export type Timestamp = z.infer<typeof TimestampSchema>;

const MAX_DATE_MS = 8.64e15;

/** TimestampSchema's test as a predicate; epoch milliseconds (the common case) without a parse. */
export function isTimestamp(value: unknown): boolean {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 && value <= MAX_DATE_MS;
  return TimestampSchema.safeParse(value).success;
}

export function timestampToMs(ts: Timestamp): number {
  return typeof ts === 'number' ? ts : Date.parse(ts);
}

/**
 * A scalar field value: kept as the device sent it (numbers as numbers, strings, booleans).
 * z.number() refuses NaN and ±Infinity (JSON.parse turns 1e999 into Infinity), so no value that
 * line protocol cannot hold gets through.
 */
export const ScalarSchema = z.union([z.number(), z.string().max(LIMITS.stringMaxChars), z.boolean()]);
export type Scalar = z.infer<typeof ScalarSchema>;

/** A field name: what InfluxDB accepts as a field or tag key, without the surprises. */
export const FieldNameSchema = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,127}$/, 'must be at most 128 characters, start with a letter or "_" and hold only letters, digits, "_", "." and "-"');
