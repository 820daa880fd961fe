import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fieldName } from '../../field-client/src/inputs/sparkplug/mapping.ts';
import { SparkplugHost } from '../../field-client/src/inputs/sparkplug/host.ts';
import { decodePayload } from '../../field-client/src/inputs/sparkplug/payload.ts';
import { digestOf } from '../../field-client/src/inputs/sparkplug/duplicates.ts';
import { DATA_TYPES as T, encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';
import { SparkplugSession } from '../../field-client/src/inputs/sparkplug/session.ts';
import { PeerHosts } from '../../field-client/src/inputs/sparkplug/state.ts';
import { parseTopic, stateHostId, type SparkplugTopic } from '../../field-client/src/inputs/sparkplug/topic.ts';
import type { Submission } from '../../field-client/src/client-options.ts';
import { fieldClientMetrics } from '../../field-client/src/metrics.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { parseExposition, sumOf } from '../../shared/metrics/exposition.ts';

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

/** The error a payload that cannot be decoded at all gives (what the input hands the host). */
function undecodable(): FieldStreamError {
  try {
    decodePayload(Uint8Array.from([0x0a, 0xff, 0xff, 0xff]));
  } catch (err) {
    if (err instanceof FieldStreamError) return err;
  }
  throw new Error('decoded');
}

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

  it("reads a data message's values by the data types its birth declared, whatever type the data message names (§6.4.7)", () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    host.handle(NB, nbirth(0, 0), T0);
    // Count is an Int32 by its birth: -5, not the UInt32 the data message says.
    const retyped = host.handle(ND, ndata(1, [{ alias: '3', datatype: T.UInt32, intValue: 0xffff_fffb }]), T0 + 1);
    assert.equal(retyped.refused, undefined);
    assert.deepEqual(retyped.readings, [{ 'Plant1.Line4.Count': -5, timestamp: T0 + 1000 }]);
    // A string for the Double its birth declared would be a string in a number's field (the
    // database refuses the whole reading, every metric of the message with it): refused.
    const contradicting = host.handle(ND, ndata(2, [{ alias: '1', datatype: T.String, stringValue: 'hot' }, { alias: '2', booleanValue: true }]), T0 + 2);
    assert.equal(contradicting.refused?.code, 'SPARKPLUG_PAYLOAD_INVALID');
    assert.deepEqual(contradicting.readings, []);
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

  it('on a seq gap seen on a DDEATH asks for a rebirth at once too; a DDEATH of a device not born asks none', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    host.handle(NB, nbirth(0, 0), T0);
    const DB = topic('spBv1.0/Plant1/DBIRTH/Line4/Press');
    const DD = topic('spBv1.0/Plant1/DDEATH/Line4/Press');
    assert.equal(host.handle(DB, ndata(1, [{ name: 'Pressure', alias: '10', datatype: T.Float, floatValue: 2.5 }]), T0).refused, undefined);
    // Seq 2 lost on the way: the device's death, the edge node's last message for a while, is the gap.
    const gap = host.handle(DD, ndata(3, []), T0 + 10);
    assert.equal(gap.refused?.code, 'SPARKPLUG_SEQ_GAP');
    assert.equal(gap.rebirth, true);
    assert.deepEqual(gap.events.map((e) => e.eventType), ['sparkplug.rebirth_requested']);
    // Born again, a death of a device it never declared needs no birth: nothing asked.
    assert.equal(host.handle(NB, nbirth(0, 0), T0 + 20).refused, undefined);
    const unborn = host.handle(topic('spBv1.0/Plant1/DDEATH/Line4/Other'), ndata(1, []), T0 + 20 + INTERVAL);
    assert.equal(unborn.refused?.code, 'SPARKPLUG_NOT_BORN');
    assert.equal(unborn.rebirth, false);
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

  it('after an alias the birth did not declare, refuses data until the NBIRTH', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    host.handle(NB, nbirth(0, 0), T0);
    assert.equal(host.handle(ND, ndata(1, [{ alias: '7', doubleValue: 1 }]), T0 + 1).refused?.code, 'SPARKPLUG_UNKNOWN_METRIC');
    const after = host.handle(ND, ndata(2, [{ alias: '1', doubleValue: 99 }]), T0 + 2);
    assert.equal(after.refused?.code, 'SPARKPLUG_NOT_BORN');
    assert.deepEqual(after.readings, []);
    assert.equal(host.handle(NB, nbirth(0, 1), T0 + 3).refused, undefined);
    assert.equal(host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 99 }]), T0 + 4).refused, undefined);
  });

  it('refuses a data metric whose name and alias name two metrics of its birth, rather than store it under either', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    host.handle(NB, nbirth(0, 0), T0);
    // Both given and agreeing: the metric they both name.
    const agreeing = host.handle(ND, ndata(1, [{ name: 'Inputs/Temp', alias: '1', doubleValue: 23 }]), T0 + 1);
    assert.equal(agreeing.refused, undefined);
    assert.deepEqual(agreeing.readings, [{ 'Plant1.Line4.Inputs.Temp': 23, timestamp: T0 + 1000 }]);
    // Alias 1 is Inputs/Temp by the birth, the name says Count: one of them is not what the edge
    // node means (a birth missed, its aliases changed), and the value must not land in Temp's field.
    const contradicting = host.handle(ND, ndata(2, [{ name: 'Count', alias: '1', doubleValue: 7 }]), T0 + 2);
    assert.equal(contradicting.refused?.code, 'SPARKPLUG_UNKNOWN_METRIC');
    assert.deepEqual(contradicting.readings, []);
    assert.equal(contradicting.rebirth, true);
    assert.equal(host.session('Plant1', 'Line4')?.stale, true, 'data refused until the NBIRTH the rebirth brings');
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

  it('takes an NDEATH for the death of every device of its edge node still born, each recorded as a DDEATH records it', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    host.handle(NB, nbirth(0, 4), T0);
    const device = (type: string, name: string) => topic(`spBv1.0/Plant1/${type}/Line4/${name}`);
    for (const [seq, name] of [[1, 'Press'], [2, 'Pump'], [3, 'Valve']] as const) {
      assert.equal(host.handle(device('DBIRTH', name), ndata(seq, [{ name: 'Level', alias: '1', datatype: T.Float, floatValue: 1 }]), T0).refused, undefined);
    }
    // Pump died on its own: its death is not recorded twice.
    const own = host.handle(device('DDEATH', 'Pump'), ndata(4, [], T0 + 2), T0 + 2);
    assert.deepEqual(own.events.map((e) => [e.eventType, e.sp_device, e.timestamp]), [['sparkplug.ddeath', 'Pump', T0 + 2]]);
    const death = host.handle(NDEATH, msg({ timestamp: String(T0 + 3), metrics: [bdSeq(4)] }), T0 + 3);
    assert.equal(death.refused, undefined);
    assert.deepEqual(
      death.events.map((e) => [e.eventType, e.sp_device, e.timestamp]),
      [['sparkplug.ddeath', 'Press', T0 + 3], ['sparkplug.ddeath', 'Valve', T0 + 3], ['sparkplug.ndeath', undefined, T0 + 3]],
    );
    // Each as the DDEATH of that device records it (§5 "Edge Node Session Termination": its devices are offline too).
    const press = death.events[0];
    assert.deepEqual({ ...own.events[0], sp_device: 'Press', message: 'device Plant1/Line4/Press died', timestamp: T0 + 3 }, press);
  });

  it("dates an NDEATH and its devices' deaths at its arrival, not at its payload timestamp (the will's, set at connect)", () => {
    for (const refusedBirth of [false, true]) {
      const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
      host.handle(NB, nbirth(0, 4), T0 + 10);
      host.handle(topic('spBv1.0/Plant1/DBIRTH/Line4/Press'), ndata(1, [{ name: 'Level', alias: '1', datatype: T.Float, floatValue: 1 }]), T0 + 10);
      if (refusedBirth) host.handle(NB, msg({ timestamp: String(T0 + 20), seq: '0', metrics: [bdSeq(4), { name: 'a', intValue: 1 }] }), T0 + 20);
      // The will registered at connect, before the birth (T0 - 5), delivered an hour later; one without a timestamp too.
      for (const [death, at] of [[msg({ timestamp: String(T0 - 5), metrics: [bdSeq(4)] }), T0 + 3_600_000], [msg({ metrics: [bdSeq(4)] }), T0 + 3_600_001]] as const) {
        const out = host.handle(NDEATH, death, at);
        out.undo?.();
        assert.deepEqual(out.events.map((e) => [e.eventType, e.timestamp]), [['sparkplug.ddeath', at], ['sparkplug.ndeath', at]], `refused birth: ${refusedBirth}`);
      }
    }
  });

  it('takes an NBIRTH that replaces a session without its NDEATH for the death of every device that session has born', () => {
    const device = (type: string, name: string) => topic(`spBv1.0/Plant1/${type}/Line4/${name}`);
    const level = (seq: number) => ndata(seq, [{ name: 'Level', alias: '1', datatype: T.Float, floatValue: 1 }]);
    const kinds = (out: { events: Array<Record<string, unknown>> }) => out.events.map((e) => [e.eventType, e.sp_device, e.timestamp]);
    const birthAt = (bd: number, at: number) => msg({ timestamp: String(at), seq: '0', metrics: [bdSeq(bd), { name: 'Inputs/Temp', alias: '1', datatype: T.Double, doubleValue: 1 }] });
    for (const resends of [false, true]) {
      const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends });
      host.handle(NB, nbirth(0, 4), T0);
      for (const [seq, name] of [[1, 'Press'], [2, 'Pump'], [3, 'Valve']] as const) host.handle(device('DBIRTH', name), level(seq), T0);
      host.handle(device('DDEATH', 'Pump'), ndata(4, [], T0 + 2), T0 + 2);
      // A rebirth (or a new connection whose NDEATH has not come yet): the old session's devices are
      // offline until born again in the new one, at the new birth's time, before it.
      const reborn = host.handle(NB, birthAt(4, T0 + 10), T0 + 11);
      assert.equal(reborn.refused, undefined);
      assert.deepEqual(kinds(reborn), [['sparkplug.ddeath', 'Press', T0 + 10], ['sparkplug.ddeath', 'Valve', T0 + 10], ['sparkplug.nbirth', undefined, T0 + 10]], `resends: ${resends}`);
      // Born again in it, Press dies with the next session, Valve (not born again) does not die twice.
      host.handle(device('DBIRTH', 'Press'), level(1), T0 + 12);
      assert.deepEqual(kinds(host.handle(NB, birthAt(5, T0 + 20), T0 + 21)), [['sparkplug.ddeath', 'Press', T0 + 20], ['sparkplug.nbirth', undefined, T0 + 20]]);
      // A session ended by its NDEATH: its devices died with it, not again with the next birth.
      host.handle(device('DBIRTH', 'Pump'), level(1), T0 + 22);
      host.handle(NDEATH, msg({ metrics: [bdSeq(5)] }), T0 + 23);
      assert.deepEqual(kinds(host.handle(NB, birthAt(6, T0 + 30), T0 + 31)), [['sparkplug.nbirth', undefined, T0 + 30]]);
      // A session a refused NBIRTH ended (its devices not dead yet: its NDEATH would be their death),
      // replaced by a birth taken: its devices die then. Those of a birth refused die with nothing.
      host.handle(device('DBIRTH', 'Valve'), level(1), T0 + 32);
      const refused = host.handle(NB, msg({ timestamp: String(T0 + 40), seq: '0', metrics: [bdSeq(7), { name: 'a', intValue: 1 }] }), T0 + 41);
      assert.equal(refused.refused?.code, 'SPARKPLUG_PAYLOAD_INVALID');
      assert.deepEqual(kinds(refused).filter(([kind]) => kind !== 'sparkplug.rebirth_requested'), []);
      assert.deepEqual(kinds(host.handle(NB, birthAt(7, T0 + 50), T0 + 51)), [['sparkplug.ddeath', 'Valve', T0 + 50], ['sparkplug.nbirth', undefined, T0 + 50]]);
    }
  });

  it('takes the NDEATH of the last birth taken for its death after a later NBIRTH was refused, once, its devices with it', () => {
    // Refused before its definitions are in force (a metric without a data type), or after (a value not of its type).
    for (const [resends, wrong] of [false, true].flatMap((r) => [{ name: 'a', intValue: 1 }, { name: 'a', datatype: T.Int32, stringValue: 'x' }].map((w) => [r, w] as const))) {
      const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends });
      const DB = topic('spBv1.0/Plant1/DBIRTH/Line4/Press');
      const kinds = (out: { events: Array<Record<string, unknown>> }) => out.events.map((e) => [e.eventType, e.sp_device, e.bd_seq]);
      host.handle(NB, nbirth(0, 4), T0);
      assert.equal(host.handle(DB, ndata(1, [{ name: 'Level', alias: '1', datatype: T.Float, floatValue: 1 }]), T0).refused, undefined);
      // A rebirth it cannot take: the session it would replace ends.
      const refused = host.handle(NB, msg({ timestamp: String(T0 + 1), seq: '0', metrics: [bdSeq(4), wrong] }), T0 + 1);
      assert.equal(refused.refused?.code, 'SPARKPLUG_PAYLOAD_INVALID');
      assert.equal(host.session('Plant1', 'Line4'), undefined);
      // Its will then: the death of bdSeq 4, the last birth taken (Sparkplug 3.0.0 "Edge Node Session
      // Establishment": the NDEATH whose bdSeq matches the NBIRTH's), so of the edge node and its device.
      const death = host.handle(NDEATH, msg({ timestamp: String(T0 + 2), metrics: [bdSeq(4)] }), T0 + 2);
      assert.equal(death.refused, undefined, `resends: ${resends}, ${JSON.stringify(wrong)}`);
      assert.deepEqual(kinds(death), [['sparkplug.ddeath', 'Press', undefined], ['sparkplug.ndeath', undefined, 4]]);
      // Once: the same death again is of a session dead already.
      assert.equal(host.handle(NDEATH, msg({ timestamp: String(T0 + 2), metrics: [bdSeq(4)] }), T0 + 3).refused?.code, 'SPARKPLUG_DEATH_STALE');
      // A birth taken after a refused one is the last: the death of the one before it is stale then.
      host.handle(NB, nbirth(0, 5), T0 + 4);
      assert.equal(host.handle(NB, msg({ timestamp: String(T0 + 5), seq: '0', metrics: [bdSeq(6), wrong] }), T0 + 5).refused?.code, 'SPARKPLUG_PAYLOAD_INVALID');
      host.handle(NB, nbirth(0, 6), T0 + 6);
      assert.equal(host.handle(NDEATH, msg({ metrics: [bdSeq(5)] }), T0 + 7).refused?.code, 'SPARKPLUG_DEATH_STALE');
      assert.deepEqual(kinds(host.handle(NDEATH, msg({ metrics: [bdSeq(6)] }), T0 + 8)), [['sparkplug.ndeath', undefined, 6]]);
    }
  });

  it('takes the NDEATH of a refused NBIRTH (its bdSeq) for the death of the session it ended, never that of another bdSeq', () => {
    for (const resends of [false, true]) {
      const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends });
      const DB = topic('spBv1.0/Plant1/DBIRTH/Line4/Press');
      const kinds = (out: { events: Array<Record<string, unknown>> }) => out.events.map((e) => [e.eventType, e.sp_device, e.bd_seq]);
      const refusedBirth = (bd: number, at: number) => msg({ timestamp: String(at), seq: '0', metrics: [bdSeq(bd), { name: 'a', intValue: 1 }] });
      host.handle(NB, nbirth(0, 4), T0);
      assert.equal(host.handle(DB, ndata(1, [{ name: 'Level', alias: '1', datatype: T.Float, floatValue: 1 }]), T0).refused, undefined);
      // A new connection (bdSeq 5) whose NBIRTH is refused: the edge node believes itself online with
      // bdSeq 5, so the will of that connection is its death (Sparkplug 3.0.0 "Edge Node Session
      // Establishment": the NDEATH whose bdSeq matches the NBIRTH's).
      assert.equal(host.handle(NB, refusedBirth(5, T0 + 1), T0 + 1).refused?.code, 'SPARKPLUG_PAYLOAD_INVALID');
      // Another bdSeq, neither that birth's nor the last one taken: stale (or forged), ignored.
      const forged = host.handle(NDEATH, msg({ metrics: [bdSeq(3)] }), T0 + 2);
      assert.equal(forged.refused?.code, 'SPARKPLUG_DEATH_STALE', `resends: ${resends}`);
      assert.deepEqual(forged.events, []);
      const death = host.handle(NDEATH, msg({ metrics: [bdSeq(5)] }), T0 + 3);
      assert.equal(death.refused, undefined, `resends: ${resends}`);
      assert.deepEqual(kinds(death), [['sparkplug.ddeath', 'Press', undefined], ['sparkplug.ndeath', undefined, 5]]);
      // Undone (the queue did not take it), taken again; once only.
      death.undo?.();
      assert.deepEqual(kinds(host.handle(NDEATH, msg({ metrics: [bdSeq(5)] }), T0 + 4)), [['sparkplug.ddeath', 'Press', undefined], ['sparkplug.ndeath', undefined, 5]]);
      assert.equal(host.handle(NDEATH, msg({ metrics: [bdSeq(5)] }), T0 + 5).refused?.code, 'SPARKPLUG_DEATH_STALE');
      assert.equal(host.handle(NDEATH, msg({ metrics: [bdSeq(4)] }), T0 + 5).refused?.code, 'SPARKPLUG_DEATH_STALE');

      // Births refused in a row: the latest one's bdSeq is the death, not an earlier one's.
      host.handle(NB, nbirth(0, 6), T0 + 10);
      host.handle(DB, ndata(1, [{ name: 'Level', alias: '1', datatype: T.Float, floatValue: 1 }]), T0 + 10);
      host.handle(NB, refusedBirth(7, T0 + 11), T0 + 11);
      host.handle(NB, refusedBirth(8, T0 + 12), T0 + 12);
      assert.equal(host.handle(NDEATH, msg({ metrics: [bdSeq(7)] }), T0 + 13).refused?.code, 'SPARKPLUG_DEATH_STALE');
      assert.deepEqual(kinds(host.handle(NDEATH, msg({ metrics: [bdSeq(8)] }), T0 + 14)), [['sparkplug.ddeath', 'Press', undefined], ['sparkplug.ndeath', undefined, 8]]);

      // A birth taken after the refused one is in force: the refused birth's bdSeq kills it no more.
      host.handle(NB, nbirth(0, 9), T0 + 20);
      host.handle(NB, refusedBirth(10, T0 + 21), T0 + 21);
      host.handle(NB, nbirth(0, 11), T0 + 22);
      assert.equal(host.handle(NDEATH, msg({ metrics: [bdSeq(10)] }), T0 + 23).refused?.code, 'SPARKPLUG_DEATH_STALE');
      assert.equal(host.session('Plant1', 'Line4')?.bdSeq, 11, 'still online');
    }
  });

  it('puts the death of the last birth taken back when its NDEATH, or the refused NBIRTH before it, is undone', () => {
    for (const resends of [false, true]) {
      const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends });
      host.handle(NB, nbirth(0, 4), T0);
      const bad = () => msg({ timestamp: String(T0 + 1), seq: '0', metrics: [bdSeq(4), { name: 'a', intValue: 1 }] });
      // The refused birth undone: the session is current again, its death taken as any.
      host.handle(NB, bad(), T0 + 1).undo?.();
      assert.equal(host.session('Plant1', 'Line4')?.bdSeq, 4);
      host.handle(NB, bad(), T0 + 1);
      // Its death undone (the queue did not take its event): taken again when it comes again.
      host.handle(NDEATH, msg({ metrics: [bdSeq(4)] }), T0 + 2).undo?.();
      const again = host.handle(NDEATH, msg({ metrics: [bdSeq(4)] }), T0 + 3);
      assert.equal(again.refused, undefined, `resends: ${resends}`);
      assert.deepEqual(again.events.map((e) => e.eventType), ['sparkplug.ndeath']);
    }
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

  it('parses the STATE topic: the host id, and nothing for a malformed one', () => {
    assert.equal(stateHostId('spBv1.0/STATE/scada-1'), 'scada-1');
    assert.equal(stateHostId('spBv1.0/STATE/a/b'), undefined);
    assert.equal(stateHostId('spBv1.0/STATE/'), undefined);
    assert.equal(stateHostId('spBv1.0/G/NDATA/E'), undefined);
  });
});

