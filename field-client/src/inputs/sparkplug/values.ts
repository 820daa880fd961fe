import type { Scalar } from '../../../../shared/contract/primitives.ts';
import { FieldStreamError } from '../../../../shared/errors.ts';
import { DATA_TYPES as T, DATA_TYPE_NAMES } from './proto.ts';
import type { RawValue } from './payload.ts';

/**
 * A metric's value as a reading's field, from its data type (the one its birth certificate
 * declared, §6.4.7 "datatype", whatever a data message may repeat: host.ts) and the protobuf member
 * it came in (§6.4.16):
 * - Int8/16/32 are carried in the unsigned 32-bit `int_value`; a negative value may come as its
 *   32-bit two's complement (the specification's encoding) or, from some publishers, as the
 *   8- or 16-bit one. Both read back to the same signed number.
 * - Int64 and UInt64 come in `long_value` (UInt32 in `int_value`, or in `long_value` from older
 *   publishers: both are read). They become numbers: exact up to 2^53, rounded beyond, as every
 *   number in a reading is a double.
 * - Float and Double become numbers, Boolean a boolean, String/Text/UUID a string, DateTime its
 *   epoch milliseconds. A value carried in `float_value` (32 bits) becomes the shortest decimal
 *   that reads back as the same float (float32Decimal).
 * A value whose member contradicts its data type is refused (SPARKPLUG_PAYLOAD_INVALID). The rest
 * (null values, NaN and infinities, DataSet, Bytes, File, Template, property sets, arrays) has no
 * place in a flat reading: it is skipped and counted, with the reason.
 * A value of BAD or STALE quality (its `Quality` property, §6.4.9.1) is skipped before it is read
 * (sequenced.ts fields).
 */
export type MetricValue = { value: Scalar } | { skip: string };

const INT_RANGES: Record<number, readonly [number, number]> = {
  [T.Int8]: [-128, 127],
  [T.Int16]: [-32_768, 32_767],
  [T.Int32]: [-2_147_483_648, 2_147_483_647],
  [T.UInt8]: [0, 255],
  [T.UInt16]: [0, 65_535],
  [T.UInt32]: [0, 4_294_967_295],
};

function invalid(datatype: number, raw: RawValue): FieldStreamError {
  return new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `a ${DATA_TYPE_NAMES[datatype] ?? datatype} metric carries a ${raw.kind} value`);
}

function smallInt(datatype: number, raw: RawValue): number {
  let n: number;
  if (raw.kind === 'int') n = raw.v;
  else if (raw.kind === 'long' && raw.v <= 0xffff_ffffn) n = Number(raw.v);
  else throw invalid(datatype, raw);
  if (datatype === T.Int8 || datatype === T.Int16 || datatype === T.Int32) {
    n = n | 0; // the 32-bit two's complement
    // 8- and 16-bit two's complements: 0xFF for -1 as an Int8, 0xFFFF as an Int16.
    if (datatype === T.Int8 && n > 127 && n <= 255) n -= 256;
    if (datatype === T.Int16 && n > 32_767 && n <= 65_535) n -= 65_536;
  }
  const [lo, hi] = INT_RANGES[datatype] as readonly [number, number];
  if (n < lo || n > hi) throw new FieldStreamError('SPARKPLUG_PAYLOAD_INVALID', `${n} is out of range for ${DATA_TYPE_NAMES[datatype]}`);
  return n;
}

function longOf(datatype: number, raw: RawValue): bigint {
  if (raw.kind === 'long') return raw.v;
  if (raw.kind === 'int') return BigInt(raw.v);
  throw invalid(datatype, raw);
}

/**
 * A 32-bit float (§6.4.16 Float, protobuf `float`: what `float_value` carries) as the shortest
 * decimal that reads back as the same float, as a publisher's 21.4 was meant and as other Sparkplug
 * hosts show it. protobuf hands the float widened to a double, its exact value: 21.4 came as
 * 21.399999618530273, and was stored and shown so, a query for 21.4 finding nothing. Nine
 * significant digits always read back (IEEE 754: 9 for binary32), so the loop ends by then.
 */
function float32Decimal(v: number): number {
  for (let digits = 1; digits < 9; digits++) {
    const d = Number(v.toPrecision(digits));
    if (Math.fround(d) === v) return d;
  }
  return Number(v.toPrecision(9));
}

export function metricValue(datatype: number, raw: RawValue, isNull: boolean): MetricValue {
  if (isNull || raw.kind === 'none') return { skip: 'null value' };
  switch (datatype) {
    case T.Int8:
    case T.Int16:
    case T.Int32:
    case T.UInt8:
    case T.UInt16:
    case T.UInt32:
      return { value: smallInt(datatype, raw) };
    case T.Int64:
      return { value: Number(BigInt.asIntN(64, longOf(datatype, raw))) };
    case T.UInt64:
      return { value: Number(longOf(datatype, raw)) };
    case T.DateTime: {
      const ms = Number(longOf(datatype, raw));
      return ms <= 8.64e15 ? { value: ms } : { skip: 'DateTime beyond the range of a date' };
    }
    case T.Float:
    case T.Double: {
      if (raw.kind !== 'float' && raw.kind !== 'double') throw invalid(datatype, raw);
      if (!Number.isFinite(raw.v)) return { skip: 'NaN or infinite' };
      return { value: raw.kind === 'float' ? float32Decimal(raw.v) : raw.v };
    }
    case T.Boolean:
      if (raw.kind !== 'boolean') throw invalid(datatype, raw);
      return { value: raw.v };
    case T.String:
    case T.Text:
    case T.UUID:
      if (raw.kind !== 'string') throw invalid(datatype, raw);
      return { value: raw.v };
    default:
      return { skip: `data type ${DATA_TYPE_NAMES[datatype] ?? datatype} is not stored as a field` };
  }
}
