import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SparkplugHost } from '../../field-client/src/inputs/sparkplug/host.ts';
import { decodePayload } from '../../field-client/src/inputs/sparkplug/payload.ts';
import { DATA_TYPES as T, encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';
import { parseTopic, type SparkplugTopic } from '../../field-client/src/inputs/sparkplug/topic.ts';

/**
 * A birth gives each metric one data type (Sparkplug 3.0.0 §6.4.7), and every value of the metric
 * goes to one field. A birth that declares one name under two aliases with two data types leaves
 * the field both a number and a string: the birth's own two values land in one field of one reading
 * (one silently lost), and the data after it writes numbers and strings into that field by turns,
 * which the database refuses (a field type conflict) with every reading written alongside.
 */
const T0 = 1_700_000_000_000;
const INTERVAL = 5_000;
const topic = (s: string): SparkplugTopic => {
  const t = parseTopic(s);
  assert.ok(t && t !== 'state', s);
  return t;
};
const msg = (o: Record<string, unknown>) => decodePayload(encodeWire(o));
const bdSeq = (n: number) => ({ name: 'bdSeq', datatype: T.UInt64, longValue: String(n) });
const NB = topic('spBv1.0/G/NBIRTH/E');
const ND = topic('spBv1.0/G/NDATA/E');
const DB = topic('spBv1.0/G/DBIRTH/E/D');
const DD = topic('spBv1.0/G/DDATA/E/D');
/** `T` as a Double (alias 1) and as a String (alias 2) */
const twoTypes = [
  { name: 'T', alias: '1', datatype: T.Double, doubleValue: 1.5 },
  { name: 'T', alias: '2', datatype: T.String, stringValue: 'hot' },
];

describe('Sparkplug births declaring one metric name with two data types', () => {
  it('refuses such an NBIRTH for what it holds (SPARKPLUG_PAYLOAD_INVALID, a rebirth asked), storing neither value under the one field', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    const birth = host.handle(NB, msg({ timestamp: String(T0), seq: '0', metrics: [bdSeq(0), ...twoTypes] }), T0);
    assert.equal(birth.refused?.code, 'SPARKPLUG_PAYLOAD_INVALID');
    assert.match(birth.refused?.message ?? '', /T/);
    assert.deepEqual(birth.readings, []);
    assert.equal(birth.rebirth, true);
    assert.equal(host.session('G', 'E'), undefined);
    // Its data is not read against it: refused as not born, never a string into the Double's field.
    const data = host.handle(ND, msg({ timestamp: String(T0 + 1), seq: '1', metrics: [{ alias: '2', stringValue: 'cold' }] }), T0 + 1);
    assert.equal(data.refused?.code, 'SPARKPLUG_NOT_BORN');
    assert.deepEqual(data.readings, []);
  });

  it('refuses such a DBIRTH the same way: the device not born, its data refused', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    assert.equal(host.handle(NB, msg({ timestamp: String(T0), seq: '0', metrics: [bdSeq(0)] }), T0).refused, undefined);
    const birth = host.handle(DB, msg({ timestamp: String(T0), seq: '1', metrics: twoTypes }), T0);
    assert.equal(birth.refused?.code, 'SPARKPLUG_PAYLOAD_INVALID');
    assert.deepEqual(birth.readings, []);
    const data = host.handle(DD, msg({ timestamp: String(T0 + 2), seq: '2', metrics: [{ alias: '1', doubleValue: 2 }] }), T0 + 2);
    assert.equal(data.refused?.code, 'SPARKPLUG_NOT_BORN');
  });

  it('still takes one name under two aliases with one data type: the same metric, one field', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    const same = [
      { name: 'T', alias: '1', datatype: T.Double, doubleValue: 1.5 },
      { name: 'T', alias: '2', datatype: T.Double, doubleValue: 1.5 },
    ];
    assert.equal(host.handle(NB, msg({ timestamp: String(T0), seq: '0', metrics: [bdSeq(0), ...same] }), T0).refused, undefined);
    const data = host.handle(ND, msg({ timestamp: String(T0 + 1), seq: '1', metrics: [{ alias: '2', doubleValue: 2.5 }] }), T0 + 1);
    assert.deepEqual(data.readings, [{ 'G.E.T': 2.5, timestamp: T0 + 1 }]);
  });
});