describe('Sparkplug field names: no two metrics share one', () => {
  const birthOf = (metrics: Record<string, unknown>[]) => msg({ timestamp: String(T0), seq: '0', metrics: [bdSeq(0), ...metrics] });
  const dbl = (name: string, alias: number, v: number) => ({ name, alias: String(alias), datatype: T.Double, doubleValue: v });
  /** every field of an outcome's readings, with its value */
  const fields = (out: { readings: Array<Record<string, unknown>> }): Record<string, unknown> =>
    Object.fromEntries(out.readings.flatMap((r) => Object.entries(r).filter(([k]) => k !== 'timestamp')));
  const SUFFIXED = (plain: string) => new RegExp(`^${plain.replace(/\./g, '\\.')}-[0-9a-f]{8}$`);

  it('gives the metrics x/y and x.y of one birth fields of their own, x/y keeping its name, the same at each rebirth and after a restart', () => {
    const names = (host: SparkplugHost, order: Array<[string, number, number]>) => {
      const out = host.handle(NB, birthOf(order.map(([n, a, v]) => dbl(n, a, v))), T0);
      assert.equal(out.refused, undefined);
      const f = fields(out);
      const byValue = Object.fromEntries(Object.entries(f).map(([k, v]) => [String(v), k]));
      assert.equal(Object.keys(f).length, 2, `both values kept: ${JSON.stringify(f)}`);
      return { xy: byValue['1'], xDotY: byValue['2'], out };
    };
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    const first = names(host, [['x/y', 1, 1], ['x.y', 2, 2]]);
    assert.equal(first.xy, 'Plant1.Line4.x.y', 'the name the documented mapping gives x/y');
    assert.match(first.xDotY ?? '', SUFFIXED('Plant1.Line4.x.y'));
    assert.equal(first.out.collisions?.length, 1, 'the collision is reported');
    // Data by alias: the same fields.
    const data = host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 10 }, { alias: '2', doubleValue: 20 }]), T0);
    assert.deepEqual(fields(data), { [first.xy as string]: 10, [first.xDotY as string]: 20 });
    // A rebirth declaring them the other way round, and a new host (a restart): the same fields.
    const rebirth = names(host, [['x.y', 2, 2], ['x/y', 1, 1]]);
    assert.deepEqual([rebirth.xy, rebirth.xDotY], [first.xy, first.xDotY]);
    const again = names(new SparkplugHost({ rebirthMinIntervalMs: INTERVAL }), [['x.y', 2, 2], ['x/y', 1, 1]]);
    assert.deepEqual([again.xy, again.xDotY], [first.xy, first.xDotY]);
  });

  it('names thousands of metrics that share one field name in time linear in them: a birth and its data do not hold the event loop', () => {
    // `m\u0100`, `m\u0101`, …: every name is the field Plant1.Line4.m_ (what a field name cannot hold becomes `_`).
    const N = 3000;
    const metrics = Array.from({ length: N }, (_, i) => dbl(`m${String.fromCharCode(0x100 + i)}`, i + 1, i));
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    let at = performance.now();
    const born = host.handle(NB, birthOf(metrics), T0);
    const birthMs = performance.now() - at;
    at = performance.now();
    const data = host.handle(ND, ndata(1, metrics.map((m) => ({ alias: m.alias, doubleValue: Number(m.alias) }))), T0);
    const dataMs = performance.now() - at;
    assert.equal(born.refused, undefined);
    const f = fields(born);
    assert.equal(new Set(Object.keys(f)).size, N, 'every value in a field of its own');
    assert.equal(f['Plant1.Line4.m_'], 0, 'the first in code-unit order keeps the plain name');
    assert.equal(Object.keys(fields(data)).length, N);
    // Each metric's field worked out from every other metric sharing its name, at the birth and at
    // each value: 13 s and 6 s before, a tenth of a second now.
    assert.ok(birthMs < 3000 && dataMs < 3000, `birth ${Math.round(birthMs)} ms, data ${Math.round(dataMs)} ms`);
  });

  it('gives group A.B, edge node C and group A, edge node B.C fields of their own, the same whichever is born first', () => {
    const X = topic('spBv1.0/A.B/NBIRTH/C');
    const Y = topic('spBv1.0/A/NBIRTH/B.C');
    const seen: string[][] = [];
    for (const order of [[X, Y], [Y, X]]) {
      const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
      const got = new Map<SparkplugTopic, string[]>();
      for (const t of order) got.set(t, Object.keys(fields(host.handle(t, birthOf([dbl('Temp', 1, t === X ? 1 : 2)]), T0))));
      // The first born's field is renamed when the second comes: its data from then on.
      const data = (t: SparkplugTopic) => Object.keys(fields(host.handle({ ...t, type: 'NDATA' }, ndata(1, [{ alias: '1', doubleValue: 5 }]), T0)));
      const names = [data(X), data(Y)].map((n) => n[0] as string);
      assert.equal(names.length, 2);
      assert.notEqual(names[0], names[1], 'two fields, not one');
      seen.push(names);
    }
    assert.deepEqual(seen[0], seen[1], 'whichever was born first');
    // A/B.C comes first in code-unit order ("A" < "A.B"): it keeps the name; A.B/C gets the suffix.
    assert.equal(seen[0]?.[1], 'A.B.C.Temp');
    assert.match(seen[0]?.[0] ?? '', SUFFIXED('A.B.C.Temp'));
  });

  it("gives an edge node's metric D/M and its device D's metric M fields of their own: the node's keeps the name", () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    assert.deepEqual(Object.keys(fields(host.handle(NB, birthOf([dbl('Press/Pressure', 1, 1)]), T0))), ['Plant1.Line4.Press.Pressure']);
    const dbirth = host.handle(topic('spBv1.0/Plant1/DBIRTH/Line4/Press'), ndata(1, [dbl('Pressure', 1, 2)]), T0);
    assert.equal(dbirth.refused, undefined);
    const [name] = Object.keys(fields(dbirth));
    assert.match(name ?? '', SUFFIXED('Plant1.Line4.Press.Pressure'));
    assert.equal(dbirth.collisions?.length, 1);
    assert.deepEqual(Object.keys(fields(host.handle(ND, ndata(2, [{ alias: '1', doubleValue: 3 }]), T0))), ['Plant1.Line4.Press.Pressure']);
    // Once the device is dead, its name is no longer taken: nothing collides any more.
    host.handle(topic('spBv1.0/Plant1/DDEATH/Line4/Press'), ndata(3, []), T0);
    assert.equal(host.handle(topic('spBv1.0/Plant1/DBIRTH/Line4/Other'), ndata(4, [dbl('Pressure', 1, 2)]), T0).collisions, undefined);
  });

  it('counts and logs each collision with SPARKPLUG_FIELD_NAME_COLLISION, naming every metric and its field; every value is queued', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = createLogger('test', 'info', { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    const queued: Submission[] = [];
    const session = new SparkplugSession({ submitMany: async (items: readonly Submission[]) => (queued.push(...items), []) }, () => undefined, log);
    const birth = (metrics: Record<string, unknown>[]) => encodeWire({ timestamp: String(T0), seq: '0', metrics: [bdSeq(0), ...metrics] });
    await session.onMessage('spBv1.0/A/NBIRTH/B.C', birth([dbl('Temp', 1, 2)]));
    assert.equal(session.stats.fieldNameCollisions, 0);
    await session.onMessage('spBv1.0/A.B/NBIRTH/C', birth([dbl('Temp', 1, 1)]));
    assert.equal(session.stats.fieldNameCollisions, 1);
    const line = lines.find((l) => l.code === 'SPARKPLUG_FIELD_NAME_COLLISION');
    assert.ok(line, 'logged with its code');
    assert.equal(line.field, 'A.B.C.Temp');
    assert.match(String(line.msg), /A\.B\/C metric Temp → A\.B\.C\.Temp-[0-9a-f]{8}/);
    assert.match(String(line.msg), /A\/B\.C metric Temp → A\.B\.C\.Temp(;|$)/);
    const values = queued.filter((q) => q.dataType === 'timeseries').flatMap((q) => Object.entries(q.payload).filter(([k]) => k !== 'timestamp'));
    assert.deepEqual(values.map(([, v]) => v).sort(), [1, 2], 'both values queued');
    assert.equal(new Set(values.map(([k]) => k)).size, 2, 'under two fields');
  });
});

