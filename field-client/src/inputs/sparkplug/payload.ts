import { z } from 'zod';
import { FieldStreamError } from '../../../../shared/errors.ts';
import { LIMITS } from '../../../../shared/limits.ts';
import { DATA_TYPE_MAX, DATA_TYPES, decodeWire, encodeWire, scanWire } from './proto.ts';

/**
 * A Sparkplug B payload from bytes: protobuf decoding (proto.ts), then every field checked here
 * before anything else looks at it. What fails either is refused with SPARKPLUG_PAYLOAD_INVALID.
 */

const MAX_DATE_MS = 8.64e15;
const U64_MAX = (1n << 64n) - 1n;

/** 64-bit integers arrive as decimal strings (proto.ts), so none is rounded before it is checked. */
const U64 = z
  .string()
  .regex(/^\d{1,20}$/, 'must be an unsigned 64-bit integer')
  .transform((s) => BigInt(s))
  .refine((v) => v <= U64_MAX, 'must be an unsigned 64-bit integer');
const U32 = z.number().int().min(0).max(0xffff_ffff);
/** A float or double as decoded: NaN and infinities are values Sparkplug may carry (values.ts decides). */
const AnyNumber = z.custom<number>((v) => typeof v === 'number', 'must be a number');
const safe = (what: string) => (v: bigint) => v <= BigInt(Number.MAX_SAFE_INTEGER) || `${what} is larger than 2^53 − 1`;

/** The raw value of a metric, by the protobuf member it came in (§6.4.7: the `value` oneof). */
export type RawValue =
  | { kind: 'int'; v: number }
  | { kind: 'long'; v: bigint }
  | { kind: 'float'; v: number }
  | { kind: 'double'; v: number }
  | { kind: 'boolean'; v: boolean }
  | { kind: 'string'; v: string }
  | { kind: 'bytes' | 'dataset' | 'template' | 'none' };

/**
 * §6.4.9.1 (Quality Codes): a metric's `Quality` property, an Int32 (type 3), says whether its value
 * may be trusted. BAD and STALE values are not measurements (a failed sensor, a PLC no longer read,
 * the last value kept): the host skips them (sequenced.ts fields).
 */
export const QUALITY = { BAD: 0, GOOD: 192, STALE: 500 } as const;
const QUALITY_KEY = 'Quality';

/** A property set as decoded (proto.ts: arrays left out when empty); only what qualityOf reads is checked. */
const PropertySetSchema = z.object({
  keys: z.array(z.unknown()).optional(),
  values: z.array(z.unknown()).optional(),
});
const QualityValueSchema = z.object({ intValue: U32.optional(), longValue: z.string().regex(/^\d{1,20}$/).optional() });

/**
 * The `Quality` of a metric's properties: its Int32 value (carried in the unsigned `int_value`, read
 * back signed as values.ts reads an Int32), undefined when there is none or it cannot be read.
 */
function qualityOf(properties: Record<string, unknown> | undefined): number | undefined {
  if (properties === undefined) return undefined;
  const set = PropertySetSchema.safeParse(properties);
  if (!set.success) return undefined;
  const i = set.data.keys?.indexOf(QUALITY_KEY) ?? -1;
  if (i < 0) return undefined;
  const v = QualityValueSchema.safeParse(set.data.values?.[i]);
  if (!v.success) return undefined;
  if (v.data.intValue !== undefined) return v.data.intValue | 0;
  return v.data.longValue === undefined ? undefined : Number(BigInt.asIntN(64, BigInt(v.data.longValue)));
}

export const SparkplugMetricSchema = z
  .object({
    name: z.string().max(LIMITS.sparkplugNameMaxChars).optional(),
    alias: U64.optional(),
    timestamp: U64.optional(),
    datatype: U32.max(DATA_TYPE_MAX, `must be a Sparkplug data type (0–${DATA_TYPE_MAX})`).optional(),
    isHistorical: z.boolean().optional(),
    isTransient: z.boolean().optional(),
    isNull: z.boolean().optional(),
    metadata: z.record(z.string(), z.unknown()).optional(),
    properties: z.record(z.string(), z.unknown()).optional(),
    intValue: U32.optional(),
    longValue: U64.optional(),
    floatValue: AnyNumber.optional(),
    doubleValue: AnyNumber.optional(),
    booleanValue: z.boolean().optional(),
    stringValue: z.string().max(LIMITS.stringMaxChars).optional(),
    bytesValue: z.string().optional(),
    datasetValue: z.record(z.string(), z.unknown()).optional(),
    templateValue: z.record(z.string(), z.unknown()).optional(),
  })
  .superRefine((m, ctx) => {
    if (m.alias !== undefined) {
      const ok = safe('alias')(m.alias);
      if (ok !== true) ctx.addIssue({ code: 'custom', path: ['alias'], message: ok });
    }
    if (m.timestamp !== undefined && m.timestamp > BigInt(MAX_DATE_MS)) ctx.addIssue({ code: 'custom', path: ['timestamp'], message: 'is beyond the range of a date' });
    if (m.name === undefined && m.alias === undefined) ctx.addIssue({ code: 'custom', message: 'has neither a name nor an alias' });
  })
  .transform((m) => ({
    name: m.name,
    alias: m.alias === undefined ? undefined : Number(m.alias),
    timestamp: m.timestamp === undefined ? undefined : Number(m.timestamp),
    datatype: m.datatype,
    isHistorical: m.isHistorical === true,
    isTransient: m.isTransient === true,
    isNull: m.isNull === true,
    quality: qualityOf(m.properties),
    raw: rawOf(m),
  }));
