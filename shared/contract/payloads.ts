import { z } from 'zod';
import { FieldStreamError } from '../errors.ts';
import { LIMITS } from '../limits.ts';
import { unsafeFilenameReason } from './filename.ts';
import { holdsMoreValuesThan } from './json-bound.ts';
import { FIELD_NAME_PATTERN, FIELD_NAME_RULE, isTimestamp, keysAtMost, MessageIdSchema, predicate, scalarProblem, ScalarSchema, TimestampSchema, type Scalar } from './primitives.ts';

/** A JSON object (not an array, not null), as JSON.parse makes them. */
const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The payloads of the message kinds: the four the seed writes, and the field client's health
 * report. Each schema is the single definition used by the gateway (to answer the device) and
 * again by the distributor (which does not trust what crossed the DMZ).
 */

export const DATA_TYPES = ['timeseries', 'file', 'event', 'response', 'health'] as const;
export const DataTypeSchema = z.enum(DATA_TYPES);
export type DataType = z.infer<typeof DataTypeSchema>;

/** Problems a payload check reports at most (an error names the first ten): it stops looking after them. */
const CONTRACT_ISSUES_MAX = 10;

/** Issue params that select a more specific error code than CONTRACT_INVALID_MESSAGE. */
export const ISSUE_CODE_PARAM = 'fieldstreamCode';

/** Adds an issue at a reading's field; returns 1, the problems it adds. */
function fieldIssue(ctx: z.RefinementCtx, name: string, message: string): 1 {
  ctx.addIssue({ code: 'custom', path: [name], message });
  return 1;
}

/**
 * `{"temperature": 23.5, "humidity": 65.2, "timestamp": "2024-01-01T12:00:00Z"}`: flat fields of
 * numbers, strings or booleans, plus an optional device timestamp.
 */
export const TimeseriesPayloadSchema = predicate<Record<string, Scalar>>(isPlainObject, 'must be a JSON object of fields').superRefine((fields, ctx) => {
  // One pass over the fields instead of z.record(FieldNameSchema, ScalarSchema): readings are
  // checked at both trust boundaries, and the record costs 1.5 µs per reading there, this 0.2 µs
  // (measured). The rules, messages and paths are the same.
  // Past the field limit, or past a few problems, nothing more is looked at: a frame of 8 MiB can
  // hold 750,000 keys, and one issue each made its refusal cost seconds.
  // No closure here (an `issue` helper made per reading): tsx compiles with esbuild's keepNames,
  // and naming each one cost a tenth of the gateway's CPU under load (docs/performance-history.md).
  let count = 0;
  let problems = 0;
  for (const name in fields) {
    if (++count > LIMITS.readingMaxFields) break;
    if (problems >= CONTRACT_ISSUES_MAX) continue;
    if (!FIELD_NAME_PATTERN.test(name)) problems += fieldIssue(ctx, name, `field name ${FIELD_NAME_RULE}`);
    const value = fields[name];
    if (name === 'timestamp') {
      if (!isTimestamp(value)) problems += fieldIssue(ctx, 'timestamp', 'must be an ISO 8601 date-time with a zone, or epoch milliseconds');
      continue;
    }
    const problem = scalarProblem(value);
    if (problem) problems += fieldIssue(ctx, name, problem);
  }
  if (count > LIMITS.readingMaxFields) ctx.addIssue({ code: 'custom', message: `holds more than ${LIMITS.readingMaxFields} fields` });
  if (count - ('timestamp' in fields ? 1 : 0) === 0) ctx.addIssue({ code: 'custom', message: 'holds no field besides "timestamp"' });
});
export type TimeseriesPayload = z.infer<typeof TimeseriesPayloadSchema>;

const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;
const MAX_BASE64_CHARS = Math.ceil(LIMITS.fileMaxBytes / 3) * 4;

export const FilenameSchema = z.string().superRefine((name, ctx) => {
  const reason = unsafeFilenameReason(name);
  if (reason) ctx.addIssue({ code: 'custom', message: `file name ${reason}`, params: { [ISSUE_CODE_PARAM]: 'CONTRACT_UNSAFE_FILENAME' } });
});