const REORDER = 2_000;
const temp = (out: { readings: Array<Record<string, unknown>> }) => out.readings.map((r) => r['Plant1.Line4.Inputs.Temp']);

describe('Sparkplug host reorder buffer (§5.9, Reorder Timeout)', () => {
  it('holds messages that arrive ahead of their seq and takes them in seq order once the missing one comes', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, reorderTimeoutMs: REORDER });
    host.handle(NB, nbirth(0, 0), T0);
    for (const seq of [3, 2]) {
      const held = host.handle(ND, ndata(seq, [{ alias: '1', doubleValue: seq }]), T0 + 10);
      assert.equal(held.held, true, `seq ${seq} held`);
      assert.equal(held.refused, undefined);
      assert.equal(held.rebirth, false);
      assert.deepEqual(held.readings, []);
    }
    assert.equal(host.reorder.held, 2);
    assert.equal(host.reorder.nextDeadline(), T0 + 10 + REORDER);
    const filled = host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 1 }]), T0 + 20);
    assert.equal(filled.refused, undefined);
    assert.deepEqual(temp(filled), [1]);
    assert.deepEqual(filled.released.map((r) => [r.topic.type, temp(r.out), r.out.refused]), [
      ['NDATA', [2], undefined],
      ['NDATA', [3], undefined],
    ]);
    assert.equal(host.reorder.held, 0);
    assert.equal(host.reorder.nextDeadline(), undefined, 'timer stopped');
    assert.equal(host.session('Plant1', 'Line4')?.seq, 3);
    assert.deepEqual(host.expire(T0 + 10 * REORDER), [], 'nothing to expire');
    // Normal operation goes on.
    assert.deepEqual(temp(host.handle(ND, ndata(4, [{ alias: '1', doubleValue: 4 }]), T0 + 30)), [4]);
  });

  it('on timeout discards what it held, asks for a rebirth, and refuses data until the NBIRTH', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, reorderTimeoutMs: REORDER });
    host.handle(NB, nbirth(0, 0), T0);
    assert.equal(host.handle(ND, ndata(2, [{ alias: '1', doubleValue: 2 }]), T0 + 10).held, true);
    assert.equal(host.handle(ND, ndata(3, [{ alias: '1', doubleValue: 3 }]), T0 + 500).held, true);
    assert.deepEqual(host.expire(T0 + 10 + REORDER - 1), [], 'not yet: the timer started with the first held message');
    const expired = host.expire(T0 + 10 + REORDER);
    assert.equal(expired.length, 1);
    const [e] = expired;
    assert.deepEqual([e?.group, e?.edge], ['Plant1', 'Line4']);
    assert.equal(e?.out.rebirth, true);
    assert.equal(e?.out.dropped?.code, 'SPARKPLUG_REORDER_TIMEOUT');
    assert.equal(e?.out.dropped?.count, 2);
    assert.deepEqual(e?.out.readings, []);
    assert.deepEqual(e?.out.events.map((x) => x.eventType), ['sparkplug.rebirth_requested']);
    assert.equal(host.reorder.held, 0);
    // The missing one, too late: refused, the session awaits its rebirth.
    assert.equal(host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 1 }]), T0 + 3000).refused?.code, 'SPARKPLUG_NOT_BORN');
    assert.equal(host.handle(NB, nbirth(0, 1), T0 + 4000).refused, undefined);
    assert.deepEqual(temp(host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 5 }]), T0 + 4001)), [5]);
  });

  it('starts the timeout again when a gap closes but another message is still missing', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, reorderTimeoutMs: REORDER });
    host.handle(NB, nbirth(0, 0), T0);
    host.handle(ND, ndata(2, [{ alias: '1', doubleValue: 2 }]), T0);
    host.handle(ND, ndata(4, [{ alias: '1', doubleValue: 4 }]), T0);
    const partly = host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 1 }]), T0 + 500);
    assert.deepEqual(partly.released.map((r) => temp(r.out)), [[2]]);
    assert.equal(host.reorder.held, 1);
    assert.equal(host.reorder.nextDeadline(), T0 + 500 + REORDER);
    assert.deepEqual(host.expire(T0 + REORDER), []);
    const filled = host.handle(ND, ndata(3, [{ alias: '1', doubleValue: 3 }]), T0 + 600);
    assert.deepEqual([temp(filled), ...filled.released.map((r) => temp(r.out))], [[3], [4]]);
  });

  it('is a gap at once when the message is too far ahead, when it is behind, or with no timeout; an NBIRTH discards what was held', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, reorderTimeoutMs: REORDER, reorderMaxHeld: 4 });
    host.handle(NB, nbirth(0, 0), T0);
    assert.equal(host.handle(ND, ndata(5, [{ alias: '1', doubleValue: 5 }]), T0).held, true, '4 ahead: held');
    const far = host.handle(ND, ndata(6, [{ alias: '1', doubleValue: 6 }]), T0);
    assert.equal(far.refused?.code, 'SPARKPLUG_SEQ_GAP');
    assert.equal(far.rebirth, true);
    assert.deepEqual([far.dropped?.code, far.dropped?.count], ['SPARKPLUG_SEQ_GAP', 1]);
    assert.equal(host.reorder.held, 0);

    const other = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, reorderTimeoutMs: REORDER });
    other.handle(NB, nbirth(10, 0), T0);
    assert.equal(other.handle(ND, ndata(9, []), T0).refused?.code, 'SPARKPLUG_SEQ_GAP', 'behind: not held');
    other.handle(NB, nbirth(0, 1), T0);
    assert.equal(other.handle(ND, ndata(2, []), T0).held, true);
    const reborn = other.handle(NB, nbirth(0, 2), T0 + 1);
    assert.equal(reborn.refused, undefined);
    assert.deepEqual([reborn.dropped?.code, reborn.dropped?.count], ['SPARKPLUG_SEQ_GAP', 1]);
    assert.equal(other.reorder.nextDeadline(), undefined);

    const none = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, reorderTimeoutMs: 0 });
    none.handle(NB, nbirth(0, 0), T0);
    const gap = none.handle(ND, ndata(2, []), T0);
    assert.equal(gap.held, false);
    assert.equal(gap.refused?.code, 'SPARKPLUG_SEQ_GAP');
    assert.equal(gap.rebirth, true);
  });
  it('bounds the bytes held over every edge node: a message past the bound is a gap at once, and what is let through or discarded gives its bytes back', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, reorderTimeoutMs: REORDER, reorderMaxHeldBytes: 8_000 });
    const big = (seq: number) => ndata(seq, [{ name: 'Mode', datatype: T.String, stringValue: 'x'.repeat(2_000) }]);
    const nb2 = topic('spBv1.0/Plant1/NBIRTH/Line5');
    const nd2 = topic('spBv1.0/Plant1/NDATA/Line5');
    host.handle(NB, nbirth(0, 0), T0);
    host.handle(nb2, nbirth(0, 0), T0);
    assert.equal(host.handle(ND, big(2), T0 + 10).held, true, 'one message of ~4 KB held');
    assert.ok(host.reorder.heldBytes > 4_000 && host.reorder.heldBytes <= 8_000, `${host.reorder.heldBytes} bytes held`);
    // Another edge node's message would take the held bytes past the bound: a gap at once.
    const over = host.handle(nd2, big(2), T0 + 10);
    assert.equal(over.held, false);
    assert.equal(over.refused?.code, 'SPARKPLUG_SEQ_GAP');
    assert.equal(over.rebirth, true);
    assert.equal(host.reorder.held, 1);
    // The missing one lets the held one through: its bytes are free again.
    const filled = host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 1 }]), T0 + 20);
    assert.equal(filled.released.length, 1);
    assert.equal(host.reorder.heldBytes, 0);
    // Held, then discarded by the timeout: freed too.
    assert.equal(host.handle(ND, big(4), T0 + 30).held, true);
    assert.ok(host.reorder.heldBytes > 0);
    host.expire(T0 + 30 + REORDER);
    assert.equal(host.reorder.heldBytes, 0);
  });
});

