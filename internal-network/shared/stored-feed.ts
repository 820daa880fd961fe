import { z } from 'zod';
import { STORED_FEED_TOPIC } from '../../shared/contract/topics.ts';
import { scalarProblem } from '../../shared/contract/primitives.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import type { StoredPoint } from '../distributor/points.ts';

/**
 * The stored feed: what the distributor wrote to the database, published on the internal broker
 * after each successful write, for the operator console (internal-network/console/). The console
 * subscribes to it instead of the device topics, so it shows only what the distributor checked
 * (signature, freshness, replay) and stored: a compromised DMZ can put anything on the device
 * topics, and nothing on this one (the bridge does not carry it; only the `distributor` identity
 * may publish to it, only the `console` identity reads it).
 *
 *   { "v": 1, "source": "distributor-1", "dropped": 0,
 *     "points": [{ "measurement": "readings", "tags": { "device": "pump-7" },
 *                  "fields": { "flow": 3.5 }, "time": 1740787200000 }] }
 *
 * `source` is the publishing distributor's DISTRIBUTOR_CLIENT_ID; `dropped` counts the stored
 * points that distributor left out of its feed since its previous message (QoS 0, bounded: see
 * stored-feed-publisher.ts), so a console can tell a quiet fleet from a gap. A point is the
 * database point exactly (internal-network/distributor/points.ts): `time` in epoch milliseconds.
 */
export { STORED_FEED_TOPIC };
export const STORED_FEED_VERSION = 1;

/** The range of a JavaScript Date, in epoch milliseconds. */
const MAX_DATE_MS = 8.64e15;

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isName = (v: unknown): v is string => typeof v === 'string' && v.length >= 1 && v.length <= LIMITS.feedNameMaxChars;

/**
 * Why a value is not a stored point the feed carries, or undefined when it is one: a measurement,
 * at most LIMITS.feedPointMaxTags string tags and LIMITS.feedPointMaxFields scalar fields (finite
 * numbers, strings of at most LIMITS.stringMaxChars, booleans), names of at most
 * LIMITS.feedNameMaxChars, a time within a Date's range. One pass, no allocation: the distributor
 * checks every point it publishes with it (a point the console would refuse is left out and
 * counted rather than spoil a whole message), and the console's schema checks with it again.
 */
export function storedPointProblem(p: unknown): string | undefined {
  if (!isPlainObject(p)) return 'must be an object';
  if (!isName(p.measurement)) return `measurement must be a string of 1 to ${LIMITS.feedNameMaxChars} characters`;
  const { tags, fields, time } = p;
  if (!isPlainObject(tags)) return 'tags must be an object';
  let n = 0;
  for (const k in tags) {
    if (++n > LIMITS.feedPointMaxTags) return `holds more than ${LIMITS.feedPointMaxTags} tags`;
    const v = tags[k];
    if (!isName(k) || typeof v !== 'string' || v.length > LIMITS.feedNameMaxChars) return `tag ${JSON.stringify(k.slice(0, 64))} must be a name and a string of at most ${LIMITS.feedNameMaxChars} characters`;
  }
  if (!isPlainObject(fields)) return 'fields must be an object';
  n = 0;
  for (const k in fields) {
    if (++n > LIMITS.feedPointMaxFields) return `holds more than ${LIMITS.feedPointMaxFields} fields`;
    if (!isName(k)) return `field names must be strings of 1 to ${LIMITS.feedNameMaxChars} characters`;
    const problem = scalarProblem(fields[k]);
    if (problem) return `field ${JSON.stringify(k.slice(0, 64))} ${problem}`;
  }
  if (typeof time !== 'number' || !Number.isFinite(time) || time < 0 || time > MAX_DATE_MS) return 'time must be epoch milliseconds';
  return undefined;
}

export const StoredPointSchema = z.custom<StoredPoint>().superRefine((value, ctx) => {
  const problem = storedPointProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/** Compiled (zod's `z.compile`, strict), as the uplink envelopes are: the console checks every stored point. */
export const StoredFeedMessageSchema = z.compile(
  z.object({
    v: z.literal(STORED_FEED_VERSION),
    source: z.string().min(1).max(LIMITS.feedNameMaxChars),
    points: z.array(StoredPointSchema).max(LIMITS.feedPointsPerMessage),
    /** stored points the source left out of its feed since its previous message */
    dropped: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  }),
  { strict: true },
);
export type StoredFeedMessage = z.infer<typeof StoredFeedMessageSchema>;

/**
 * A message of the stored feed, checked: for the console, which takes nothing on trust even from
 * the internal broker. Throws STORED_FEED_TOO_LARGE (before reading it) or STORED_FEED_INVALID (not
 * JSON, or not a stored-feed message: the message names the first problem and where).
 */
export function parseStoredFeed(payload: Buffer | Uint8Array | string): StoredFeedMessage {
  const bytes = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.byteLength;
  if (bytes > LIMITS.feedMessageMaxBytes) {
    throw new FieldStreamError('STORED_FEED_TOO_LARGE', `Stored-feed message of ${bytes} bytes; at most ${LIMITS.feedMessageMaxBytes} are accepted`, { bytes });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(typeof payload === 'string' ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch {
    throw new FieldStreamError('STORED_FEED_INVALID', 'Stored-feed message is not JSON');
  }
  const parsed = StoredFeedMessageSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : '(message)';
    throw new FieldStreamError('STORED_FEED_INVALID', `Not a stored-feed message: ${where}: ${issue?.message ?? 'invalid'}`, { path: where });
  }
  return parsed.data;
}
