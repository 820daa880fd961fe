import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fieldName } from '../../field-client/src/inputs/sparkplug/mapping.ts';
import { SparkplugHost } from '../../field-client/src/inputs/sparkplug/host.ts';
import { decodePayload } from '../../field-client/src/inputs/sparkplug/payload.ts';
import { DATA_TYPES as T, encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';
import { parseTopic, type SparkplugTopic } from '../../field-client/src/inputs/sparkplug/topic.ts';

/**
 * The host application's state machine: births record names, aliases and types; data is resolved
 * by alias; seq is checked per edge node (wrapping 255 → 0) and a gap asks for a rebirth; NDEATH
 * counts only with the current birth's bdSeq. Payloads go through the real encoder and decoder.
 */
const T0 = 1_700_000_000_000;
const INTERVAL = 5_000;

function topic(s: string): SparkplugTopic {
  const t = parseTopic(s);
  assert.ok(t && t !== 'state', s);
  return t;
}
const msg = (o: Record<string, unknown>) => decodePayload(encodeWire(o));
const bdSeq = (n: number) => ({ name: 'bdSeq', datatype: T.UInt64, longValue: String(n) });
const nbirth = (seq: number, bd: number) =>
  msg({
    timestamp: String(T0),
    seq: String(seq),
    metrics: [
      bdSeq(bd),
      { name: 'Node Control/Rebirth', datatype: T.Boolean, booleanValue: false },
      { name: 'Inputs/Temp', alias: '1', datatype: T.Double, doubleValue: 21.5 },
      { name: 'Running', alias: '2', datatype: T.Boolean, booleanValue: true },
      { name: 'Count', alias: '3', datatype: T.Int32, intValue: 0xffff_fffb },
      { name: 'Mode', alias: '4', datatype: T.String, stringValue: 'auto' },
    ],
  });
const ndata = (seq: number, metrics: Record<string, unknown>[], timestamp = T0 + 1000) => msg({ timestamp: String(timestamp), seq: String(seq), metrics });

const NB = topic('spBv1.0/Plant1/NBIRTH/Line4');
const ND = topic('spBv1.0/Plant1/NDATA/Line4');
const NDEATH = topic('spBv1.0/Plant1/NDEATH/Line4');

describe('Sparkplug host state machine', () => {
  it('records the birth and turns its values into a reading and an nbirth event', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    const out = host.handle(NB, nbirth(0, 3), T0 + 5);
    assert.equal(out.refused, undefined);
    assert.deepEqual(out.readings, [
      { 'Plant1.Line4.Node_Control.Rebirth': false, 'Plant1.Line4.Inputs.Temp': 21.5, 'Plant1.Line4.Running': true, 'Plant1.Line4.Count': -5, 'Plant1.Line4.Mode': 'auto', timestamp: T0 },
    ]);
    assert.equal(out.events.length, 1);
    assert.equal(out.events[0]?.eventType, 'sparkplug.nbirth');
    assert.equal(out.events[0]?.bd_seq, 3);
    assert.equal(host.session('Plant1', 'Line4')?.bdSeq, 3);
  });

  it('resolves aliases in NDATA against the birth, keeping each metric\'s own timestamp and its type', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    host.handle(NB, nbirth(0, 0), T0);
    const out = host.handle(
      ND,
      ndata(1, [
        { alias: '1', doubleValue: 22.25, timestamp: String(T0 + 100) },
        { alias: '2', booleanValue: false, timestamp: String(T0 + 100) },
        { alias: '4', stringValue: 'manual' }, // no timestamp of its own: the payload's
        { name: 'Count', intValue: 7, timestamp: String(T0 + 200) }, // by name, datatype from the birth
      ]),
      T0 + 5000,
    );
    assert.equal(out.refused, undefined);
    assert.deepEqual(out.readings, [
      { 'Plant1.Line4.Inputs.Temp': 22.25, 'Plant1.Line4.Running': false, timestamp: T0 + 100 },
      { 'Plant1.Line4.Count': 7, timestamp: T0 + 200 },
      { 'Plant1.Line4.Mode': 'manual', timestamp: T0 + 1000 },
    ]);
    assert.equal(out.rebirth, false);
  });

  it('accepts seq wrapping from 255 to 0', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    host.handle(NB, nbirth(254, 0), T0);
    for (const seq of [255, 0, 1]) {
      const out = host.handle(ND, ndata(seq, [{ alias: '1', doubleValue: seq }]), T0);
      assert.equal(out.refused, undefined, `seq ${seq}`);
      assert.equal(out.readings.length, 1);
    }
  });

  it('on a seq gap refuses the message, asks for a rebirth once, refuses data until the next NBIRTH', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    host.handle(NB, nbirth(0, 0), T0);
    const gap = host.handle(ND, ndata(5, [{ alias: '1', doubleValue: 1 }]), T0 + 10);
    assert.equal(gap.refused?.code, 'SPARKPLUG_SEQ_GAP');
    assert.equal(gap.rebirth, true);
    assert.deepEqual(gap.readings, []);
    assert.deepEqual(gap.events.map((e) => e.eventType), ['sparkplug.rebirth_requested']);
    // The next in order is refused too (the session is stale), and not asked again so soon.
    const next = host.handle(ND, ndata(6, [{ alias: '1', doubleValue: 2 }]), T0 + 20);
    assert.equal(next.refused?.code, 'SPARKPLUG_NOT_BORN');
    assert.equal(next.rebirth, false);
    // ...but again after the interval.
    assert.equal(host.handle(ND, ndata(7, [{ alias: '1', doubleValue: 3 }]), T0 + 20 + INTERVAL).rebirth, true);
    // The rebirth starts a new session.
    assert.equal(host.handle(NB, nbirth(0, 1), T0 + 30).refused, undefined);
    const after = host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 4 }]), T0 + 40);
    assert.equal(after.refused, undefined);
    assert.equal(after.readings[0]?.['Plant1.Line4.Inputs.Temp'], 4);
  });

  it('asks for a rebirth on data from an edge node it has no birth of, and on an unknown alias', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    const orphan = host.handle(ND, ndata(3, [{ alias: '1', doubleValue: 1 }]), T0);
    assert.equal(orphan.refused?.code, 'SPARKPLUG_NOT_BORN');
    assert.equal(orphan.rebirth, true);
    const other = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    other.handle(NB, nbirth(0, 0), T0);
    const unknown = other.handle(ND, ndata(1, [{ alias: '99', doubleValue: 1 }]), T0);
    assert.equal(unknown.refused?.code, 'SPARKPLUG_UNKNOWN_METRIC');
    assert.equal(unknown.rebirth, true);
  });

  it('ignores an NDEATH whose bdSeq is not the current birth\'s, and applies the one that is', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    host.handle(NB, nbirth(0, 4), T0);
    const stale = host.handle(NDEATH, msg({ timestamp: String(T0 + 1), metrics: [bdSeq(3)] }), T0 + 1);
    assert.equal(stale.refused?.code, 'SPARKPLUG_DEATH_STALE');
    assert.equal(stale.rebirth, false);
    assert.deepEqual(stale.events, []);
    assert.ok(host.session('Plant1', 'Line4'), 'still online');
    assert.equal(host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 1 }]), T0 + 2).refused, undefined);
    const death = host.handle(NDEATH, msg({ timestamp: String(T0 + 3), metrics: [bdSeq(4)] }), T0 + 3);
    assert.equal(death.refused, undefined);
    assert.deepEqual(death.events.map((e) => [e.eventType, e.bd_seq, e.timestamp]), [['sparkplug.ndeath', 4, T0 + 3]]);
    assert.equal(host.session('Plant1', 'Line4'), undefined);
  });

  it('follows devices: DBIRTH, DDATA by alias under the node\'s seq, DDEATH; DDATA of an unborn device asks for a rebirth', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    host.handle(NB, nbirth(0, 0), T0);
    const dbirth = host.handle(topic('spBv1.0/Plant1/DBIRTH/Line4/Press 2'), ndata(1, [{ name: 'Pressure', alias: '1', datatype: T.Float, floatValue: 2.5 }]), T0);
    assert.equal(dbirth.refused, undefined);
    assert.deepEqual(dbirth.readings, [{ 'Plant1.Line4.Press_2.Pressure': 2.5, timestamp: T0 + 1000 }]);
    assert.equal(dbirth.events[0]?.eventType, 'sparkplug.dbirth');
    const ddata = host.handle(topic('spBv1.0/Plant1/DDATA/Line4/Press 2'), ndata(2, [{ alias: '1', floatValue: 3.5 }]), T0);
    assert.deepEqual(ddata.readings, [{ 'Plant1.Line4.Press_2.Pressure': 3.5, timestamp: T0 + 1000 }]);
    const ddeath = host.handle(topic('spBv1.0/Plant1/DDEATH/Line4/Press 2'), ndata(3, []), T0);
    assert.equal(ddeath.events[0]?.eventType, 'sparkplug.ddeath');
    const unborn = host.handle(topic('spBv1.0/Plant1/DDATA/Line4/Press 2'), ndata(4, [{ alias: '1', floatValue: 1 }]), T0);
    assert.equal(unborn.refused?.code, 'SPARKPLUG_NOT_BORN');
    assert.equal(unborn.rebirth, true);
  });

  it('refuses births that break the rules: no bdSeq, no seq, a metric without a data type, one alias for two metrics', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    const bad = [
      { seq: '0', metrics: [{ name: 'a', datatype: T.Int32, intValue: 1 }] },
      { metrics: [bdSeq(0)] },
      { seq: '0', metrics: [bdSeq(0), { name: 'a', intValue: 1 }] },
      { seq: '0', metrics: [bdSeq(0), { name: 'a', alias: '1', datatype: T.Int32, intValue: 1 }, { name: 'b', alias: '1', datatype: T.Int32, intValue: 2 }] },
    ];
    for (const b of bad) assert.equal(host.handle(NB, msg(b), T0).refused?.code, 'SPARKPLUG_PAYLOAD_INVALID', JSON.stringify(b));
    assert.equal(host.edgeNodes, 0);
  });

  it('follows at most maxEdgeNodes edge nodes; a death frees a place', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, maxEdgeNodes: 2 });
    for (const edge of ['A', 'B']) assert.equal(host.handle(topic(`spBv1.0/G/NBIRTH/${edge}`), nbirth(0, 1), T0).refused, undefined);
    assert.equal(host.handle(topic('spBv1.0/G/NBIRTH/C'), nbirth(0, 1), T0).refused?.code, 'SPARKPLUG_TOO_MANY_EDGE_NODES');
    assert.equal(host.handle(topic('spBv1.0/G/NBIRTH/A'), nbirth(0, 2), T0).refused, undefined, 'a rebirth of one followed is taken');
    host.handle(topic('spBv1.0/G/NDEATH/B'), msg({ metrics: [bdSeq(1)] }), T0);
    assert.equal(host.handle(topic('spBv1.0/G/NBIRTH/C'), nbirth(0, 1), T0).refused, undefined);
  });

  it('parses the topic namespace and names fields after group, edge node, device and metric', () => {
    assert.equal(parseTopic('spBv1.0/STATE/host-1'), 'state');
    assert.equal(parseTopic('spBv1.0/G/NDATA/E/extra'), undefined);
    assert.equal(parseTopic('spBv1.0/G/DDATA/E'), undefined);
    assert.equal(parseTopic('spBv1.0/G/XDATA/E'), undefined);
    assert.equal(parseTopic('other/G/NDATA/E'), undefined);
    assert.deepEqual(parseTopic('spBv1.0/G/DDATA/E/D'), { group: 'G', type: 'DDATA', edge: 'E', device: 'D' });
    assert.equal(fieldName('1st', 'E', undefined, 'a/b c'), '_1st.E.a.b_c');
    assert.equal(fieldName('G', 'E', 'D', 'x'.repeat(200)), undefined);
  });
});