const state = (o: unknown) => new TextEncoder().encode(typeof o === 'string' ? o : JSON.stringify(o));

describe('Sparkplug STATE of other host applications', () => {
  it('keeps each host online or offline by its last STATE, ignoring older timestamps; our own is not a peer', () => {
    const peers = new PeerHosts('us');
    assert.deepEqual(peers.handle('scada', state({ online: true, timestamp: 2000 }), T0), {
      kind: 'changed',
      hostId: 'scada',
      previous: undefined,
      current: { online: true, timestamp: 2000, seenAt: T0 },
    });
    assert.equal(peers.handle('scada', state({ online: true, timestamp: 2000 }), T0 + 1).kind, 'same');
    // The will of an older connection, delivered late: ignored.
    assert.deepEqual(peers.handle('scada', state({ online: false, timestamp: 1000 }), T0 + 2), { kind: 'older', hostId: 'scada', timestamp: 1000, last: 2000 });
    assert.equal(peers.get('scada')?.online, true);
    // Its current connection's will (same timestamp): offline.
    assert.equal(peers.handle('scada', state({ online: false, timestamp: 2000 }), T0 + 3).kind, 'changed');
    assert.equal(peers.get('scada')?.online, false);
    assert.equal(peers.handle('scada', state({ online: true, timestamp: 3000, extra: 'ignored' }), T0 + 4).kind, 'changed');
    assert.deepEqual([peers.count(true), peers.count(false)], [1, 0]);
    assert.deepEqual(peers.handle('us', state({ online: false, timestamp: 5 }), T0), { kind: 'own', state: { online: false, timestamp: 5 } });
    assert.equal(peers.get('us'), undefined);
    assert.deepEqual(peers.handle('scada', new Uint8Array(), T0), { kind: 'cleared', hostId: 'scada' });
    assert.deepEqual(peers.list(), []);
    const small = new PeerHosts(undefined, 1);
    small.handle('a', state({ online: true, timestamp: 1 }), T0);
    assert.equal(small.handle('b', state({ online: true, timestamp: 1 }), T0).kind, 'full');
  });

  it('refuses a payload that is not the 3.0 STATE JSON with SPARKPLUG_STATE_INVALID', () => {
    const peers = new PeerHosts(undefined);
    const bad = ['ONLINE', '{"online":true}', '{"online":"true","timestamp":1}', '{"online":true,"timestamp":"1"}', '{"online":true,"timestamp":-1}', '[]', 'null', `{"online":true,"timestamp":1,"x":"${'a'.repeat(2000)}"}`];
    for (const b of bad) assert.throws(() => peers.handle('h', state(b), T0), (e: unknown) => (e as { code?: string }).code === 'SPARKPLUG_STATE_INVALID', b.slice(0, 60));
    assert.throws(() => peers.handle('h', new Uint8Array([0x7b, 0xff, 0x7d]), T0), (e: unknown) => (e as { code?: string }).code === 'SPARKPLUG_STATE_INVALID', 'not UTF-8');
    assert.deepEqual(peers.list(), []);
  });
});