/** Base64 in the standard or the URL-safe alphabet (RFC 4648 §4 and §5), as Node decodes both. */
export const Base64DataSchema = z.string().superRefine((data, ctx) => {
  if (data.length > MAX_BASE64_CHARS) {
    ctx.addIssue({
      code: 'custom',
      message: `file data is larger than ${LIMITS.fileMaxBytes} bytes`,
      params: { [ISSUE_CODE_PARAM]: 'CONTRACT_INVALID_FILE_DATA' },
    });
  } else if (!BASE64.test(data) || data.length % 4 === 1) {
    ctx.addIssue({ code: 'custom', message: 'file data is not base64', params: { [ISSUE_CODE_PARAM]: 'CONTRACT_INVALID_FILE_DATA' } });
  }
});

/**
 * A large file travels as chunks: each message carries one chunk in `data` and says which
 * (`transfer`). The distributor stores chunks as they come, and when all are there joins them,
 * checks the SHA-256 of the whole file and only then stores it.
 */
export const FileTransferSchema = z.strictObject({
  // The distributor names a folder (and its done marker, ID.done.json) after the id: ".", ".." or
  // another transfer's marker name would make it another folder, or that marker.
  id: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'must be 1–64 letters, digits, ".", "_" or "-", starting with a letter or digit')
    .refine((id) => !id.includes('.done.json'), 'must not contain ".done.json"'),
  index: z.number().int().min(0),
  // At most the replay window: a chunk index is a sequence number of the transfer's own epoch, and
  // the distributor receipts an authentic one below its window unstored (LIMITS.fileMaxChunks).
  count: z.number().int().min(1).max(Math.min(LIMITS.fileMaxChunks, LIMITS.replayWindowSeqs)),
  /** bytes of the whole file */
  size: z.number().int().min(0).max(LIMITS.fileTransferMaxBytes),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits'),
}).refine((t) => t.index < t.count, { message: 'index must be below count', path: ['index'] });
export type FileTransfer = z.infer<typeof FileTransferSchema>;

export const FilePayloadSchema = z.strictObject({
  filename: FilenameSchema,
  contentType: z.string().min(1).max(255).regex(/^[\w.+-]+\/[\w.+-]+(\s*;.*)?$/, 'must be a media type like image/jpeg').optional(),
  data: Base64DataSchema,
  transfer: FileTransferSchema.optional(),
  // At most as many keys as a reading's fields: unbounded, a frame's worth of them was checked one
  // by one (seconds of the gateway's event loop) and then accepted, though only `size` and
  // `timestamp` are kept.
  metadata: keysAtMost(
    LIMITS.readingMaxFields,
    `holds more than ${LIMITS.readingMaxFields} fields`,
    z
      .object({
        // The size the device declares; the distributor stores the decoded size beside it.
        size: z.number().int().min(0).optional(),
        timestamp: TimestampSchema.optional(),
      })
      .catchall(ScalarSchema),
  ).optional(),
});
export type FilePayload = z.infer<typeof FilePayloadSchema>;

// At most as many keys as a reading may have, counted before anything else (keysAtMost): each is a
// field of the stored point, and a frame's worth of tiny keys would otherwise make one point of
// tens of thousands of fields. Counted after the catchall had checked each of them, a frame of
// 400,000 held the gateway's event loop (and the distributor's) for 1 s, 3 s when their values
// were wrong.
export const EventPayloadSchema = keysAtMost(
  LIMITS.readingMaxFields,
  `holds more than ${LIMITS.readingMaxFields} fields`,
  z
    .object({
      eventType: z.string().min(1).max(64).regex(/^[A-Za-z0-9._-]+$/, 'must hold only letters, digits, ".", "_" and "-"'),
      severity: z.string().min(1).max(32).regex(/^[A-Za-z0-9._-]+$/).optional(),
      message: z.string().max(LIMITS.stringMaxChars).optional(),
      timestamp: TimestampSchema.optional(),
    })
    .catchall(ScalarSchema)
    // Every further key becomes a field key of the event's point (points.ts eventPoints), so it is
    // held to the field-name rule as a reading's are: a key like `zz\` (a trailing backslash escapes
    // the `=` after it in line protocol) let a signed event forge a line for another device.
    .superRefine((event, ctx) => {
      let problems = 0;
      for (const name in event) {
        if (problems >= CONTRACT_ISSUES_MAX) break;
        if (!FIELD_NAME_PATTERN.test(name)) {
          problems++;
          ctx.addIssue({ code: 'custom', path: [name], message: `field name ${FIELD_NAME_RULE}` });
        }
      }
    }),
);
export type EventPayload = z.infer<typeof EventPayloadSchema>;