export type SparkplugMetric = z.infer<typeof SparkplugMetricSchema>;

function rawOf(m: {
  intValue?: number | undefined;
  longValue?: bigint | undefined;
  floatValue?: number | undefined;
  doubleValue?: number | undefined;
  booleanValue?: boolean | undefined;
  stringValue?: string | undefined;
  bytesValue?: string | undefined;
  datasetValue?: unknown;
  templateValue?: unknown;
}): RawValue {
  if (m.intValue !== undefined) return { kind: 'int', v: m.intValue };
  if (m.longValue !== undefined) return { kind: 'long', v: m.longValue };
  if (m.floatValue !== undefined) return { kind: 'float', v: m.floatValue };
  if (m.doubleValue !== undefined) return { kind: 'double', v: m.doubleValue };
  if (m.booleanValue !== undefined) return { kind: 'boolean', v: m.booleanValue };
  if (m.stringValue !== undefined) return { kind: 'string', v: m.stringValue };
  if (m.bytesValue !== undefined) return { kind: 'bytes' };
  if (m.datasetValue !== undefined) return { kind: 'dataset' };
  if (m.templateValue !== undefined) return { kind: 'template' };
  return { kind: 'none' };
}

/** §6.4.18 (Payload Compression): the uuid a compressed payload carries; its body is not read here. */
export const COMPRESSED_UUID = 'SPBV1.0_COMPRESSED';

export const SparkplugPayloadSchema = z
  .object({
    timestamp: U64.refine((v) => v <= BigInt(MAX_DATE_MS), 'is beyond the range of a date').optional(),
    metrics: z.array(SparkplugMetricSchema).max(LIMITS.sparkplugMaxMetrics).optional(),
    // §6.4.2: seq is 0–255 in every message that carries one (all but NDEATH and commands).
    seq: U64.refine((v) => v <= 255n, 'must be 0–255').optional(),
    uuid: z.string().max(256).refine((u) => u !== COMPRESSED_UUID, 'is a compressed payload, which this input does not read').optional(),
    body: z.string().optional(),
  })
  .transform((p) => ({
    timestamp: p.timestamp === undefined ? undefined : Number(p.timestamp),
    seq: p.seq === undefined ? undefined : Number(p.seq),
    uuid: p.uuid,
    metrics: p.metrics ?? [],
  }));
export type SparkplugPayload = z.infer<typeof SparkplugPayloadSchema>;

/** Bytes from the broker to a checked payload, or SPARKPLUG_PAYLOAD_INVALID. */
export function decodePayload(bytes: Uint8Array): SparkplugPayload {
  if (bytes.length > LIMITS.sparkplugPayloadMaxBytes) {
    throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `payload of ${bytes.length} bytes is larger than ${LIMITS.sparkplugPayloadMaxBytes}`);
  }
  let wire: unknown;
  try {
    // Counted on the wire before decoding: protobufjs would otherwise build (and toObject) every
    // element first, and a 4 MiB payload of empty metrics (`12 00` repeated) is two million of
    // them, at the top level or inside one template, dataset or property set (proto.ts, scanWire).
    const counts = scanWire(bytes, { maxTopLevelMetrics: LIMITS.sparkplugMaxMetrics, maxElements: LIMITS.sparkplugMaxElements, maxDepth: LIMITS.sparkplugMaxDepth });
    if (counts.topLevelMetrics > LIMITS.sparkplugMaxMetrics) {
      throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `payload has more than ${LIMITS.sparkplugMaxMetrics} metrics (LIMITS.sparkplugMaxMetrics)`);
    }
    if (counts.depth > LIMITS.sparkplugMaxDepth) {
      throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `payload nests messages more than ${LIMITS.sparkplugMaxDepth} deep (LIMITS.sparkplugMaxDepth)`);
    }
    if (counts.elements > LIMITS.sparkplugMaxElements) {
      throw new FieldStreamError(
        'SPARKPLUG_PAYLOAD_INVALID',
        `payload has more than ${LIMITS.sparkplugMaxElements} elements (metrics of templates, dataset rows and values, properties; LIMITS.sparkplugMaxElements)`,
      );
    }
    wire = decodeWire(bytes);
  } catch (err) {
    if (err instanceof FieldStreamError) throw err;
    throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `not a Sparkplug B protobuf payload: ${(err as Error).message}`);
  }
  const r = SparkplugPayloadSchema.safeParse(wire);
  if (!r.success) {
    const first = r.error.issues[0];
    throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', first ? `${first.path.join('.') || '(payload)'}: ${first.message}` : 'invalid Sparkplug B payload');
  }
  return r.data;
}

/** The rebirth request of §6.4.6 / §8.2.2: an NCMD whose metric `Node Control/Rebirth` is true. */
export const REBIRTH_METRIC = 'Node Control/Rebirth';

export function rebirthCommand(nowMs: number): Uint8Array {
  return encodeWire({
    timestamp: String(nowMs),
    metrics: [{ name: REBIRTH_METRIC, timestamp: String(nowMs), datatype: DATA_TYPES.Boolean, booleanValue: true }],
  });
}