describe('Sparkplug session: STATE and reorder through the input', () => {
  const silent = createLogger('test', 'silent');
  const sink = () => {
    const queued: Submission[] = [];
    // The queue's side of submitMany only: what the session hands it, in order.
    const client = {
      submitMany: async (items: Submission[]) => {
        queued.push(...items);
        return [];
      },
    };
    return { queued, client };
  };
  const bytes = (o: Record<string, unknown>) => encodeWire(o);
  const birth = (seq: number) => bytes({ timestamp: String(T0), seq: String(seq), metrics: [bdSeq(0), { name: 'Inputs/Temp', alias: '1', datatype: T.Double, doubleValue: 1 }] });
  const data = (seq: number, v: number) => bytes({ timestamp: String(T0 + seq), seq: String(seq), metrics: [{ alias: '1', doubleValue: v }] });

  it('counts a bad STATE by its code and goes on; keeps peers; answers our own offline STATE', async () => {
    const { client } = sink();
    const own: number[] = [];
    const session = new SparkplugSession(client, () => undefined, silent, [], { hostId: 'us', onOwnOffline: (s) => own.push(s?.timestamp ?? -1) });
    await session.onMessage('spBv1.0/STATE/scada', state('OFFLINE'));
    await session.onMessage('spBv1.0/STATE/scada', state({ online: true, timestamp: 7 }));
    await session.onMessage('spBv1.0/STATE/us', state({ online: false, timestamp: 3 }));
    await session.onMessage('spBv1.0/STATE/us', state({ online: true, timestamp: 4 }));
    assert.equal(session.stats.refusedByCode.SPARKPLUG_STATE_INVALID, 1);
    assert.equal(session.peers.get('scada')?.online, true);
    assert.equal(session.peers.get('us'), undefined);
    assert.deepEqual(own, [3]);
    assert.equal(session.stats.messages, 4);
  });

  it('answers our own retained STATE removed (an empty publish) as our STATE offline: edge nodes connecting later wait for it', async () => {
    const { client } = sink();
    const own: Array<number | undefined> = [];
    const session = new SparkplugSession(client, () => undefined, silent, [], { hostId: 'us', onOwnOffline: (s) => own.push(s?.timestamp) });
    await session.onMessage('spBv1.0/STATE/us', new Uint8Array());
    // Another host's removed is only forgotten.
    await session.onMessage('spBv1.0/STATE/scada', new Uint8Array());
    assert.deepEqual(own, [undefined]);
    assert.equal(session.stats.accepted, 2);
  });

  it('queues held data in seq order, and on timeout counts the discarded messages and sends the rebirth NCMD', async () => {
    const { queued, client } = sink();
    const sent: string[] = [];
    const session = new SparkplugSession(client, (topic) => sent.push(topic), silent, [], { reorderTimeoutMs: 60_000 });
    try {
      const now = Date.now();
      await session.onMessage('spBv1.0/Plant1/NBIRTH/Line4', birth(0), now);
      await session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(2, 20), now);
      await session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(1, 10), now);
      const temps = queued.filter((q) => q.dataType === 'timeseries').map((q) => (q.payload as Record<string, unknown>)['Plant1.Line4.Inputs.Temp']);
      assert.deepEqual(temps, [1, 10, 20]);
      assert.equal(session.stats.reordered, 1);
      await session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(5, 50), now);
      await session.expire(now + 60_000);
      assert.deepEqual(sent, ['spBv1.0/Plant1/NCMD/Line4']);
      assert.equal(session.stats.refusedByCode.SPARKPLUG_REORDER_TIMEOUT, 1);
      assert.equal(session.stats.rebirthsRequested, 1);
      assert.ok(queued.some((q) => q.dataType === 'event' && (q.payload as Record<string, unknown>).eventType === 'sparkplug.rebirth_requested'));
    } finally {
      session.stop();
    }
  });

  it("counts accepted messages as taken: /metrics' accepted never goes down when held messages are discarded by the reorder timeout", async () => {
    const { client } = sink();
    const session = new SparkplugSession(client, () => undefined, silent, [], { reorderTimeoutMs: 60_000 });
    // Only what fieldClientMetrics reads at a scrape; the Sparkplug counters come from the session.
    const stub = {
      client: {
        queue: { depth: 0, bytesOnDisk: 0, awaiting: { count: 0, bytes: 0 }, oldestUnacked: () => undefined, stats: { dropped: 0, refused: 0, writeFailed: 0 } },
        rejectedBytes: 0,
        heldRefusals: 0,
        stats: { refusedByGateway: 0, sent: 0 },
        receiptStats: { receipts: 0, receiptsInvalid: 0, receiptsReplayed: 0, resentForReceipt: 0 },
      },
      connection: { isOpen: true },
      commands: { stats: { run: 0, refusedByCode: {}, unanswered: 0 }, runningNow: 0, waitingNow: 0 },
      outbox: { bytes: () => 0 },
      certFile: '/nonexistent',
      sparkplug: [session],
    };
    const metrics = fieldClientMetrics(stub as unknown as Parameters<typeof fieldClientMetrics>[0], { processMetrics: false });
    const scrape = async (outcome: string) => sumOf(parseExposition(await metrics.registry.metrics()), 'fieldstream_field_sparkplug_messages_total', { outcome });
    try {
      const now = Date.now();
      await session.onMessage('spBv1.0/Plant1/NBIRTH/Line4', birth(0), now);
      await session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(1, 10), now);
      await session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(3, 30), now); // ahead of seq 2: held
      await session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(4, 40), now); // held
      // Held messages are neither accepted nor refused yet.
      assert.deepEqual([await scrape('accepted'), session.stats.messages], [2, 4]);
      await session.expire(now + 60_000); // seq 2 never came: both discarded
      assert.deepEqual([await scrape('accepted'), await scrape('SPARKPLUG_REORDER_TIMEOUT')], [2, 2]);
      // Let through once the missing one comes: then accepted, each one.
      await session.onMessage('spBv1.0/Plant1/NBIRTH/Line4', birth(0), now);
      await session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(2, 20), now); // held
      assert.equal(await scrape('accepted'), 3);
      await session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(1, 10), now); // lets seq 2 through
      assert.deepEqual([await scrape('accepted'), session.stats.reordered], [5, 1]);
      // And a STATE message taken is accepted too; a refused one is not.
      await session.onMessage('spBv1.0/STATE/scada', state({ online: true, timestamp: 7 }));
      await session.onMessage('spBv1.0/STATE/scada', state('OFFLINE'));
      assert.deepEqual([await scrape('accepted'), await scrape('SPARKPLUG_STATE_INVALID')], [6, 1]);
    } finally {
      session.stop();
    }
  });
  it('gives back the bytes of messages held after an NBIRTH whose data the queue refused: undone, its session takes them away', async () => {
    let refuse!: (err: Error) => void;
    const client = { submitMany: () => new Promise<never[]>((_resolve, reject) => (refuse = reject)) };
    const session = new SparkplugSession(client, () => undefined, silent, [], { reorderTimeoutMs: 60_000 });
    try {
      const now = Date.now();
      const born = session.onMessage('spBv1.0/Plant1/NBIRTH/Line4', birth(0), now);
      await new Promise((resolve) => setImmediate(resolve)); // its append is on its way
      const held = session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(2, 20), now); // ahead of seq 1: held in the new session
      assert.equal(session.host.reorder.held, 1);
      assert.ok(session.host.reorder.heldBytes > 0);
      refuse(new Error('queue full'));
      await Promise.allSettled([born, held]);
      // The NBIRTH undone, its session is gone and what it held with it: no bytes left counted
      // against LIMITS.sparkplugReorderMaxHeldBytes for messages no session holds.
      assert.equal(session.host.session('Plant1', 'Line4'), undefined);
      assert.deepEqual([session.host.reorder.held, session.host.reorder.heldBytes], [0, 0]);
      assert.equal(session.stats.refusedByCode.SPARKPLUG_SEQ_GAP, 1);
    } finally {
      session.stop();
    }
  });

  it("records every edge node known dead, its devices with it, when the broker connection is lost (STALE); a queue refusing that leaves its session as it was", async () => {
    const lifecycle = (queued: Submission[]) =>
      queued.filter((q) => q.dataType === 'event').map((q) => (({ eventType, sp_device, bd_seq }) => [eventType, sp_device ?? bd_seq].join(' '))(q.payload as Record<string, unknown>));
    const dbirth = bytes({ timestamp: String(T0), seq: '1', metrics: [{ name: 'P', alias: '2', datatype: T.Double, doubleValue: 1 }] });
    const commands: string[] = [];
    const { queued, client } = sink();
    const session = new SparkplugSession(client, (t) => void commands.push(t), silent, [], { reorderTimeoutMs: 60_000 });
    try {
      const now = Date.now();
      await session.onMessage('spBv1.0/Plant1/NBIRTH/Line4', birth(0), now);
      await session.onMessage('spBv1.0/Plant1/DBIRTH/Line4/Press', dbirth, now);
      const held = session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(3, 30), now).catch(() => undefined); // ahead of seq 2
      assert.equal(session.host.reorder.held, 1);
      await session.connectionLost(now + 5);
      await held;
      assert.equal(session.host.session('Plant1', 'Line4'), undefined, 'its session over');
      assert.equal(session.host.reorder.held, 0, 'what it held discarded');
      assert.deepEqual(lifecycle(queued), ['sparkplug.nbirth 0', 'sparkplug.dbirth Press', 'sparkplug.ddeath Press', 'sparkplug.ndeath 0']);
      // Its data on the broker again is of no current session: its births are asked for (§5.12).
      await session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(4, 40), now + 10);
      assert.deepEqual(commands, ['spBv1.0/Plant1/NCMD/Line4']);
      const recorded = lifecycle(queued).length;
      await session.connectionLost(now + 20);
      assert.equal(lifecycle(queued).length, recorded, 'dead once');
    } finally {
      session.stop();
    }

    let refusing = false;
    const refused = new SparkplugSession({ submitMany: async () => (refusing ? Promise.reject(new Error('queue full')) : []) }, () => undefined, silent);
    const now = Date.now();
    await refused.onMessage('spBv1.0/Plant1/NBIRTH/Line4', birth(0), now);
    await refused.onMessage('spBv1.0/Plant1/DBIRTH/Line4/Press', dbirth, now);
    refusing = true;
    await refused.connectionLost(now + 5);
    assert.equal(refused.stats.submitFailed, 2, 'its deaths not queued');
    assert.deepEqual([refused.host.session('Plant1', 'Line4')?.bdSeq, [...(refused.host.session('Plant1', 'Line4')?.devices.keys() ?? [])]], [0, ['Press']], 'undone: its session as it was');
    refusing = false;
    await refused.connectionLost(now + 10);
    assert.equal(refused.host.session('Plant1', 'Line4'), undefined, 'recorded at the next loss');
  });

  it("ends the edge node's session on an NBIRTH it cannot decode: the new session's data is never read against the old birth's aliases", async () => {
    const { queued, client } = sink();
    const session = new SparkplugSession(client, () => undefined, silent);
    const now = Date.now();
    await session.onMessage('spBv1.0/Plant1/NBIRTH/Line4', birth(0), now);
    // The edge node restarts with its aliases given anew, and a String value longer than a payload
    // may hold: the whole NBIRTH is refused while decoding (payload.ts).
    const restarted = bytes({
      timestamp: String(T0 + 10),
      seq: '0',
      metrics: [
        bdSeq(1),
        { name: 'Inputs/Pressure', alias: '1', datatype: T.Double, doubleValue: 7 },
        { name: 'Notes', alias: '2', datatype: T.String, stringValue: 'x'.repeat(LIMITS.stringMaxChars + 1) },
      ],
    });
    await session.onMessage('spBv1.0/Plant1/NBIRTH/Line4', restarted, now);
    assert.equal(session.stats.refusedByCode.SPARKPLUG_PAYLOAD_INVALID, 1);
    assert.equal(session.host.session('Plant1', 'Line4'), undefined);
    // Its first NDATA (seq 1, alias 1: the pressure) is the next seq of the old session too: read
    // against it, the pressure was stored as Inputs/Temp.
    await session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(1, 8), now);
    assert.equal(session.stats.refusedByCode.SPARKPLUG_NOT_BORN, 1);
    const temps = queued.filter((q) => q.dataType === 'timeseries').map((q) => (q.payload as Record<string, unknown>)['Plant1.Line4.Inputs.Temp']);
    assert.deepEqual(temps, [1]);
  });

  it("takes the seq of a DBIRTH it cannot decode and drops that device's birth: the edge node's other messages are read, no gap", async () => {
    const { queued, client } = sink();
    const sent: string[] = [];
    const session = new SparkplugSession(client, (topic) => sent.push(topic), silent);
    const now = Date.now();
    const dbirth = (seq: number, notes: string) =>
      bytes({ timestamp: String(T0), seq: String(seq), metrics: [{ name: 'Level', alias: '5', datatype: T.Double, doubleValue: 1 }, { name: 'Notes', alias: '6', datatype: T.String, stringValue: notes }] });
    const ddata = (seq: number, v: number) => bytes({ timestamp: String(T0 + seq), seq: String(seq), metrics: [{ alias: '5', doubleValue: v }] });
    await session.onMessage('spBv1.0/Plant1/NBIRTH/Line4', birth(0), now);
    await session.onMessage('spBv1.0/Plant1/DBIRTH/Line4/Tank', dbirth(1, 'ok'), now);
    await session.onMessage('spBv1.0/Plant1/DDATA/Line4/Tank', ddata(2, 2), now);
    // The device born again with a String value longer than a payload may hold: refused while decoding.
    const unreadable = dbirth(3, 'x'.repeat(LIMITS.stringMaxChars + 1));
    await session.onMessage('spBv1.0/Plant1/DBIRTH/Line4/Tank', unreadable, now);
    assert.equal(session.stats.refusedByCode.SPARKPLUG_PAYLOAD_INVALID, 1);
    assert.deepEqual(sent, ['spBv1.0/Plant1/NCMD/Line4']);
    // The same bytes again at once (sent again without DUP): a duplicate, its seq not taken twice.
    await session.onMessage('spBv1.0/Plant1/DBIRTH/Line4/Tank', unreadable, now);
    assert.equal(session.stats.refusedByCode.SPARKPLUG_DUPLICATE, 1);
    // Its seq was 3: the edge node's NDATA at 4 is read; the device's DDATA at 5 is not, under the old birth's names.
    await session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(4, 9), now);
    await session.onMessage('spBv1.0/Plant1/DDATA/Line4/Tank', ddata(5, 3), now);
    assert.equal(session.stats.refusedByCode.SPARKPLUG_SEQ_GAP, undefined);
    assert.equal(session.stats.refusedByCode.SPARKPLUG_NOT_BORN, 1);
    const values = queued.filter((q) => q.dataType === 'timeseries').map((q) => q.payload as Record<string, unknown>);
    assert.deepEqual(values.map((v) => v['Plant1.Line4.Inputs.Temp']).filter((v) => v !== undefined), [1, 9]);
    assert.deepEqual(values.map((v) => v['Plant1.Line4.Tank.Level']).filter((v) => v !== undefined), [1, 2]);
    // Another message lost after it is a gap, as any.
    await session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(7, 10), now + 10_000);
    assert.equal(session.stats.refusedByCode.SPARKPLUG_SEQ_GAP, 1);
  });

  it('takes the seq of an NDATA or DDATA it cannot decode: the messages after it are read, no gap, no rebirth', async () => {
    const { queued, client } = sink();
    const sent: string[] = [];
    const session = new SparkplugSession(client, (topic) => sent.push(topic), silent);
    const now = Date.now();
    const dbirth = (seq: number) => bytes({ timestamp: String(T0), seq: String(seq), metrics: [{ name: 'Level', alias: '5', datatype: T.Double, doubleValue: 1 }, { name: 'Notes', alias: '6', datatype: T.String, stringValue: 'ok' }] });
    const ddata = (seq: number, v: number, notes?: string) =>
      bytes({ timestamp: String(T0 + seq), seq: String(seq), metrics: [{ alias: '5', doubleValue: v }, ...(notes === undefined ? [] : [{ alias: '6', stringValue: notes }])] });
    const long = 'x'.repeat(LIMITS.stringMaxChars + 1);
    await session.onMessage('spBv1.0/Plant1/NBIRTH/Line4', birth(0), now);
    await session.onMessage('spBv1.0/Plant1/DBIRTH/Line4/Tank', dbirth(1), now);
    // A note longer than a String value may be: refused while decoding, its seq (2, then 4) unread.
    const unreadable = ddata(2, 2, long);
    await session.onMessage('spBv1.0/Plant1/DDATA/Line4/Tank', unreadable, now);
    // The same bytes again at once (sent again without DUP): a duplicate, its seq not taken twice.
    await session.onMessage('spBv1.0/Plant1/DDATA/Line4/Tank', unreadable, now);
    await session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(3, 9), now);
    await session.onMessage('spBv1.0/Plant1/NDATA/Line4', bytes({ timestamp: String(T0 + 4), seq: '4', metrics: [{ alias: '1', datatype: T.String, stringValue: long }] }), now);
    await session.onMessage('spBv1.0/Plant1/DDATA/Line4/Tank', ddata(5, 3), now);
    assert.equal(session.stats.refusedByCode.SPARKPLUG_PAYLOAD_INVALID, 2);
    assert.equal(session.stats.refusedByCode.SPARKPLUG_DUPLICATE, 1);
    assert.equal(session.stats.refusedByCode.SPARKPLUG_SEQ_GAP, undefined);
    assert.equal(session.host.session('Plant1', 'Line4')?.stale, false);
    assert.deepEqual(sent, []);
    const values = queued.filter((q) => q.dataType === 'timeseries').map((q) => q.payload as Record<string, unknown>);
    assert.deepEqual(values.map((v) => v['Plant1.Line4.Inputs.Temp']).filter((v) => v !== undefined), [1, 9]);
    assert.deepEqual(values.map((v) => v['Plant1.Line4.Tank.Level']).filter((v) => v !== undefined), [1, 3]);
    // Another message lost after them is a gap, as any.
    await session.onMessage('spBv1.0/Plant1/NDATA/Line4', data(7, 10), now + 10_000);
    assert.equal(session.stats.refusedByCode.SPARKPLUG_SEQ_GAP, 1);
  });
});

/**
 * Messages an edge node sends again (MQTT 3.1.1 §3.3.1.1, DUP) on the local MQTT input: read in the
 * session they were sent in. The previous session is kept for TIMINGS.sparkplugResendWindowMs, its
 * definitions counted with the current ones under one bound.
 */
