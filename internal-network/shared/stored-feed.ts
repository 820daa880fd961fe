import { z } from 'zod';
import { STORED_FEED_TOPIC } from '../../shared/contract/topics.ts';
import { scalarProblem } from '../../shared/contract/primitives.ts';
import { FieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import type { StoredPoint } from '../distributor/points.ts';
import { openStoredFeed, StoredFeedReplayGuard, STORED_FEED_VERSION, type ReplayGuardOptions, type StoredFeedKey } from './stored-feed-auth.ts';

/**
 * The stored feed: what the distributor wrote to the database, published on the internal broker
 * after each successful write, for the operator console (internal-network/console/). The console
 * subscribes to it instead of the device topics, so it shows only what the distributor checked
 * (signature, freshness, replay) and stored.
 *
 * The topic is not what makes it trustworthy: the internal broker's ACL lets only the `distributor`
 * identity publish there, but Mosquitto applies no ACL to what its bridges bring in, so a
 * compromised DMZ server can publish on this topic too (SECURITY.md). Each message is therefore
 * sealed with an HMAC under the stored-feed key, which only the distributors and the console hold
 * (stored-feed-auth.ts), and the console takes one only once its MAC verified, and only once:
 *
 *   {"v":2,"mac":"…","body":{"source":"distributor-1","boot":"Xc1…","seq":17,"sent":1740787200250,"dropped":0,
 *                            "points":[{"measurement":"readings","tags":{"device":"pump-7"},
 *                                       "fields":{"flow":3.5},"time":1740787200000}]}}
 *
 * `source` is the publishing distributor's DISTRIBUTOR_CLIENT_ID; `boot` names its run (random,
 * new at each start) and `seq` counts the run's messages from 1; `sent` is when it was sealed
 * (epoch milliseconds, the distributor's clock). `dropped` counts the stored points that
 * distributor left out of its feed since its previous message (QoS 0, bounded: see
 * stored-feed-publisher.ts), so a console can tell a quiet fleet from a gap. A point is the
 * database point exactly (internal-network/distributor/points.ts): `time` in epoch milliseconds.
 */
export { STORED_FEED_TOPIC, STORED_FEED_VERSION };

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

/** A run's name: 16 random bytes in base64url (stored-feed-publisher.ts). */
export const FEED_BOOT_PATTERN = /^[A-Za-z0-9_-]{22}$/;

/**
 * The body of a message, once its MAC verified. Compiled (zod's `z.compile`, strict), as the uplink
 * envelopes are: the console checks every stored point.
 */
export const StoredFeedMessageSchema = z.compile(
  z.object({
    source: z.string().min(1).max(LIMITS.feedNameMaxChars),
    /** the publishing distributor's run (FEED_BOOT_PATTERN) */
    boot: z.string().regex(FEED_BOOT_PATTERN),
    /** the message's number within its run, from 1 */
    seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
    /** epoch milliseconds, the distributor's clock, when it was sealed */
    sent: z.number().int().min(0).max(MAX_DATE_MS),
    /** stored points the source left out of its feed since its previous message */
    dropped: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    points: z.array(StoredPointSchema).max(LIMITS.feedPointsPerMessage),
  }),
  { strict: true },
);
export type StoredFeedMessage = z.infer<typeof StoredFeedMessageSchema>;

/**
 * A message of the stored feed, authenticated and checked, without the replay check (which needs
 * state: StoredFeedReader). In this order: its size (STORED_FEED_TOO_LARGE, before reading
 * anything), its MAC under `key` in constant time (STORED_FEED_UNAUTHENTICATED, before its body is
 * parsed), then the body (STORED_FEED_INVALID: not JSON, or not a stored-feed message; the message
 * names the first problem and where).
 */
export function parseStoredFeed(payload: Buffer | Uint8Array | string, key: StoredFeedKey): StoredFeedMessage {
  const bytes = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.byteLength;
  if (bytes > LIMITS.feedMessageMaxBytes) {
    throw new FieldStreamError('STORED_FEED_TOO_LARGE', `Stored-feed message of ${bytes} bytes; at most ${LIMITS.feedMessageMaxBytes} are accepted`, { bytes });
  }
  const body = openStoredFeed(key, typeof payload === 'string' ? Buffer.from(payload, 'utf8') : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength));
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch {
    throw new FieldStreamError('STORED_FEED_INVALID', 'Stored-feed message body is not JSON');
  }
  const parsed = StoredFeedMessageSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : '(message)';
    throw new FieldStreamError('STORED_FEED_INVALID', `Not a stored-feed message: ${where}: ${issue?.message ?? 'invalid'}`, { path: where });
  }
  return parsed.data;
}

/** Why the console refused a stored-feed message: the codes it counts them by (console_feed_refused_total{reason}). */
export const STORED_FEED_REFUSALS = ['STORED_FEED_TOO_LARGE', 'STORED_FEED_UNAUTHENTICATED', 'STORED_FEED_INVALID', 'STORED_FEED_STALE', 'STORED_FEED_REPLAYED'] as const satisfies readonly ErrorCode[];
export type StoredFeedRefusal = (typeof STORED_FEED_REFUSALS)[number];

/**
 * What the console reads the feed with: each message authenticated and checked (parseStoredFeed),
 * then taken only if it is new (StoredFeedReplayGuard: sent within the time window, not taken
 * before from its run). Throws the refusal's coded error; a refused message changes nothing.
 */
export class StoredFeedReader {
  private readonly guard: StoredFeedReplayGuard;

  constructor(
    private readonly key: StoredFeedKey,
    options: ReplayGuardOptions = {},
  ) {
    this.guard = new StoredFeedReplayGuard(options);
  }

  read(payload: Buffer | Uint8Array | string, now: number = Date.now()): StoredFeedMessage {
    const message = parseStoredFeed(payload, this.key);
    this.guard.check(message, now);
    return message;
  }
}
