import { isUtf8 } from 'node:buffer';
import protobuf from 'protobufjs';

/**
 * The Sparkplug B payload as protobuf message definitions, written from the Eclipse Sparkplug
 * specification 3.0.0, §6.4 "Sparkplug B Payload Definition" (package `org.eclipse.tahu.protobuf`,
 * proto2): Payload, Metric, MetaData, PropertyValue/PropertySet(List), DataSet (with DataSetValue
 * and Row), Template (with Parameter). Field numbers are the wire contract and follow the
 * specification's table; the `extension` members it reserves for vendors are left out, so they are
 * skipped as unknown fields on decoding, as protobuf does with any field it does not know.
 *
 * Built with protobufjs from this JSON description (no generated code, no .proto file to ship).
 */

/** §6.4.16 Data Types: the numbers a metric's `datatype` (and a property's `type`) carries. */
export const DATA_TYPES = {
  Unknown: 0,
  Int8: 1,
  Int16: 2,
  Int32: 3,
  Int64: 4,
  UInt8: 5,
  UInt16: 6,
  UInt32: 7,
  UInt64: 8,
  Float: 9,
  Double: 10,
  Boolean: 11,
  String: 12,
  DateTime: 13,
  Text: 14,
  UUID: 15,
  DataSet: 16,
  Bytes: 17,
  File: 18,
  Template: 19,
  PropertySet: 20,
  PropertySetList: 21,
  Int8Array: 22,
  Int16Array: 23,
  Int32Array: 24,
  Int64Array: 25,
  UInt8Array: 26,
  UInt16Array: 27,
  UInt32Array: 28,
  UInt64Array: 29,
  FloatArray: 30,
  DoubleArray: 31,
  BooleanArray: 32,
  StringArray: 33,
  DateTimeArray: 34,
} as const;
export type DataTypeName = keyof typeof DATA_TYPES;
export const DATA_TYPE_MAX = DATA_TYPES.DateTimeArray;
export const DATA_TYPE_NAMES = Object.fromEntries(Object.entries(DATA_TYPES).map(([k, v]) => [v, k])) as Record<number, DataTypeName>;

const opt = (type: string, id: number) => ({ type, id });
const rep = (type: string, id: number) => ({ rule: 'repeated', type, id });

const DESCRIPTOR = {
  nested: {
    sparkplug: {
      nested: {
        Payload: {
          fields: {
            timestamp: opt('uint64', 1),
            metrics: rep('Metric', 2),
            seq: opt('uint64', 3),
            uuid: opt('string', 4),
            body: opt('bytes', 5),
          },
        },
        Template: {
          fields: {
            version: opt('string', 1),
            metrics: rep('Metric', 2),
            parameters: rep('Parameter', 3),
            templateRef: opt('string', 4),
            isDefinition: opt('bool', 5),
          },
        },
        Parameter: {
          oneofs: { value: { oneof: ['intValue', 'longValue', 'floatValue', 'doubleValue', 'booleanValue', 'stringValue'] } },
          fields: {
            name: opt('string', 1),
            type: opt('uint32', 2),
            intValue: opt('uint32', 3),
            longValue: opt('uint64', 4),
            floatValue: opt('float', 5),
            doubleValue: opt('double', 6),
            booleanValue: opt('bool', 7),
            stringValue: opt('string', 8),
          },
        },
        DataSet: {
          fields: {
            numOfColumns: opt('uint64', 1),
            columns: rep('string', 2),
            types: rep('uint32', 3),
            rows: rep('Row', 4),
          },
        },
        DataSetValue: {
          oneofs: { value: { oneof: ['intValue', 'longValue', 'floatValue', 'doubleValue', 'booleanValue', 'stringValue'] } },
          fields: {
            intValue: opt('uint32', 1),
            longValue: opt('uint64', 2),
            floatValue: opt('float', 3),
            doubleValue: opt('double', 4),
            booleanValue: opt('bool', 5),
            stringValue: opt('string', 6),
          },
        },
        Row: { fields: { elements: rep('DataSetValue', 1) } },
        PropertyValue: {
          oneofs: {
            value: { oneof: ['intValue', 'longValue', 'floatValue', 'doubleValue', 'booleanValue', 'stringValue', 'propertysetValue', 'propertysetsValue'] },
          },
          fields: {
            type: opt('uint32', 1),
            isNull: opt('bool', 2),
            intValue: opt('uint32', 3),
            longValue: opt('uint64', 4),
            floatValue: opt('float', 5),
            doubleValue: opt('double', 6),
            booleanValue: opt('bool', 7),
            stringValue: opt('string', 8),
            propertysetValue: opt('PropertySet', 9),
            propertysetsValue: opt('PropertySetList', 10),
          },
        },
        PropertySet: { fields: { keys: rep('string', 1), values: rep('PropertyValue', 2) } },
        PropertySetList: { fields: { propertyset: rep('PropertySet', 1) } },
        MetaData: {
          fields: {
            isMultiPart: opt('bool', 1),
            contentType: opt('string', 2),
            size: opt('uint64', 3),
            seq: opt('uint64', 4),
            fileName: opt('string', 5),
            fileType: opt('string', 6),
            md5: opt('string', 7),
            description: opt('string', 8),
          },
        },
        Metric: {
          oneofs: {
            value: {
              oneof: ['intValue', 'longValue', 'floatValue', 'doubleValue', 'booleanValue', 'stringValue', 'bytesValue', 'datasetValue', 'templateValue'],
            },
          },
          fields: {
            name: opt('string', 1),
            alias: opt('uint64', 2),
            timestamp: opt('uint64', 3),
            datatype: opt('uint32', 4),
            isHistorical: opt('bool', 5),
            isTransient: opt('bool', 6),
            isNull: opt('bool', 7),
            metadata: opt('MetaData', 8),
            properties: opt('PropertySet', 9),
            intValue: opt('uint32', 10),
            longValue: opt('uint64', 11),
            floatValue: opt('float', 12),
            doubleValue: opt('double', 13),
            booleanValue: opt('bool', 14),
            stringValue: opt('string', 15),
            bytesValue: opt('bytes', 16),
            datasetValue: opt('DataSet', 17),
            templateValue: opt('Template', 18),
          },
        },
      },
    },
  },
};