describe('Sparkplug host: messages sent again (DUP) and the previous session', () => {
  const A = {}; // the first connection
  const B = {}; // the next one
  const dup = (connection: object) => ({ connection, dup: true });
  const first = (connection: object) => ({ connection, dup: false });
  const temp = (out: { readings: Array<Record<string, unknown>> }) => out.readings.map((r) => r['Plant1.Line4.Inputs.Temp']);

  it('reads a resend after the new NBIRTH by its previous session\'s seq, wrapping 255 → 0, and a seq read already is a duplicate', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
    host.handle(NB, nbirth(253, 0), T0, first(A));
    assert.equal(host.handle(ND, ndata(254, [{ alias: '1', doubleValue: 1 }]), T0, first(A)).refused, undefined);
    assert.equal(host.handle(ND, ndata(255, [{ alias: '1', doubleValue: 2 }]), T0, first(A)).refused, undefined);
    host.handle(NB, nbirth(0, 1), T0, first(B));
    assert.equal(host.previousSession('Plant1', 'Line4')?.bdSeq, 0);
    assert.equal(host.handle(ND, ndata(255, [{ alias: '1', doubleValue: 2 }]), T0, dup(B)).refused?.code, 'SPARKPLUG_DUPLICATE');
    const next = host.handle(ND, ndata(0, [{ alias: '1', doubleValue: 3 }]), T0, dup(B));
    assert.equal(next.refused, undefined);
    assert.deepEqual(temp(next), [3]);
    assert.equal(host.previousSession('Plant1', 'Line4')?.seq, 0);
    // The current session is untouched: its own seq 1 is next.
    assert.equal(host.session('Plant1', 'Line4')?.seq, 0);
    assert.deepEqual(temp(host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 4 }]), T0, first(B))), [4]);
    // A gap in the previous session is refused there alone: no rebirth, the current session in force.
    const gap = host.handle(ND, ndata(5, [{ alias: '1', doubleValue: 5 }]), T0, dup(B));
    assert.equal(gap.refused?.code, 'SPARKPLUG_SEQ_GAP');
    assert.equal(gap.rebirth, false);
    assert.equal(host.session('Plant1', 'Line4')?.stale, false);
  });

  it('takes an NBIRTH sent again for a duplicate only with the bdSeq and timestamp of a birth read: a rebirth keeps its bdSeq', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
    const birthAt = (bd: number, at: number) => msg({ timestamp: String(at), seq: '0', metrics: [bdSeq(bd), { name: 'Inputs/Temp', alias: '1', datatype: T.Double, doubleValue: at - T0 }] });
    host.handle(NB, birthAt(0, T0), T0, first(A));
    // The rebirth an NCMD asked for, same connection, same bdSeq (§5.12): the queue refused it, undone.
    host.handle(NB, birthAt(0, T0 + 5), T0, first(A)).undo?.();
    // Sent again before the new connection's NBIRTH: read, not a duplicate.
    const again = host.handle(NB, birthAt(0, T0 + 5), T0, dup(B));
    assert.equal(again.refused, undefined);
    assert.deepEqual(temp(again), [5]);
    // The very birth read, sent again: a duplicate.
    assert.equal(host.handle(NB, birthAt(0, T0 + 5), T0, dup(B)).refused?.code, 'SPARKPLUG_DUPLICATE');
  });

  it('undoes a resend read in the previous session, and an NBIRTH puts the previous session back', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
    host.handle(NB, nbirth(0, 0), T0, first(A));
    const birth = host.handle(NB, nbirth(0, 1), T0, first(B));
    const resend = host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 1 }]), T0, dup(B));
    assert.equal(host.previousSession('Plant1', 'Line4')?.seq, 1);
    resend.undo?.();
    assert.equal(host.previousSession('Plant1', 'Line4')?.seq, 0, 'its seq not taken: it is read again when sent again');
    birth.undo?.();
    assert.equal(host.session('Plant1', 'Line4')?.bdSeq, 0);
    assert.equal(host.previousSession('Plant1', 'Line4'), undefined);
  });

  it('counts the previous session\'s definitions, drops them after the resend window, and first when a current birth needs the room', () => {
    const big = (bd: number) =>
      msg({ timestamp: String(T0), seq: '0', metrics: [bdSeq(bd), ...Array.from({ length: 20 }, (_, i) => ({ name: `m${i}`.padEnd(200, 'x'), alias: String(i), datatype: T.Double, doubleValue: i }))] });
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
    host.handle(NB, big(0), T0, first(A));
    const single = host.definitionsBytes;
    host.handle(NB, big(1), T0, first(B));
    assert.equal(host.definitionsBytes, 2 * single, 'the previous session counted');
    // Past the window it is dropped, and its bytes with it.
    host.handle(topic('spBv1.0/Plant1/NDATA/Other'), ndata(1, []), T0 + TIMINGS.sparkplugResendWindowMs);
    assert.equal(host.previousSession('Plant1', 'Line4'), undefined);
    assert.equal(host.definitionsBytes, single);
    // Under a bound that holds two sessions' definitions, a third edge node's birth drops a previous session, not itself.
    const bounded = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true, maxDefinitionsBytes: 2 * single + 100 });
    bounded.handle(NB, big(0), T0, first(A));
    bounded.handle(NB, big(1), T0, first(B));
    assert.ok(bounded.previousSession('Plant1', 'Line4'));
    assert.equal(bounded.handle(topic('spBv1.0/Plant1/NBIRTH/Line5'), big(0), T0).refused, undefined);
    assert.equal(bounded.previousSession('Plant1', 'Line4'), undefined, 'dropped for the current birth');
    assert.ok(bounded.definitionsBytes <= 2 * single + 100);
  });

  it('takes a message sent again without DUP for a duplicate only with the bytes read at its seq (mqtt.js after a lost PUBACK)', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    const wire = (o: Record<string, unknown>) => encodeWire(o);
    const at = (bytes: Uint8Array) => [decodePayload(bytes), digestOf(bytes)] as const;
    const birth = wire({ timestamp: String(T0), seq: '0', metrics: [bdSeq(0), { name: 'Inputs/Temp', alias: '1', datatype: T.Double, doubleValue: 1 }] });
    const d = (seq: number, v: number) => wire({ timestamp: String(T0 + seq), seq: String(seq), metrics: [{ alias: '1', doubleValue: v }] });
    const run = (tp: SparkplugTopic, bytes: Uint8Array) => {
      const [p, digest] = at(bytes);
      return host.handle(tp, p, T0, undefined, digest);
    };
    run(NB, birth);
    run(ND, d(1, 1));
    run(ND, d(2, 2));
    // The same bytes at a seq read: a duplicate, the session going on.
    const copy = run(ND, d(1, 1));
    assert.equal(copy.refused?.code, 'SPARKPLUG_DUPLICATE');
    assert.deepEqual([copy.rebirth, copy.readings], [false, []]);
    assert.equal(run(NB, birth).refused?.code, 'SPARKPLUG_DUPLICATE', 'the NBIRTH read, sent again: its session not started again');
    assert.deepEqual([host.session('Plant1', 'Line4')?.seq, host.session('Plant1', 'Line4')?.stale], [2, false]);
    assert.deepEqual(temp(run(ND, d(3, 3))), [3]);
    // Other bytes at a seq read: a gap, as ever.
    const other = run(ND, d(2, 99));
    assert.equal(other.refused?.code, 'SPARKPLUG_SEQ_GAP');
    assert.equal(other.rebirth, true);
    // A session awaiting its rebirth takes any NBIRTH, the same bytes too (a birth an edge node keeps).
    assert.equal(run(NB, birth).refused, undefined);
    assert.equal(host.session('Plant1', 'Line4')?.stale, false);
  });

  it('reads what mqtt.js sends again without DUP on a new connection, after the will ended the session, in that session', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
    const d = (seq: number, v: number) => encodeWire({ timestamp: String(T0 + seq), seq: String(seq), metrics: [{ alias: '1', doubleValue: v }] });
    const run = (tp: SparkplugTopic, bytes: Uint8Array, connection: object) => host.handle(tp, decodePayload(bytes), T0, first(connection), digestOf(bytes));
    host.handle(NB, nbirth(0, 0), T0, first(A));
    run(ND, d(1, 1), A);
    host.handle(NDEATH, msg({ metrics: [bdSeq(0)] }), T0, first(A));
    assert.equal(run(ND, d(1, 1), B).refused?.code, 'SPARKPLUG_DUPLICATE');
    const unread = run(ND, d(2, 2), B);
    assert.equal(unread.refused, undefined);
    assert.deepEqual(temp(unread), [2]);
    assert.equal(host.previousSession('Plant1', 'Line4')?.seq, 2);
    // Other bytes at a seq read, or data on the connection the session was born on: not born, as ever.
    assert.equal(run(ND, d(2, 99), B).refused?.code, 'SPARKPLUG_NOT_BORN');
    assert.equal(run(ND, d(3, 3), A).refused?.code, 'SPARKPLUG_NOT_BORN');
  });

  it('reads a message sent again across several reconnections, after several new NBIRTHs (Paho), in the session it was sent in, by its timestamp', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
    const C = {};
    const D = {};
    const birthAt = (bd: number, at: number, metric: string) => msg({ timestamp: String(at), seq: '0', metrics: [bdSeq(bd), { name: metric, alias: '1', datatype: T.Double, doubleValue: 0 }] });
    host.handle(NB, birthAt(0, T0, 'Inputs/Temp'), T0, first(A));
    // NDATA 1 of the first session, published at T0 + 1000, is not acknowledged. Paho's order: the
    // next connection's NBIRTH, whose alias 1 is another metric, then the resend, which never gets
    // through (the link breaks again); then the third connection's NBIRTH and the resend once more.
    host.handle(NB, birthAt(1, T0 + 2000, 'Other'), T0, first(B));
    host.handle(NB, birthAt(2, T0 + 3000, 'Other'), T0, first(C));
    assert.deepEqual(host.previousSessions('Plant1', 'Line4').map((x) => x.bdSeq), [0, 1]);
    const again = host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 7 }], T0 + 1000), T0, dup(C));
    assert.equal(again.refused, undefined, 'acknowledged data is stored, not refused as not born');
    assert.deepEqual(temp(again), [7], 'read against the births of the session it was published in');
    assert.deepEqual(host.previousSessions('Plant1', 'Line4').map((x) => x.seq), [1, 0]);
    // Undone (the queue did not take it), it leaves the session it was read in as it was; sent again, read again.
    again.undo?.();
    assert.deepEqual(host.previousSessions('Plant1', 'Line4').map((x) => x.seq), [0, 0]);
    assert.deepEqual(temp(host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 7 }], T0 + 1000), T0, dup(D))), [7]);
    // What the second session sent, sent again on the third connection, is read in the second.
    const own = host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 8 }], T0 + 2500), T0, dup(C));
    assert.equal(own.refused, undefined);
    assert.deepEqual(own.readings.map((r) => r['Plant1.Line4.Other']), [8]);
    assert.deepEqual(host.previousSessions('Plant1', 'Line4').map((x) => x.seq), [1, 1]);
    // Each session's seq read already: a duplicate, in its own session.
    assert.equal(host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 7 }], T0 + 1000), T0, dup(D)).refused?.code, 'SPARKPLUG_DUPLICATE');
    // The current session is untouched.
    assert.deepEqual([host.session('Plant1', 'Line4')?.bdSeq, host.session('Plant1', 'Line4')?.seq], [2, 0]);
  });

  it(`keeps ${LIMITS.sparkplugPreviousSessionsPerNode} previous sessions per edge node: a message of an older one is refused, never read against a later session's births`, () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
    const n = LIMITS.sparkplugPreviousSessionsPerNode;
    const birthAt = (bd: number, at: number) => msg({ timestamp: String(at), seq: '0', metrics: [bdSeq(bd), { name: 'Inputs/Temp', alias: '1', datatype: T.Double, doubleValue: 0 }] });
    const single = (() => {
      const h = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
      h.handle(NB, birthAt(0, T0), T0, first(A));
      return h.definitionsBytes;
    })();
    for (let bd = 0; bd <= n + 1; bd++) host.handle(NB, birthAt(bd, T0 + bd * 1000), T0, first({}));
    assert.deepEqual(host.previousSessions('Plant1', 'Line4').map((x) => x.bdSeq), Array.from({ length: n }, (_, i) => i + 1), 'the oldest dropped');
    assert.equal(host.definitionsBytes, (n + 1) * single, 'every one kept counted with the current one');
    // Published in session 0, no longer kept: refused (acknowledged, counted), not read in session 1.
    const lost = host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 1 }], T0 + 500), T0, dup({}));
    assert.equal(lost.refused?.code, 'SPARKPLUG_NOT_BORN');
    assert.deepEqual(lost.readings, []);
    assert.deepEqual(temp(host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 2 }], T0 + 1500), T0, dup({}))), [2]);
    // An older NBIRTH sent again is kept in its place among them, the current session left in force.
    const older = host.handle(NB, birthAt(9, T0 + 1700), T0, dup({}));
    assert.equal(older.refused, undefined);
    assert.equal(host.session('Plant1', 'Line4')?.bdSeq, n + 1);
    assert.deepEqual(host.previousSessions('Plant1', 'Line4').map((x) => x.bdSeq), [9, ...Array.from({ length: n - 1 }, (_, i) => i + 2)]);
    // Past the resend window each is dropped.
    host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 3 }], T0 + 1), T0 + TIMINGS.sparkplugResendWindowMs);
    assert.deepEqual(host.previousSessions('Plant1', 'Line4'), []);
    assert.equal(host.definitionsBytes, single);
  });

  it('keeps an older NBIRTH sent again while no session is current among the previous ones: it never takes a newer session\'s place', () => {
    const birthAt = (bd: number, at: number, metric: string) => msg({ timestamp: String(at), seq: '0', metrics: [bdSeq(bd), { name: metric, alias: '1', datatype: T.Double, doubleValue: bd }] });
    const DB = topic('spBv1.0/Plant1/DBIRTH/Line4/Press');
    const kinds = (out: { events: Array<Record<string, unknown>> }) => out.events.map((e) => [e.eventType, e.sp_device, e.bd_seq]);
    for (const ended of ['refused NBIRTH', 'NDEATH'] as const) {
      const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
      const C = {};
      host.handle(NB, birthAt(0, T0, 'Inputs/Temp'), T0, first(A));
      host.handle(NB, birthAt(1, T0 + 2000, 'Other'), T0 + 2000, first(B));
      host.handle(DB, ndata(1, [{ name: 'Level', alias: '1', datatype: T.Float, floatValue: 1 }], T0 + 2001), T0 + 2001, first(B));
      // No session current: a new connection's NBIRTH refused (bdSeq 2), or the will of the last one.
      if (ended === 'refused NBIRTH') host.handle(NB, msg({ timestamp: String(T0 + 3000), seq: '0', metrics: [bdSeq(2), { name: 'a', intValue: 1 }] }), T0 + 3000, first(C));
      else host.handle(NDEATH, msg({ metrics: [bdSeq(1)] }), T0 + 3000, first(B));
      assert.equal(host.session('Plant1', 'Line4'), undefined);
      // Then the NBIRTH of a session between the two taken, sent again (Paho, DUP): published before
      // the last one, it is kept in its place among the previous sessions, its values stored.
      const older = host.handle(NB, birthAt(9, T0 + 1000, 'Mid'), T0 + 3001, dup(C));
      assert.equal(older.refused, undefined, ended);
      assert.deepEqual(older.readings.map((r) => r['Plant1.Line4.Mid']), [9]);
      assert.equal(host.session('Plant1', 'Line4'), undefined, `${ended}: an older birth is not current`);
      assert.deepEqual(host.previousSessions('Plant1', 'Line4').map((x) => x.bdSeq), [0, 9, 1]);
      // Older than every session kept: the same.
      assert.equal(host.handle(NB, birthAt(8, T0 - 1000, 'Old'), T0 + 3002, dup(C)).refused, undefined);
      assert.equal(host.session('Plant1', 'Line4'), undefined);
      // One refused (a metric without a data type) leaves the last birth taken awaiting its death.
      assert.equal(host.handle(NB, msg({ timestamp: String(T0 + 500), seq: '0', metrics: [bdSeq(7), { name: 'a', intValue: 1 }] }), T0 + 3003, dup(C)).refused?.code, 'SPARKPLUG_PAYLOAD_INVALID');
      if (ended === 'refused NBIRTH') {
        // The last birth taken (bdSeq 1) still awaits its death: that refused NBIRTH's NDEATH records it.
        assert.deepEqual(kinds(host.handle(NDEATH, msg({ metrics: [bdSeq(2)] }), T0 + 4000, first(C))), [['sparkplug.ddeath', 'Press', undefined], ['sparkplug.ndeath', undefined, 2]]);
      }
      // A newer NBIRTH sent again is current, as before.
      assert.equal(host.handle(NB, birthAt(3, T0 + 3500, 'Temp'), T0 + 4001, dup(C)).refused, undefined);
      assert.equal(host.session('Plant1', 'Line4')?.bdSeq, 3);
    }
  });

  it('refuses plain data on the connection of a refused NBIRTH as not born: never read against an older birth\'s aliases', () => {
    const d = (seq: number, v: number, at: number) => encodeWire({ timestamp: String(at), seq: String(seq), metrics: [{ alias: '1', doubleValue: v }] });
    const refusedBirth = msg({ timestamp: String(T0 + 2000), seq: '0', metrics: [bdSeq(1), { name: 'Other', alias: '1', intValue: 1 }] });
    const ways = ['refused for a metric without a data type', 'that cannot be decoded', 'refused after the NDEATH of the last birth taken', 'refused before the late NDEATH of the last birth taken'] as const;
    for (const way of ways) {
      const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
      const run = (tp: SparkplugTopic, bytes: Uint8Array, via: { connection: object; dup: boolean }, now: number) => host.handle(tp, decodePayload(bytes), now, via, digestOf(bytes));
      host.handle(NB, nbirth(0, 0), T0, first(A));
      if (way === 'refused after the NDEATH of the last birth taken') host.handle(NDEATH, msg({ metrics: [bdSeq(0)] }), T0 + 1500, first(A));
      // The NBIRTH of the next connection, refused: the edge node's session is the new one, whose aliases are unknown.
      const refused = way === 'that cannot be decoded' ? host.unreadableBirth(NB, undecodable(), T0 + 2000, first(B)) : host.handle(NB, refusedBirth, T0 + 2000, first(B));
      assert.ok(refused.refused, way);
      assert.equal(host.session('Plant1', 'Line4'), undefined);
      // The old connection's will, late: the session it ended dies, the new connection's data still follows its birth.
      if (way === 'refused before the late NDEATH of the last birth taken') assert.equal(host.handle(NDEATH, msg({ metrics: [bdSeq(0)] }), T0 + 2500, first(A)).refused, undefined);
      // Its first NDATA (seq 1, the next of the old session too) is of that session: not born, a rebirth asked.
      const next = run(ND, d(1, 1, T0 + 2001), first(B), T0 + 2000 + INTERVAL);
      assert.equal(next.refused?.code, 'SPARKPLUG_NOT_BORN', way);
      assert.deepEqual(next.readings, [], way);
      assert.equal(next.rebirth, true, way);
      assert.equal(host.previousSession('Plant1', 'Line4')?.seq, 0, `${way}: the old session took nothing`);
      // What the old connection published, sent again flagged DUP, is still read in its session.
      assert.deepEqual(temp(run(ND, d(1, 5, T0 + 1), dup(B), T0 + 2000 + INTERVAL)), [5], way);
    }
  });

  it('never takes an NBIRTH sent again for current over a newer NBIRTH refused, nor reads in an older session what was published after that one', () => {
    const birthAt = (bd: number, at: number, metric: string) => msg({ timestamp: String(at), seq: '0', metrics: [bdSeq(bd), { name: metric, alias: '1', datatype: T.Double, doubleValue: bd }] });
    const C = {};
    const ways = ['ending the last birth taken', 'after the NDEATH of the last birth taken', 'before the late NDEATH of the last birth taken'] as const;
    for (const way of ways) {
      const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
      host.handle(NB, birthAt(0, T0, 'Inputs/Temp'), T0, first(A));
      if (way === 'after the NDEATH of the last birth taken') host.handle(NDEATH, msg({ metrics: [bdSeq(0)] }), T0 + 2500, first(A));
      // The next connection's NBIRTH, published at T0 + 3000, refused (a metric without a data type).
      const refused = host.handle(NB, msg({ timestamp: String(T0 + 3000), seq: '0', metrics: [bdSeq(2), { name: 'a', intValue: 1 }] }), T0 + 3000, first(B));
      assert.equal(refused.refused?.code, 'SPARKPLUG_PAYLOAD_INVALID', way);
      if (way === 'before the late NDEATH of the last birth taken') assert.equal(host.handle(NDEATH, msg({ metrics: [bdSeq(0)] }), T0 + 3100, first(A)).refused, undefined);
      // Then, on a third connection, the NBIRTH of a session between the two sent again (Paho, DUP):
      // published before the birth refused, it is an older session's, kept in its place, its values stored.
      const between = host.handle(NB, birthAt(9, T0 + 1000, 'Mid'), T0 + 4000, dup(C));
      assert.equal(between.refused, undefined, way);
      assert.deepEqual(between.readings.map((r) => r['Plant1.Line4.Mid']), [9], way);
      assert.equal(host.session('Plant1', 'Line4'), undefined, `${way}: an older birth is not current over a newer one refused`);
      assert.deepEqual(host.previousSessions('Plant1', 'Line4').map((x) => x.bdSeq), [0, 9], way);
      // What it published after it is read in it; what was published after the birth refused, of the
      // session whose aliases are unknown, in no older session: not born.
      assert.deepEqual(host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 1 }], T0 + 1001), T0 + 4001, dup(C)).readings.map((r) => r['Plant1.Line4.Mid']), [1], way);
      const after = host.handle(ND, ndata(2, [{ alias: '1', doubleValue: 2 }], T0 + 3001), T0 + 4002, dup(C));
      assert.equal(after.refused?.code, 'SPARKPLUG_NOT_BORN', way);
      assert.deepEqual(after.readings, [], way);
      assert.equal(host.previousSessions('Plant1', 'Line4')[1]?.seq, 1, way);
      // An NBIRTH published after the refused one is current, as before.
      assert.equal(host.handle(NB, birthAt(3, T0 + 3500, 'Temp'), T0 + 4003, dup(C)).refused, undefined, way);
      assert.equal(host.session('Plant1', 'Line4')?.bdSeq, 3, way);
    }
  });

  it('reads in no session what was published between a refused NBIRTH and the next birth taken, sent again after that birth', () => {
    const birthAt = (bd: number, at: number, metric: string) => msg({ timestamp: String(at), seq: '0', metrics: [bdSeq(bd), { name: metric, alias: '1', datatype: T.Double, doubleValue: bd }] });
    const C = {};
    const D = {};
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
    host.handle(NB, birthAt(0, T0, 'Inputs/Temp'), T0, first(A));
    // The next connection's NBIRTH (T0 + 2000) refused, then a third connection's (T0 + 3000) taken.
    assert.equal(host.handle(NB, msg({ timestamp: String(T0 + 2000), seq: '0', metrics: [bdSeq(1), { name: 'a', intValue: 1 }] }), T0 + 2000, first(B)).refused?.code, 'SPARKPLUG_PAYLOAD_INVALID');
    assert.equal(host.handle(NB, birthAt(2, T0 + 3000, 'Other'), T0 + 3000, first(C)).refused, undefined);
    // Published in the refused birth's session (its seq 1, the next of the first session too), sent again:
    // of no session known, never read against the first birth's aliases.
    for (const via of [dup(C), dup(D)]) {
      const out = host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 7 }], T0 + 2500), T0 + 3001, via);
      assert.equal(out.refused?.code, 'SPARKPLUG_NOT_BORN');
      assert.deepEqual(out.readings, []);
      assert.equal(host.previousSession('Plant1', 'Line4')?.seq, 0);
    }
    // What the first session published is still read in it, and the current one goes on.
    assert.deepEqual(temp(host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 5 }], T0 + 1), T0 + 3002, dup(D))), [5]);
    assert.deepEqual(host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 6 }], T0 + 3003), T0 + 3003, first(C)).readings.map((r) => r['Plant1.Line4.Other']), [6]);
  });

  it('keeps what it read of a refused NBIRTH with no session left before it: an NBIRTH sent again published before it is not current', () => {
    const birthAt = (bd: number, at: number, metric: string) => msg({ timestamp: String(at), seq: '0', metrics: [bdSeq(bd), { name: metric, alias: '1', datatype: T.Double, doubleValue: bd }] });
    const C = {};
    const D = {};
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
    host.handle(NB, birthAt(0, T0, 'Inputs/Temp'), T0, first(A));
    host.handle(NDEATH, msg({ metrics: [bdSeq(0)] }), T0 + 100, first(A));
    // An older NBIRTH sent again, refused: no previous session is left.
    assert.equal(host.handle(NB, msg({ timestamp: String(T0 - 1000), seq: '0', metrics: [bdSeq(9), { name: 'a', intValue: 1 }] }), T0 + 200, dup(B)).refused?.code, 'SPARKPLUG_PAYLOAD_INVALID');
    assert.deepEqual(host.previousSessions('Plant1', 'Line4'), []);
    // A new connection's NBIRTH (T0 + 2000), refused.
    assert.ok(host.handle(NB, msg({ timestamp: String(T0 + 2000), seq: '0', metrics: [bdSeq(1), { name: 'a', intValue: 1 }] }), T0 + 2000, first(C)).refused);
    // An NBIRTH published before it, sent again: an older session's, kept, never current.
    assert.equal(host.handle(NB, birthAt(5, T0 + 1000, 'Mid'), T0 + 2001, dup(D)).refused, undefined);
    assert.equal(host.session('Plant1', 'Line4'), undefined);
    assert.deepEqual(host.previousSessions('Plant1', 'Line4').map((x) => x.bdSeq), [5]);
    // The refused birth's connection's data is of its session: not born, never read in the older one.
    const next = host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 1 }], T0 + 2002), T0 + 2002, first(C));
    assert.equal(next.refused?.code, 'SPARKPLUG_NOT_BORN');
    assert.equal(host.previousSession('Plant1', 'Line4')?.seq, 0);
  });

  it('keeps the bdSeq of a refused NBIRTH for a birth after it whose bdSeq is unread only on its connection: another connection\'s will of it is stale', () => {
    const C = {};
    const kinds = (out: { events: Array<Record<string, unknown>> }) => out.events.map((e) => [e.eventType, e.bd_seq]);
    for (const unread of ['that cannot be decoded', 'without a bdSeq'] as const) {
      for (const [on, ofRefused] of [[B, true], [C, false], [undefined, true]] as const) {
        const how = `${unread}, on ${on === B ? 'the refused birth\'s connection' : on === C ? 'another connection' : 'a connection unknown'}`;
        const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
        host.handle(NB, nbirth(0, 0), T0, first(A));
        // A new connection's NBIRTH (bdSeq 1), refused for a metric without a data type.
        host.handle(NB, msg({ timestamp: String(T0 + 1), seq: '0', metrics: [bdSeq(1), { name: 'a', intValue: 1 }] }), T0 + 1, first(B));
        // Then an NBIRTH whose bdSeq cannot be read: a rebirth on that connection keeps its bdSeq
        // (§5.12); one on another connection is of a new bdSeq, the will of bdSeq 1 an older connection's.
        const via = on === undefined ? undefined : first(on);
        const next = unread === 'that cannot be decoded' ? host.unreadableBirth(NB, undecodable(), T0 + 2, via) : host.handle(NB, msg({ timestamp: String(T0 + 2), seq: '0', metrics: [{ name: 'Inputs/Temp', alias: '1', datatype: T.Double, doubleValue: 1 }] }), T0 + 2, via);
        assert.ok(next.refused, how);
        assert.equal(host.session('Plant1', 'Line4'), undefined, how);
        const late = host.handle(NDEATH, msg({ metrics: [bdSeq(1)] }), T0 + 3, first(B));
        if (ofRefused) assert.deepEqual(kinds(late), [['sparkplug.ndeath', 1]], how);
        else {
          assert.equal(late.refused?.code, 'SPARKPLUG_DEATH_STALE', how);
          assert.deepEqual(late.events, [], how);
          // The last birth taken still dies by its own NDEATH.
          assert.deepEqual(kinds(host.handle(NDEATH, msg({ metrics: [bdSeq(0)] }), T0 + 4, first(A))), [['sparkplug.ndeath', 0]], how);
        }
      }
    }
  });

  it('never ends a current session on an NBIRTH sent again (DUP) that cannot be decoded, even one born by a birth sent again', () => {
    for (const born of ['on its connection', 'by a birth sent again'] as const) {
      const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
      host.handle(NB, nbirth(0, 4), T0, born === 'on its connection' ? first(A) : dup(A));
      // Published on an earlier connection at a time that cannot be read: not placed after the current birth.
      const out = host.unreadableBirth(NB, undecodable(), T0 + 10, dup(B));
      assert.equal(out.refused?.code, 'SPARKPLUG_PAYLOAD_INVALID', born);
      assert.equal(host.session('Plant1', 'Line4')?.bdSeq, 4, born);
      assert.deepEqual(temp(host.handle(ND, ndata(1, [{ alias: '1', doubleValue: 3 }]), T0 + 11, first(B))), [3], born);
    }
  });

  it('reads what is sent again after an outage of hours in the session it was sent in: the client keeps it as long', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
    const d = (seq: number, v: number) => encodeWire({ timestamp: String(T0 + seq), seq: String(seq), metrics: [{ alias: '1', doubleValue: v }] });
    host.handle(NB, nbirth(0, 0), T0, first(A));
    host.handle(ND, decodePayload(d(1, 1)), T0, first(A), digestOf(d(1, 1)));
    // The link is lost (the will published); the edge node is back three hours later, and mqtt.js sends
    // again what it had no PUBACK for: NDATA 1 (stored already) and NDATA 2 (never arrived).
    host.handle(NDEATH, msg({ metrics: [bdSeq(0)] }), T0, first(A));
    const later = T0 + 3 * 3_600_000;
    assert.equal(host.handle(ND, decodePayload(d(1, 1)), later, first(B), digestOf(d(1, 1))).refused?.code, 'SPARKPLUG_DUPLICATE');
    const unread = host.handle(ND, decodePayload(d(2, 2)), later, first(B), digestOf(d(2, 2)));
    assert.equal(unread.refused, undefined);
    assert.deepEqual(temp(unread), [2]);
  });

  it("records a device born by a DBIRTH sent again in a session that has ended dead at that session's end: it never stays online", () => {
    const device = (type: string, name: string) => topic(`spBv1.0/Plant1/${type}/Line4/${name}`);
    const birth = (seq: number, at: number) => ndata(seq, [{ name: 'Level', alias: '1', datatype: T.Float, floatValue: seq }], at);
    const level = (out: { readings: Array<Record<string, unknown>> }) => out.readings.map((r) => Object.entries(r).find(([f]) => f.endsWith('.Level'))?.[1]);
    const kinds = (out: { events: Array<Record<string, unknown>> }) => out.events.map((e) => [e.eventType, e.sp_device, e.timestamp]);
    const birthAt = (bd: number, at: number) => msg({ timestamp: String(at), seq: '0', metrics: [bdSeq(bd), { name: 'Inputs/Temp', alias: '1', datatype: T.Double, doubleValue: 1 }] });
    // Replaced by a new connection's NBIRTH (Paho's order: the resend after it).
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
    host.handle(NB, birthAt(0, T0), T0, first(A));
    host.handle(device('DBIRTH', 'Press'), birth(1, T0 + 1), T0 + 1, first(A));
    // Pump's DBIRTH (seq 2) got no PUBACK; the new session's NBIRTH records Press dead at its time.
    assert.deepEqual(kinds(host.handle(NB, birthAt(1, T0 + 10), T0 + 11, first(B))), [['sparkplug.ddeath', 'Press', T0 + 10], ['sparkplug.nbirth', undefined, T0 + 10]]);
    const pump = host.handle(device('DBIRTH', 'Pump'), birth(2, T0 + 2), T0 + 12, dup(B));
    assert.equal(pump.refused, undefined);
    assert.deepEqual(level(pump), [2], 'its values stored');
    assert.deepEqual(kinds(pump), [['sparkplug.dbirth', 'Pump', T0 + 2], ['sparkplug.ddeath', 'Pump', T0 + 10]], 'born, then dead with its session');
    // Its data sent again after it is read in that session; a device born there again dies once only.
    assert.deepEqual(level(host.handle(device('DDATA', 'Pump'), ndata(3, [{ alias: '1', floatValue: 3 }], T0 + 3), T0 + 12, dup(B))), [3]);
    assert.deepEqual(kinds(host.handle(device('DBIRTH', 'Press'), birth(4, T0 + 4), T0 + 12, dup(B))), [['sparkplug.dbirth', 'Press', T0 + 4]]);
    // The older NBIRTH of a session before these, sent again: its devices die at the birth after it.
    assert.equal(host.handle(NB, birthAt(9, T0 - 10), T0 + 13, dup(B)).refused, undefined);
    assert.deepEqual(kinds(host.handle(device('DBIRTH', 'Valve'), birth(1, T0 - 9), T0 + 13, dup(B))), [['sparkplug.dbirth', 'Valve', T0 - 9], ['sparkplug.ddeath', 'Valve', T0]]);

    // Ended by its NDEATH (the will), what mqtt.js sends again without DUP on its next connection.
    const willed = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
    willed.handle(NB, birthAt(0, T0), T0, first(A));
    assert.deepEqual(kinds(willed.handle(NDEATH, msg({ metrics: [bdSeq(0)] }), T0 + 30, first(A))), [['sparkplug.ndeath', undefined, T0 + 30]]);
    assert.deepEqual(kinds(willed.handle(device('DBIRTH', 'Pump'), birth(1, T0 + 1), T0 + 31, first(B))), [['sparkplug.dbirth', 'Pump', T0 + 1], ['sparkplug.ddeath', 'Pump', T0 + 30]]);

    // Ended by a refused NBIRTH, no death yet: the device born in it dies with its NDEATH, once.
    const refused = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL, resends: true });
    refused.handle(NB, birthAt(0, T0), T0, first(A));
    assert.equal(refused.handle(NB, msg({ timestamp: String(T0 + 10), seq: '0', metrics: [bdSeq(1), { name: 'a', intValue: 1 }] }), T0 + 10, first(B)).refused?.code, 'SPARKPLUG_PAYLOAD_INVALID');
    assert.deepEqual(kinds(refused.handle(device('DBIRTH', 'Pump'), birth(1, T0 + 1), T0 + 11, dup(B))), [['sparkplug.dbirth', 'Pump', T0 + 1]]);
    assert.deepEqual(kinds(refused.handle(NDEATH, msg({ metrics: [bdSeq(0)] }), T0 + 40, first(B))), [['sparkplug.ddeath', 'Pump', T0 + 40], ['sparkplug.ndeath', undefined, T0 + 40]]);
  });

  it('keeps no previous session where nothing is sent again (a plant\'s broker)', () => {
    const host = new SparkplugHost({ rebirthMinIntervalMs: INTERVAL });
    host.handle(NB, nbirth(0, 0), T0);
    host.handle(NB, nbirth(0, 1), T0);
    assert.equal(host.previousSession('Plant1', 'Line4'), undefined);
  });
});