export const COMMAND_RESPONSE_STATUSES = ['accepted', 'completed', 'failed', 'rejected'] as const;

/** A JSON value: what JSON.parse makes of a text, finite numbers only. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/**
 * Why a parsed value is not a {@link JsonValue} we accept, or undefined when it is one. Depth first,
 * and never deeper than LIMITS.jsonMaxDepth: the check itself must not overflow the stack on the
 * hostile input it exists to refuse. Non-finite numbers are refused (JSON.parse turns 1e999 into
 * Infinity, which JSON.stringify writes as null: the value would reach the other side changed).
 */
function jsonProblem(v: unknown, depth: number): string | undefined {
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return undefined;
    case 'number':
      return Number.isFinite(v) ? undefined : 'holds a number JSON cannot represent';
    case 'object': {
      if (v === null) return undefined;
      if (depth >= LIMITS.jsonMaxDepth) return `nests arrays and objects deeper than ${LIMITS.jsonMaxDepth} levels`;
      if (Array.isArray(v)) {
        for (const x of v) {
          const problem = jsonProblem(x, depth + 1);
          if (problem) return problem;
        }
        return undefined;
      }
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) return 'holds a value that is not JSON';
      if (Object.hasOwn(v, '__proto__')) return 'holds a "__proto__" key';
      for (const key in v) {
        const problem = jsonProblem((v as Record<string, unknown>)[key], depth + 1);
        if (problem) return problem;
      }
      return undefined;
    }
    default:
      return 'holds a value that is not JSON';
  }
}

/**
 * A JSON value of bounded size and depth, for command parameters and results. A "__proto__" key is
 * refused: JSON.parse makes it an own property, but no copy of the object keeps it (assigning it
 * sets the prototype instead), so the value would reach the other side changed, and its signature,
 * made over the text, would no longer match.
 *
 * One predicate rather than zod's `z.json()`: that schema refers to itself, and a schema holding a
 * self-reference makes zod track cycles on every parse of every schema that contains it (the
 * uplink frame and envelope unions, parsed for each message at both trust boundaries), and its
 * recursion has no bound.
 */
export const JsonValueSchema = z.custom<JsonValue>().superRefine((value, ctx) => {
  jsonValueText(value, ctx);
});

/** The JSON text of `value`, or undefined with an issue added when it is no JSON value of free form. */
function jsonValueText(value: unknown, ctx: z.RefinementCtx): string | undefined {
  const problem = value === undefined ? 'must be a JSON value' : jsonProblem(value, 0);
  if (problem) {
    ctx.addIssue({ code: 'custom', message: problem });
    return undefined;
  }
  const text = JSON.stringify(value);
  if (text.length <= LIMITS.stringMaxChars) return text;
  ctx.addIssue({ code: 'custom', message: `is larger than ${LIMITS.stringMaxChars} characters as JSON` });
  return undefined;
}

/**
 * A command response's result: a JSON value of free form holding at most
 * LIMITS.commandResultMaxValues values and containers, counted in its text as the internal side
 * counts an envelope before it parses it (json-bound.ts), so that the responses of one envelope
 * cannot hold more than LIMITS.responseEnvelopeMaxValues. A text of at most that many characters
 * cannot hold more (each counted character is one) and is not counted.
 */
export const CommandResultSchema = z.custom<JsonValue>().superRefine((value, ctx) => {
  const text = jsonValueText(value, ctx);
  if (text === undefined || text.length <= LIMITS.commandResultMaxValues) return;
  if (holdsMoreValuesThan(Buffer.from(text), LIMITS.commandResultMaxValues)) {
    ctx.addIssue({
      code: 'custom',
      message: `holds more than ${LIMITS.commandResultMaxValues} JSON values and containers`,
      params: { [ISSUE_CODE_PARAM]: 'CONTRACT_RESULT_TOO_MANY_VALUES' },
    });
  }
});

export const ResponsePayloadSchema = z.strictObject({
  commandId: MessageIdSchema,
  status: z.enum(COMMAND_RESPONSE_STATUSES),
  result: CommandResultSchema.optional(),
  timestamp: TimestampSchema.optional(),
});
export type ResponsePayload = z.infer<typeof ResponsePayloadSchema>;

/**
 * The name of a value a local program reports with the health message (battery, signal_dbm): the
 * field-name rule, at most 64 characters, since it is stored as the field `local_<name>`
 * (`__proto__` excepted: a JavaScript object cannot hold it as a plain key).
 */