// The specification's file is proto2: a field set to 0 or false is still written and read back as
// present (seq 0 of an NBIRTH, a false Boolean). protobufjs reads a JSON type as proto3 unless told.
for (const type of Object.values(DESCRIPTOR.nested.sparkplug.nested)) Object.assign(type, { edition: 'proto2' });
const root = protobuf.Root.fromJSON(DESCRIPTOR);
// Every field's resolvedType set now: scanWire reads them to know which fields are messages.
root.resolveAll();
export const PayloadType = root.lookupType('sparkplug.Payload');

/**
 * Bytes to a plain object: 64-bit integers as decimal strings (exact, unsigned as the wire type
 * says; signed types are reinterpreted later from the metric's datatype), bytes as base64, only the
 * fields present on the wire. The object is untrusted: payload.ts checks it with zod.
 */
export function decodeWire(bytes: Uint8Array): unknown {
  // Unknown fields (vendor extensions) dropped whatever protobufjs's global default says: scanWire
  // does not count them, so none may be kept ($unknowns) and grow the decoded object.
  const reader = protobuf.Reader.create(bytes);
  reader.discardUnknown = true;
  const message = PayloadType.decode(reader);
  return PayloadType.toObject(message, { longs: String, bytes: String, defaults: false, arrays: false, oneofs: false });
}

/** What scanWire counted. It stops at the first count past its bound, which is then that bound + 1. */
export interface WireCounts {
  /** `metrics` of the Payload itself (field 2) */
  topLevelMetrics: number;
  /** everything decoding would build: each message at any depth (metrics of templates included)
   * and each entry of a repeated scalar or string field (dataset types and columns, property keys) */
  elements: number;
  /** deepest nesting of messages reached; the Payload itself is at depth 0 */
  depth: number;
}
export interface WireBounds {
  maxTopLevelMetrics: number;
  maxElements: number;
  maxDepth: number;
}

/** protobufjs's packable scalar types and the wire type of their entries (0 varint, 1 fixed64, 5 fixed32). */
const PACKED = protobuf.types.packed as Readonly<Record<string, number | undefined>>;

/** Thrown inside scanWire to unwind as soon as a count passes its bound. */
const STOP = Symbol('scan stopped');

