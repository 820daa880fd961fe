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
export const PayloadType = root.lookupType('sparkplug.Payload');

/**
 * Bytes to a plain object: 64-bit integers as decimal strings (exact, unsigned as the wire type
 * says; signed types are reinterpreted later from the metric's datatype), bytes as base64, only the
 * fields present on the wire. The object is untrusted: payload.ts checks it with zod.
 */
export function decodeWire(bytes: Uint8Array): unknown {
  const message = PayloadType.decode(bytes);
  return PayloadType.toObject(message, { longs: String, bytes: String, defaults: false, arrays: false, oneofs: false });
}

/**
 * How many top-level `metrics` (field 2 of Payload) the bytes hold, read with protobufjs's Reader
 * without decoding any of them: each field's tag is read and the rest skipped by its wire type. A
 * caller can refuse a payload of too many metrics before protobufjs builds an object per metric.
 * Stops counting past `stopAbove` (the answer is then stopAbove + 1). Throws on malformed wire data.
 */
export function countTopLevelMetrics(bytes: Uint8Array, stopAbove: number): number {
  const reader = protobuf.Reader.create(bytes);
  let count = 0;
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag >>> 3 === 2 && ++count > stopAbove) return count;
    reader.skipType(tag & 7);
  }
  return count;
}

/** A plain object (protobufjs field names, numbers or decimal strings for 64-bit fields) to bytes. */
export function encodeWire(payload: Record<string, unknown>): Uint8Array {
  return PayloadType.encode(PayloadType.fromObject(payload)).finish();
}