export const LOCAL_VALUE_NAME_PATTERN = /^(?!__proto__$)[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;
export const LOCAL_VALUE_NAME_RULE = 'must be at most 64 characters, start with a letter or "_" and hold only letters, digits, "_", "." and "-"';

/** A local value: a finite number, a boolean, or a short string. */
export const LocalValueSchema = z.union([
  z.number().refine(Number.isFinite, 'must be a finite number'),
  z.boolean(),
  z.string().max(LIMITS.healthLocalStringMaxChars),
]);
export type LocalValue = z.infer<typeof LocalValueSchema>;

/**
 * The values local programs reported, by name; at most LIMITS.healthLocalMaxValues of them, counted
 * before the record checks each (a refinement after it counted 400,000 of them in a frame only once
 * each was checked: 1 s of the gateway's event loop, 4 s when their values were wrong).
 */
export const LocalValuesSchema = keysAtMost(
  LIMITS.healthLocalMaxValues,
  `holds more than ${LIMITS.healthLocalMaxValues} values`,
  z.record(z.string().regex(LOCAL_VALUE_NAME_PATTERN, `name ${LOCAL_VALUE_NAME_RULE}`), LocalValueSchema),
);
export type LocalValues = z.infer<typeof LocalValuesSchema>;

const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/**
 * The field client's heartbeat: how the device itself is doing, sent every FIELD_HEALTH_INTERVAL_S
 * through its queue like any message (docs/field-client.md). An optional figure is absent when the
 * device cannot tell it (no unsent message, no welcome from a gateway yet, an unreadable file).
 */
export const HealthPayloadSchema = z.strictObject({
  /** seconds since the field client started */
  uptimeSeconds: count,
  /** messages in the durable queue not yet committed (unsent, in flight, awaiting their receipt) */
  queueMessages: count,
  /** bytes on disk of the queue and of the files waiting in the outbox */
  queueBytes: count,
  /** messages acknowledged by the gateway and awaiting their commit receipt */
  awaitingReceipt: count,
  /** seconds since the oldest message not yet committed was accepted; absent when there is none */
  oldestUnsentAgeSeconds: count.optional(),
  /** bytes free for the field client on the file system of its data folder */
  freeDiskBytes: count.optional(),
  /** whole days until the device certificate expires (negative once expired) */
  certDaysLeft: z.number().int().min(-LIMITS.healthCertDaysMax).max(LIMITS.healthCertDaysMax).optional(),
  /** milliseconds the gateway's clock is ahead of the device's (negative: behind), measured at its last welcome */
  clockOffsetMs: z.number().int().min(-Number.MAX_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER).optional(),
  /** the field client's software version */
  version: z.string().min(1).max(64).regex(/^[0-9A-Za-z][0-9A-Za-z.+_-]*$/, 'must hold only letters, digits, ".", "+", "_" and "-"'),
  /** seconds between health messages */
  intervalSeconds: z.number().int().min(1).max(LIMITS.healthIntervalMaxS),
  /** what local programs reported (battery, signal strength), each kept until replaced */
  local: LocalValuesSchema.optional(),
  timestamp: TimestampSchema.optional(),
});
export type HealthPayload = z.infer<typeof HealthPayloadSchema>;

export const PAYLOAD_SCHEMAS = {
  timeseries: TimeseriesPayloadSchema,
  file: FilePayloadSchema,
  event: EventPayloadSchema,
  response: ResponsePayloadSchema,
  health: HealthPayloadSchema,
} as const;

/**
 * A payload in the form the gateway and the distributor will re-serialise it in, so that the text
 * a device signs is the text they check: the object schemas put their own fields first, in schema
 * order (an event `{"zone", "eventType"}` comes out `{"eventType", "zone"}`). Readings, the hot
 * path, are checked by a predicate that keeps their order, and are taken as they are.
 */
export function canonicalPayload(dataType: DataType, payload: unknown): unknown {
  if (dataType === 'timeseries') return payload;
  const parsed = PAYLOAD_SCHEMAS[dataType].safeParse(payload);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new FieldStreamError('FIELD_INPUT_INVALID', `Not a valid ${dataType} payload — ${first ? `${first.path.join('.')}: ${first.message}` : 'invalid'}`);
  }
  return parsed.data;
}