/**
 * Walks the bytes as protobufjs's decoder would, by the same message definitions, without
 * building anything: each field's tag is read, a message field (Metric, Template, DataSet, Row,
 * PropertySet, PropertyValue, PropertySetList, Parameter, MetaData) is descended into, a packed
 * field's entries are counted, everything else is skipped by its wire type. A caller can so refuse
 * a payload whose nesting or repeated structure would make protobufjs allocate millions of objects,
 * before it does. The specification bounds neither: a template's members "can be primitive
 * datatypes or other Templates" (§6.4.14), a property value may be a PropertySet or a
 * PropertySetList of them (§6.4.9, §6.4.10), and every array (template members and parameters,
 * §6.4.14–15; dataset columns, types, rows and their values, §6.4.11–13; property keys and values,
 * §6.4.8) is a protobuf `repeated`, "repeated forever - no limit" as §6.4.1's schema says of metrics.
 * A field is descended into only with the wire type the decoder accepts for it (2,
 * length-delimited): with any other, protobufjs skips it as unknown, and so does this.
 * Recursion is at most `maxDepth` deep (checked before descending); unknown groups are skipped by
 * protobufjs's skipType, itself bounded at its Reader.recursionLimit (100). Stops, with the count
 * that passed its bound one past it, as soon as one does. Throws on malformed wire data, and on a
 * string field (at any depth) whose bytes are not UTF-8.
 */
export function scanWire(bytes: Uint8Array, bounds: WireBounds): WireCounts {
  const counts: WireCounts = { topLevelMetrics: 0, elements: 0, depth: 0 };
  const reader = protobuf.Reader.create(bytes);
  const element = (n: number) => {
    counts.elements += n;
    if (counts.elements > bounds.maxElements) {
      counts.elements = bounds.maxElements + 1;
      throw STOP;
    }
  };
  const walk = (type: protobuf.Type, depth: number): void => {
    while (reader.pos < reader.len) {
      const tag = reader.tag();
      const id = tag >>> 3;
      const wireType = tag & 7;
      const field = type.fieldsById[id];
      if (field === undefined || wireType !== 2) {
        if (field?.repeated) element(1); // an unpacked entry of a repeated number (or one the decoder skips: counted all the same)
        reader.skipType(wireType, depth, id);
        continue;
      }
      const length = reader.size();
      const end = reader.pos + length;
      if (end > reader.len) throw new RangeError(`field ${id} is longer than what holds it`);
      if (field.resolvedType instanceof protobuf.Type) {
        if (depth === 0 && id === 2 && ++counts.topLevelMetrics > bounds.maxTopLevelMetrics) throw STOP;
        element(1);
        if (depth + 1 > bounds.maxDepth) {
          counts.depth = depth + 1;
          throw STOP;
        }
        counts.depth = Math.max(counts.depth, depth + 1);
        const outer = reader.len;
        reader.len = end;
        walk(field.resolvedType, depth + 1);
        reader.len = outer;
      } else if (field.repeated && PACKED[field.type] !== undefined) {
        // Packed: the decoder pushes one number per entry (DataSet.types, §6.4.11, is a packed
        // uint32): a varint ends at each byte below 0x80, a fixed entry is 4 or 8 bytes.
        let entries = 0;
        const room = bounds.maxElements - counts.elements;
        if (PACKED[field.type] === 0) for (let i = reader.pos; i < end && entries <= room; i++) entries += (bytes[i] as number) < 0x80 ? 1 : 0;
        else entries = Math.ceil(length / (PACKED[field.type] === 1 ? 8 : 4));
        element(entries);
        reader.pos = end;
      } else {
        if (field.repeated) element(1); // a string of `columns` or `keys`
        // A protobuf string is UTF-8 text (protobuf language guide, scalar types; Sparkplug 3.0.0
        // §6.4.16: String and Text are UTF-8 strings). protobufjs decodes one that is not with each
        // bad byte replaced by U+FFFD: "Tür" sent in Latin-1 was stored as "T\uFFFDr", never told.
        if (field.type === 'string' && !isUtf8(bytes.subarray(reader.pos, end))) throw new RangeError(`field ${field.name} is not UTF-8`);
        reader.pos = end;
      }
    }
  };
  try {
    walk(PayloadType, 0);
  } catch (err) {
    if (err !== STOP) throw err;
  }
  return counts;
}

/** A plain object (protobufjs field names, numbers or decimal strings for 64-bit fields) to bytes. */
export function encodeWire(payload: Record<string, unknown>): Uint8Array {
  return PayloadType.encode(PayloadType.fromObject(payload)).finish();
}
