import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { decodePayload } from '../../field-client/src/inputs/sparkplug/payload.ts';
import { DATA_TYPES, decodeWire, encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';
import { SparkplugSession } from '../../field-client/src/inputs/sparkplug/session.ts';
import type { Submission } from '../../field-client/src/client-options.ts';
import { createLogger } from '../../shared/logger.ts';

/**
 * What one Sparkplug B payload may make the decoder build, counted on the wire before protobufjs
 * decodes anything: LIMITS.sparkplugMaxMetrics top-level metrics, LIMITS.sparkplugMaxElements
 * elements at every depth (the members of templates, dataset rows and values, property sets) and
 * LIMITS.sparkplugMaxDepth levels of nesting. Past any of them a payload is refused with
 * SPARKPLUG_PAYLOAD_INVALID without being decoded, and the input goes on. The hostile payloads are
 * written byte by byte (tags, varint lengths), 4 MiB of the cheapest element each.
 */
describe('Sparkplug B metric count', () => {
  it('refuses two million empty metrics (bytes 12 00) with SPARKPLUG_PAYLOAD_INVALID', () => {
    const bytes = Buffer.alloc(LIMITS.sparkplugPayloadMaxBytes);
    for (let i = 0; i < bytes.length; i += 2) bytes[i] = 0x12; // field 2, wire type 2, length 0
    assert.throws(
      () => decodePayload(bytes),
      (err: unknown) => isFieldStreamError(err, 'SPARKPLUG_PAYLOAD_INVALID') && /more than 10000 metrics|sparkplugMaxMetrics/.test(err.message),
    );
  });

  it('still decodes a payload of exactly LIMITS.sparkplugMaxMetrics metrics', () => {
    const metrics = Array.from({ length: LIMITS.sparkplugMaxMetrics }, (_, i) => ({ name: `m${i}`, datatype: 10, doubleValue: i }));
    const p = decodePayload(encodeWire({ timestamp: '1700000000000', seq: '0', metrics }));
    assert.equal(p.metrics.length, LIMITS.sparkplugMaxMetrics);
    assert.equal(p.metrics[LIMITS.sparkplugMaxMetrics - 1]?.name, `m${LIMITS.sparkplugMaxMetrics - 1}`);
  });

  it('refuses one metric more than the limit, and malformed wire data, with the code', () => {
    const metrics = Array.from({ length: LIMITS.sparkplugMaxMetrics + 1 }, (_, i) => ({ name: `m${i}` }));
    assert.throws(() => decodePayload(encodeWire({ seq: '0', metrics })), (err: unknown) => isFieldStreamError(err, 'SPARKPLUG_PAYLOAD_INVALID'));
    assert.throws(() => decodePayload(Uint8Array.from([0x12, 0x05, 0x0a])), (err: unknown) => isFieldStreamError(err, 'SPARKPLUG_PAYLOAD_INVALID'));
  });
});

/** A protobuf varint. */
function varint(n: number): number[] {
  const out: number[] = [];
  for (; n > 0x7f; n >>>= 7) out.push((n & 0x7f) | 0x80);
  out.push(n);
  return out;
}
// Tags (field number << 3 | 2): Metric.properties 9, datasetValue 17, templateValue 18 (two-byte varints).
const PROPERTIES = [0x4a];
const DATASET = [0x8a, 0x01];
const TEMPLATE = [0x92, 0x01];

/** Get a path of the decoded object (arrays by index), for checking what the builders make. */
function at(o: unknown, ...path: Array<string | number>): unknown {
  return path.reduce<unknown>((v, k) => (v as Record<string | number, unknown> | undefined)?.[k], o);
}

/**
 * The cheapest elements of each repeated structure the decoder materialises: `unit` is one element
 * (an empty message `tag 00`, an empty string, a one-byte packed number), `path` the tags of the
 * length-delimited fields around the run of them inside the metric (of `datatype`), `list` where
 * protobufjs puts them.
 */
const KINDS: Array<{ name: string; datatype: number; unit: number[]; path: number[][]; list: (wire: unknown) => unknown }> = [
  { name: 'template members (Template.metrics)', datatype: DATA_TYPES.Template, unit: [0x12, 0x00], path: [TEMPLATE], list: (w) => at(w, 'metrics', 0, 'templateValue', 'metrics') },
  { name: 'template parameters', datatype: DATA_TYPES.Template, unit: [0x1a, 0x00], path: [TEMPLATE], list: (w) => at(w, 'metrics', 0, 'templateValue', 'parameters') },
  {
    name: "members of a template within a template's member",
    datatype: DATA_TYPES.Template,
    unit: [0x12, 0x00],
    path: [TEMPLATE, [0x12], TEMPLATE],
    list: (w) => at(w, 'metrics', 0, 'templateValue', 'metrics', 0, 'templateValue', 'metrics'),
  },
  { name: 'dataset rows', datatype: DATA_TYPES.DataSet, unit: [0x22, 0x00], path: [DATASET], list: (w) => at(w, 'metrics', 0, 'datasetValue', 'rows') },
  { name: 'dataset values of one row', datatype: DATA_TYPES.DataSet, unit: [0x0a, 0x00], path: [DATASET, [0x22]], list: (w) => at(w, 'metrics', 0, 'datasetValue', 'rows', 0, 'elements') },
  { name: 'dataset columns', datatype: DATA_TYPES.DataSet, unit: [0x12, 0x00], path: [DATASET], list: (w) => at(w, 'metrics', 0, 'datasetValue', 'columns') },
  { name: 'dataset types, packed (one byte each)', datatype: DATA_TYPES.DataSet, unit: [0x00], path: [DATASET, [0x1a]], list: (w) => at(w, 'metrics', 0, 'datasetValue', 'types') },
  { name: 'property keys', datatype: DATA_TYPES.Int32, unit: [0x0a, 0x00], path: [PROPERTIES], list: (w) => at(w, 'metrics', 0, 'properties', 'keys') },
  { name: 'property values', datatype: DATA_TYPES.Int32, unit: [0x12, 0x00], path: [PROPERTIES], list: (w) => at(w, 'metrics', 0, 'properties', 'values') },
  {
    name: 'property sets of a property set list',
    datatype: DATA_TYPES.Int32,
    unit: [0x0a, 0x00],
    path: [PROPERTIES, [0x12], [0x52]],
    list: (w) => at(w, 'metrics', 0, 'properties', 'values', 0, 'propertysetsValue', 'propertyset'),
  },
];

/** Payload { seq: 0, metrics: [Metric { name: "t", datatype, <path> { `count` elements } }] }, in one buffer. */
function build(kind: (typeof KINDS)[number], count: number): Buffer {
  const run = kind.unit.length * count;
  const headers: number[] = [];
  for (const tag of [...kind.path].reverse()) headers.unshift(...tag, ...varint(headers.length + run));
  const metric = [0x0a, 0x01, 0x74, 0x20, kind.datatype, ...headers];
  const prefix = [0x18, 0x00, 0x12, ...varint(metric.length + run), ...metric];
  const bytes = Buffer.alloc(prefix.length + run);
  bytes.set(prefix);
  return bytes.fill(Buffer.from(kind.unit), prefix.length);
}
/** As many elements of a kind as LIMITS.sparkplugPayloadMaxBytes holds (the wrapping takes < 32 bytes). */
const hostile = (kind: (typeof KINDS)[number]): Buffer => build(kind, Math.floor((LIMITS.sparkplugPayloadMaxBytes - 32) / kind.unit.length));

const refused = (limit: string) => (err: unknown) => isFieldStreamError(err, 'SPARKPLUG_PAYLOAD_INVALID') && err.message.includes(limit);

/**
 * A top-level metric whose templates nest so that the deepest message is at `depth` (the payload
 * at 0, its metrics at 1, a template at 2, its member at 3...): §6.4.14 lets a template's members be
 * templates. An even depth ends with a template without members.
 */
function nestedTemplates(depth: number): Record<string, unknown> {
  const metricAt = (d: number): Record<string, unknown> =>
    d === depth
      ? { name: `m${d}`, datatype: DATA_TYPES.Int32, intValue: d }
      : { name: `m${d}`, datatype: DATA_TYPES.Template, templateValue: d + 1 === depth ? { templateRef: 'T' } : { templateRef: 'T', metrics: [metricAt(d + 2)] } };
  return { seq: '0', metrics: [metricAt(1)] };
}

describe('Sparkplug B nested structure: elements and depth bounded before decoding', () => {
  it('the hostile payloads are what they claim: at 3 elements protobufjs decodes each into its 3', () => {
    for (const kind of KINDS) {
      const list = kind.list(decodeWire(build(kind, 3)));
      assert.ok(Array.isArray(list) && list.length === 3, `${kind.name}: ${JSON.stringify(list)}`);
      assert.equal(decodePayload(build(kind, 3)).metrics.length, 1, kind.name);
    }
  });

  it('refuses 4 MiB of the cheapest nested elements of each kind with SPARKPLUG_PAYLOAD_INVALID', () => {
    const notRefused: string[] = [];
    for (const kind of KINDS) {
      const bytes = hostile(kind);
      assert.ok(bytes.length <= LIMITS.sparkplugPayloadMaxBytes && bytes.length > LIMITS.sparkplugPayloadMaxBytes - 64, `${kind.name}: ${bytes.length} bytes`);
      try {
        decodePayload(bytes);
        notRefused.push(`${kind.name}: decoded`);
      } catch (err) {
        if (!refused('LIMITS.sparkplugMaxElements')(err)) notRefused.push(`${kind.name}: ${(err as Error).message}`);
      }
    }
    assert.deepEqual(notRefused, []);
  });

  it('decodes exactly LIMITS.sparkplugMaxElements elements (metric, dataset, its types) and refuses one more', () => {
    // Packed types, the cheapest to decode: the bound is one count over every kind.
    const types = KINDS.find((k) => k.name.startsWith('dataset types'));
    assert.ok(types);
    const p = decodePayload(build(types, LIMITS.sparkplugMaxElements - 2));
    assert.equal(p.metrics[0]?.raw.kind, 'dataset');
    assert.throws(() => decodePayload(build(types, LIMITS.sparkplugMaxElements - 1)), refused('LIMITS.sparkplugMaxElements'));
  });

  it('decodes templates nested LIMITS.sparkplugMaxDepth deep and refuses one level more', () => {
    const p = decodePayload(encodeWire(nestedTemplates(LIMITS.sparkplugMaxDepth)));
    assert.equal(p.metrics[0]?.raw.kind, 'template');
    assert.throws(() => decodePayload(encodeWire(nestedTemplates(LIMITS.sparkplugMaxDepth + 1))), refused('LIMITS.sparkplugMaxDepth'));
  });

  it('refuses 4 MiB nested a million deep (property sets in property values) with the code, the stack intact', () => {
    // The scan recurses once per level, so it must stop at LIMITS.sparkplugMaxDepth, not at the
    // stack's end (protobufjs, decoding, would stop at its own recursionLimit of 100 as well).
    // Each level a field whose length runs to the end of the payload: Payload.metrics (12), then
    // Metric.properties / PropertyValue.propertyset_value (4a) and PropertySet.values (12) in turn.
    const size = LIMITS.sparkplugPayloadMaxBytes;
    const bytes = Buffer.alloc(size);
    const width = (n: number) => (n < 1 << 7 ? 1 : n < 1 << 14 ? 2 : n < 1 << 21 ? 3 : 4);
    let pos = 0;
    let levels = 0;
    for (; size - pos > 8; levels++) {
      bytes[pos++] = levels % 2 === 0 ? 0x12 : 0x4a;
      // the length counts from after its own varint: try the narrowest width that holds it
      let w = 1;
      while (width(size - pos - w) !== w) w++;
      let n = size - pos - w;
      for (; n > 0x7f; n >>>= 7) bytes[pos++] = (n & 0x7f) | 0x80;
      bytes[pos++] = n;
    }
    assert.ok(levels > 900_000, `${levels} levels`);
    assert.throws(() => decodePayload(bytes), (err: unknown) => isFieldStreamError(err, 'SPARKPLUG_PAYLOAD_INVALID'));
  });

  it('the input refuses a hostile birth by its code and takes the next messages', async () => {
    const queued: Submission[] = [];
    const client = { submitMany: async (items: Submission[]) => (queued.push(...items), []) };
    const logged: string[] = [];
    const session = new SparkplugSession(client, () => undefined, createLogger('test', 'warn', { write: (line: string) => logged.push(line) }));
    try {
      const T0 = 1_700_000_000_000;
      const bdSeq = { name: 'bdSeq', datatype: DATA_TYPES.UInt64, longValue: '0' };
      const members = KINDS[0];
      assert.ok(members);
      // A birth the host would take (a timestamp, seq 0, bdSeq) but for its template of two
      // million members: two encoded payloads concatenated are one, their metrics appended.
      const birth = Buffer.concat([encodeWire({ timestamp: String(T0), metrics: [bdSeq] }), build(members, Math.floor((LIMITS.sparkplugPayloadMaxBytes - 64) / 2))]);
      assert.ok(birth.length <= LIMITS.sparkplugPayloadMaxBytes);
      await session.onMessage('spBv1.0/Plant1/NBIRTH/Line4', birth, T0);
      assert.equal(session.stats.refusedByCode.SPARKPLUG_PAYLOAD_INVALID, 1);
      assert.match(logged.join(''), /LIMITS\.sparkplugMaxElements/);
      const metrics = [bdSeq, { name: 'Inputs/Temp', alias: '1', datatype: DATA_TYPES.Double, doubleValue: 21.5 }];
      await session.onMessage('spBv1.0/Plant1/NBIRTH/Line4', encodeWire({ timestamp: String(T0), seq: '0', metrics }), T0);
      await session.onMessage('spBv1.0/Plant1/NDATA/Line4', encodeWire({ timestamp: String(T0 + 1), seq: '1', metrics: [{ alias: '1', doubleValue: 22 }] }), T0 + 1);
      const temps = queued.filter((q) => q.dataType === 'timeseries').map((q) => (q.payload as Record<string, unknown>)['Plant1.Line4.Inputs.Temp']);
      assert.deepEqual(temps, [21.5, 22]);
      assert.equal(Object.values(session.stats.refusedByCode).reduce((a, b) => a + (b ?? 0), 0), 1);
    } finally {
      session.stop();
    }
  });
});
