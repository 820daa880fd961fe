import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import mqtt from 'mqtt';
import { mqttInput } from '../../field-client/src/inputs/mqtt-input.ts';
import { DATA_TYPES, encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';
import { SparkplugSession } from '../../field-client/src/inputs/sparkplug/session.ts';
import type { Submission } from '../../field-client/src/client-options.ts';
import type { FieldClient } from '../../field-client/src/field-client.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { createLogger } from '../../shared/logger.ts';
import { lossyProxy } from '../helpers/lossy-proxy.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * Sparkplug B edge nodes on the local MQTT input (FIELD_MQTT_SPARKPLUG): a QoS 1 publish is
 * acknowledged only once its data is in the queue, nothing a sensor publishes is retained, and what
 * arrives while an append is on its way goes into the queue in one append, in order.
 */
const PREFIX = 'fieldstream/local';
const T0 = Date.now();
const bdSeq = { name: 'bdSeq', datatype: DATA_TYPES.UInt64, longValue: '0' };
const birth = (group: string) => encodeWire({ timestamp: String(T0), seq: '0', metrics: [bdSeq, { name: 'Temp', alias: '1', datatype: DATA_TYPES.Double, doubleValue: 20 }] });
const data = (seq: number) => encodeWire({ timestamp: String(T0 + seq), seq: String(seq), metrics: [{ alias: '1', doubleValue: 20 + seq }] });

/** The queue's side: records what it takes, refuses while `refusing`, each append taking `delayMs`. */
const appends: Submission[][] = [];
let refusing = false;
/** appends to refuse before taking again (a queue that recovers at once) */
let refuseNext = 0;
let delayMs = 0;
const client = {
  submitMany: async (items: Submission[]) => {
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    if (refusing) throw new FieldStreamError('FIELD_QUEUE_FULL', 'the queue is full');
    if (refuseNext > 0) {
      refuseNext--;
      throw new FieldStreamError('FIELD_QUEUE_FULL', 'the queue is full');
    }
    appends.push([...items]);
  },
} as unknown as FieldClient;
const input = mqttInput(client, '127.0.0.1', 0, PREFIX, createLogger('test', 'silent'), undefined, { groups: [] });
const connectLocal = (clientId: string) => mqtt.connectAsync(`mqtt://127.0.0.1:${input.port}`, { reconnectPeriod: 0, clientId, protocolVersion: 4 });
const temps = () => appends.flat().filter((s) => s.dataType === 'timeseries').map((s) => (s.payload as Record<string, unknown>)['G.E.Temp']);

describe('local MQTT input: Sparkplug B edge nodes', () => {
  before(() => input.start());
  after(() => input.close());

  it('does not acknowledge a QoS 1 publish whose data the queue refused: the connection closes, and the edge node sends it again', async () => {
    const edge = await connectLocal('edge-refused');
    edge.on('error', () => undefined);
    refusing = true;
    const closed = new Promise<void>((r) => edge.once('close', () => r()));
    let acked = false;
    edge.publish('spBv1.0/Q/NBIRTH/E', Buffer.from(birth('Q')), { qos: 1 }, (err) => void (acked = !err));
    const wasClosed = await Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 3_000).unref())]);
    await edge.endAsync(true);
    assert.equal(acked, false, 'no PUBACK for data not stored');
    assert.equal(wasClosed, true, 'the connection closed');
    assert.equal(input.sparkplug?.stats.submitFailed, 2, 'its reading and birth event counted as not queued');

    refusing = false;
    const again = await connectLocal('edge-again');
    await again.publishAsync('spBv1.0/Q/NBIRTH/E', Buffer.from(birth('Q')), { qos: 1 });
    await again.endAsync();
    assert.ok(appends.flat().some((s) => (s.payload as Record<string, unknown>)['Q.E.Temp'] === 20), 'stored once the queue takes it');
  });

  it('stores the resend of a QoS 1 NDATA the queue refused: the refused message left the session as it was', async () => {
    appends.length = 0;
    const session = new SparkplugSession(client, () => undefined, createLogger('test', 'silent'));
    await session.onMessage('spBv1.0/G/NBIRTH/E', birth('G'), T0);
    refusing = true;
    // What the local MQTT input answers with no PUBACK and a closed connection.
    await assert.rejects(session.onMessage('spBv1.0/G/NDATA/E', data(1), T0 + 1));
    refusing = false;
    // The edge node's resend (same bytes, same seq): resolving is the PUBACK, so it must be stored.
    await session.onMessage('spBv1.0/G/NDATA/E', data(1), T0 + 2);
    assert.deepEqual(session.stats.refusedByCode, {});
    assert.deepEqual(temps(), [20, 21]);
    // And the session goes on from there.
    await session.onMessage('spBv1.0/G/NDATA/E', data(2), T0 + 3);
    assert.deepEqual(temps(), [20, 21, 22]);
  });

  it('does not acknowledge a message without data ahead of the earlier ones of its edge node still waiting for the queue', async () => {
    appends.length = 0;
    const session = new SparkplugSession(client, () => undefined, createLogger('test', 'silent'));
    await session.onMessage('spBv1.0/N/NBIRTH/E', birth('N'), T0);
    const nullData = (seq: number) => encodeWire({ timestamp: String(T0 + seq), seq: String(seq), metrics: [{ alias: '1', isNull: true }] });
    // The edge node publishes seq 1 (a reading), seq 2 (a null value: nothing to store) and seq 3
    // (a reading) at QoS 1, while the queue refuses the append of seq 1.
    delayMs = 30;
    refuseNext = 1;
    const acked = new Map<number, boolean>();
    const publish = (seq: number, bytes: Uint8Array) => session.onMessage('spBv1.0/N/NDATA/E', bytes, T0 + seq).then(() => acked.set(seq, true), () => acked.set(seq, false));
    await Promise.all([publish(1, data(1)), publish(2, nullData(2)), publish(3, data(3))]);
    delayMs = 0;
    // The local MQTT input closed the connection at the first refusal; the edge node sends again,
    // in order, every publish it got no PUBACK for.
    for (const seq of [1, 2, 3]) if (!acked.get(seq)) await session.onMessage('spBv1.0/N/NDATA/E', seq === 2 ? nullData(2) : data(seq), T0 + 10 + seq);
    const stored = appends.flat().filter((x) => x.dataType === 'timeseries').map((x) => (x.payload as Record<string, unknown>)['N.E.Temp']);
    assert.ok(stored.includes(21) && stored.includes(23), `seq 1 and seq 3 stored (acknowledged: ${JSON.stringify([...acked])}; stored ${JSON.stringify(stored)}; refused ${JSON.stringify(session.stats.refusedByCode)})`);
    assert.deepEqual(session.stats.refusedByCode, {});
  });

  it("does not publish the will of an edge node it hung up on: its NDEATH would end the session its resend belongs to", async () => {
    appends.length = 0;
    const will = { topic: 'spBv1.0/W/NDEATH/E', payload: Buffer.from(encodeWire({ metrics: [bdSeq] })), qos: 1 as const, retain: false };
    const edge = await mqtt.connectAsync(`mqtt://127.0.0.1:${input.port}`, { reconnectPeriod: 0, clientId: 'edge-will', protocolVersion: 4, will });
    edge.on('error', () => undefined);
    await edge.publishAsync('spBv1.0/W/NBIRTH/E', Buffer.from(birth('W')), { qos: 1 });
    // The queue refuses this one append and takes again by the time the broker would publish the will.
    refuseNext = 1;
    const closed = new Promise<void>((r) => edge.once('close', () => r()));
    edge.publish('spBv1.0/W/NDATA/E', Buffer.from(data(1)), { qos: 1 }, () => undefined);
    await closed;
    await edge.endAsync(true);
    await new Promise((r) => setTimeout(r, 300));
    const again = await connectLocal('edge-will-again');
    await again.publishAsync('spBv1.0/W/NDATA/E', Buffer.from(data(1)), { qos: 1 });
    await again.endAsync();
    const events = appends.flat().filter((s) => s.dataType === 'event').map((s) => (s.payload as { eventType?: string }).eventType);
    assert.ok(events.includes('sparkplug.nbirth') && !events.includes('sparkplug.ndeath'), `no death recorded: ${events.join(', ')}`);
    assert.equal(input.sparkplug?.stats.refusedByCode.SPARKPLUG_NOT_BORN, undefined, 'the resend was not refused as not born');
    assert.ok(appends.flat().some((s) => (s.payload as Record<string, unknown>)['W.E.Temp'] === 21), 'the resend stored');
  });

  // What Eclipse Paho (Python 2.1, clean session) does after the connection closed without a PUBACK:
  // on the new connection, on_connect publishes the NBIRTH of a new session (bdSeq one more), and
  // only then does the client send again, with DUP set, every QoS 1 publish it got no PUBACK for
  // (client.py, _handle_connack: on_connect, then _out_messages). mqtt.js sends them before its
  // 'connect' event (the test above), so they meet the old session; these meet the new one.
  const birthBd = (group: string, bd: number) =>
    encodeWire({ timestamp: String(T0 + bd), seq: '0', metrics: [{ ...bdSeq, longValue: String(bd) }, { name: 'Temp', alias: '1', datatype: DATA_TYPES.Double, doubleValue: 20 + bd / 10 }] });
  const valuesOf = (group: string) => appends.flat().filter((s) => s.dataType === 'timeseries').map((s) => (s.payload as Record<string, unknown>)[`${group}.E.Temp`]);

  it('stores what it acknowledges when the edge node sends again after the NBIRTH of its new session (Paho order): NDATA the queue refused', async () => {
    appends.length = 0;
    const refusedBefore = { ...input.sparkplug?.stats.refusedByCode };
    const edge = await connectLocal('edge-paho');
    edge.on('error', () => undefined);
    await edge.publishAsync('spBv1.0/P/NBIRTH/E', Buffer.from(birthBd('P', 0)), { qos: 1 });
    await edge.publishAsync('spBv1.0/P/NDATA/E', Buffer.from(data(1)), { qos: 1 });
    refuseNext = 1;
    const closed = new Promise<void>((r) => edge.once('close', () => r()));
    let acked = false;
    edge.publish('spBv1.0/P/NDATA/E', Buffer.from(data(2)), { qos: 1 }, (err) => void (acked = !err));
    await closed;
    await edge.endAsync(true);
    assert.equal(acked, false);
    const again = await connectLocal('edge-paho');
    await again.publishAsync('spBv1.0/P/NBIRTH/E', Buffer.from(birthBd('P', 1)), { qos: 1 });
    // Acknowledged: so it must be stored.
    await again.publishAsync('spBv1.0/P/NDATA/E', Buffer.from(data(2)), { qos: 1, dup: true });
    // The new session goes on undisturbed.
    await again.publishAsync('spBv1.0/P/NDATA/E', Buffer.from(data(1)), { qos: 1 });
    await again.endAsync();
    assert.deepEqual(valuesOf('P'), [20, 21, 20.1, 22, 21], 'the resent NDATA stored, and the new session after it');
    assert.deepEqual(input.sparkplug?.stats.refusedByCode, refusedBefore, 'nothing refused: no seq gap, nothing not born');
  });

  it('stores a resent NBIRTH the queue refused as its own session\'s, without replacing the newer one', async () => {
    appends.length = 0;
    const edge = await connectLocal('edge-paho-birth');
    edge.on('error', () => undefined);
    refuseNext = 1;
    const closed = new Promise<void>((r) => edge.once('close', () => r()));
    edge.publish('spBv1.0/B/NBIRTH/E', Buffer.from(birthBd('B', 0)), { qos: 1 }, () => undefined);
    await closed;
    await edge.endAsync(true);
    const again = await connectLocal('edge-paho-birth');
    await again.publishAsync('spBv1.0/B/NBIRTH/E', Buffer.from(birthBd('B', 1)), { qos: 1 });
    await again.publishAsync('spBv1.0/B/NBIRTH/E', Buffer.from(birthBd('B', 0)), { qos: 1, dup: true });
    await again.endAsync();
    assert.deepEqual(valuesOf('B').sort(), [20, 20.1], 'both births stored');
    assert.equal(input.sparkplug?.host.session('B', 'E')?.bdSeq, 1, 'the newer session stays in force');
  });

  // What 12f9f5e left open. The input hangs up on the refused publish; a publish the edge node sent
  // behind it is never read (still in the socket), and Paho sends it again, flagged DUP (MQTT 3.1.1
  // §3.3.1.1), after the new NBIRTH with the rest. Here the one never read is simply not sent on the
  // first connection: the input sees exactly that.
  it('stores a publish it never read, sent again (DUP) after the NBIRTH of the next connection, against the session it was sent in', async () => {
    appends.length = 0;
    const refusedBefore = { ...input.sparkplug?.stats.refusedByCode };
    const edge = await connectLocal('edge-unread');
    edge.on('error', () => undefined);
    await edge.publishAsync('spBv1.0/U/NBIRTH/E', Buffer.from(birthBd('U', 0)), { qos: 1 });
    refuseNext = 1;
    const closed = new Promise<void>((r) => edge.once('close', () => r()));
    edge.publish('spBv1.0/U/NDATA/E', Buffer.from(data(1)), { qos: 1 }, () => undefined);
    await closed;
    await edge.endAsync(true);
    const again = await connectLocal('edge-unread');
    await again.publishAsync('spBv1.0/U/NBIRTH/E', Buffer.from(birthBd('U', 1)), { qos: 1 });
    await again.publishAsync('spBv1.0/U/NDATA/E', Buffer.from(data(1)), { qos: 1, dup: true });
    // Never read on the first connection: acknowledged, so it must be stored.
    await again.publishAsync('spBv1.0/U/NDATA/E', Buffer.from(data(2)), { qos: 1, dup: true });
    await again.publishAsync('spBv1.0/U/NDATA/E', Buffer.from(data(3)), { qos: 1, dup: true });
    // The new session's own data, undisturbed.
    await again.publishAsync('spBv1.0/U/NDATA/E', Buffer.from(data(1)), { qos: 1 });
    await again.endAsync();
    assert.deepEqual(valuesOf('U'), [20, 20.1, 21, 22, 23, 21], 'the resends stored, and the new session after them');
    assert.deepEqual(input.sparkplug?.stats.refusedByCode, refusedBefore, 'no seq gap, nothing not born');
    assert.equal(input.sparkplug?.host.session('U', 'E')?.bdSeq, 1);
    assert.equal(input.sparkplug?.host.session('U', 'E')?.stale, false);
  });

  it('recognises a duplicate (DUP) of a message stored whose PUBACK was lost, after the new NBIRTH, without ending the new session', async () => {
    appends.length = 0;
    const refusedBefore = { ...input.sparkplug?.stats.refusedByCode };
    // The connection breaks (its will, the NDEATH, published) after NDATA 2 was stored, before its PUBACK arrived.
    const will = { topic: 'spBv1.0/L/NDEATH/E', payload: Buffer.from(encodeWire({ metrics: [bdSeq] })), qos: 1 as const, retain: false };
    const edge = await mqtt.connectAsync(`mqtt://127.0.0.1:${input.port}`, { reconnectPeriod: 0, clientId: 'edge-lost-puback', protocolVersion: 4, will });
    edge.on('error', () => undefined);
    await edge.publishAsync('spBv1.0/L/NBIRTH/E', Buffer.from(birthBd('L', 0)), { qos: 1 });
    await edge.publishAsync('spBv1.0/L/NDATA/E', Buffer.from(data(1)), { qos: 1 });
    await edge.publishAsync('spBv1.0/L/NDATA/E', Buffer.from(data(2)), { qos: 1 });
    const closed = new Promise<void>((r) => edge.once('close', () => r()));
    edge.stream.destroy();
    await closed;
    await edge.endAsync(true);
    await new Promise((r) => setTimeout(r, 200));
    const again = await connectLocal('edge-lost-puback');
    await again.publishAsync('spBv1.0/L/NBIRTH/E', Buffer.from(birthBd('L', 1)), { qos: 1 });
    await again.publishAsync('spBv1.0/L/NDATA/E', Buffer.from(data(2)), { qos: 1, dup: true });
    await again.publishAsync('spBv1.0/L/NDATA/E', Buffer.from(data(1)), { qos: 1 });
    await again.publishAsync('spBv1.0/L/NDATA/E', Buffer.from(data(2)), { qos: 1 });
    await again.endAsync();
    assert.deepEqual(valuesOf('L'), [20, 21, 22, 20.1, 21, 22], 'the new session\'s data stored; the duplicate not again');
    const refused = input.sparkplug?.stats.refusedByCode ?? {};
    assert.equal(refused.SPARKPLUG_NOT_BORN, refusedBefore.SPARKPLUG_NOT_BORN, 'nothing refused as not born');
    assert.equal(refused.SPARKPLUG_SEQ_GAP, refusedBefore.SPARKPLUG_SEQ_GAP, 'no seq gap');
    assert.equal(refused.SPARKPLUG_DUPLICATE, (refusedBefore.SPARKPLUG_DUPLICATE ?? 0) + 1, 'the duplicate counted');
  });

  // A client that sends again before its new NBIRTH, setting DUP as MQTT 3.1.1 §3.3.1.1 requires
  // (mqtt.js sends them first too, but without DUP): the resends meet the session they were sent in.
  it('recognises a duplicate (DUP) sent before the new NBIRTH and stores the unread publish behind it', async () => {
    appends.length = 0;
    const refusedBefore = { ...input.sparkplug?.stats.refusedByCode };
    const edge = await connectLocal('edge-dup-first');
    edge.on('error', () => undefined);
    await edge.publishAsync('spBv1.0/F/NBIRTH/E', Buffer.from(birthBd('F', 0)), { qos: 1 });
    await edge.publishAsync('spBv1.0/F/NDATA/E', Buffer.from(data(1)), { qos: 1 });
    const closed = new Promise<void>((r) => edge.once('close', () => r()));
    edge.stream.destroy();
    await closed;
    await edge.endAsync(true);
    const again = await connectLocal('edge-dup-first');
    await again.publishAsync('spBv1.0/F/NDATA/E', Buffer.from(data(1)), { qos: 1, dup: true });
    await again.publishAsync('spBv1.0/F/NDATA/E', Buffer.from(data(2)), { qos: 1, dup: true });
    await again.publishAsync('spBv1.0/F/NBIRTH/E', Buffer.from(birthBd('F', 1)), { qos: 1 });
    await again.publishAsync('spBv1.0/F/NDATA/E', Buffer.from(data(1)), { qos: 1 });
    await again.endAsync();
    assert.deepEqual(valuesOf('F'), [20, 21, 22, 20.1, 21]);
    const refused = input.sparkplug?.stats.refusedByCode ?? {};
    assert.equal(refused.SPARKPLUG_NOT_BORN, refusedBefore.SPARKPLUG_NOT_BORN, 'nothing refused as not born');
    assert.equal(refused.SPARKPLUG_SEQ_GAP, refusedBefore.SPARKPLUG_SEQ_GAP, 'no seq gap');
    assert.equal(refused.SPARKPLUG_DUPLICATE, (refusedBefore.SPARKPLUG_DUPLICATE ?? 0) + 1, 'the duplicate counted');
  });

  it('reads a DBIRTH sent again (DUP) after the new NBIRTH into the session it was sent in, and that device\'s data after it', async () => {
    appends.length = 0;
    const refusedBefore = { ...input.sparkplug?.stats.refusedByCode };
    const dbirth = (seq: number) => encodeWire({ timestamp: String(T0), seq: String(seq), metrics: [{ name: 'Flow', alias: '7', datatype: DATA_TYPES.Double, doubleValue: 5 }] });
    const ddata = (seq: number) => encodeWire({ timestamp: String(T0 + seq), seq: String(seq), metrics: [{ alias: '7', doubleValue: 5 + seq }] });
    const edge = await connectLocal('edge-dbirth');
    edge.on('error', () => undefined);
    await edge.publishAsync('spBv1.0/D/NBIRTH/E', Buffer.from(birthBd('D', 0)), { qos: 1 });
    refuseNext = 1;
    const closed = new Promise<void>((r) => edge.once('close', () => r()));
    edge.publish('spBv1.0/D/DBIRTH/E/Pump', Buffer.from(dbirth(1)), { qos: 1 }, () => undefined);
    await closed;
    await edge.endAsync(true);
    const again = await connectLocal('edge-dbirth');
    await again.publishAsync('spBv1.0/D/NBIRTH/E', Buffer.from(birthBd('D', 1)), { qos: 1 });
    await again.publishAsync('spBv1.0/D/DBIRTH/E/Pump', Buffer.from(dbirth(1)), { qos: 1, dup: true });
    await again.publishAsync('spBv1.0/D/DDATA/E/Pump', Buffer.from(ddata(2)), { qos: 1, dup: true });
    await again.publishAsync('spBv1.0/D/NDATA/E', Buffer.from(data(1)), { qos: 1 });
    await again.endAsync();
    const flows = appends.flat().filter((s) => s.dataType === 'timeseries').map((s) => (s.payload as Record<string, unknown>)['D.E.Pump.Flow']).filter((v) => v !== undefined);
    assert.deepEqual(flows, [5, 7], 'the device\'s birth and data of the old session stored');
    assert.deepEqual(input.sparkplug?.stats.refusedByCode, refusedBefore, 'nothing refused');
    assert.equal(input.sparkplug?.host.session('D', 'E')?.devices.has('Pump'), false, 'the device is not born in the new session');
    // Born in a session over already, it died with it: it does not stay online.
    const pump = appends.flat().filter((s) => s.dataType === 'event').map((s) => s.payload as { eventType?: string; sp_device?: string }).filter((e) => e.sp_device === 'Pump');
    assert.deepEqual(pump.map((e) => e.eventType), ['sparkplug.dbirth', 'sparkplug.ddeath']);
  });

  // What mqtt.js itself does (no publish forged here): a PUBACK lost with the link, the client sends
  // again every QoS 1 publish it got no PUBACK for on its next connection, before its 'connect' event
  // (so before the edge node's new NBIRTH), from its outgoing store as first sent: DUP clear. The
  // link's loss has the broker publish the edge node's will, its NDEATH, first.
  for (const will of [true, false]) {
    it(`recognises a duplicate mqtt.js sends again without DUP after a lost PUBACK and stores the unread publish behind it (${will ? 'its will ended the session' : 'no will'})`, async () => {
      appends.length = 0;
      const group = will ? 'MW' : 'MN';
      const refusedBefore = { ...input.sparkplug?.stats.refusedByCode };
      const proxy = await lossyProxy(input.port as number);
      const edge = mqtt.connect(proxy.url, {
        clientId: `edge-mqttjs-${group}`,
        protocolVersion: 4,
        reconnectPeriod: 100,
        ...(will ? { will: { topic: `spBv1.0/${group}/NDEATH/E`, payload: Buffer.from(encodeWire({ metrics: [bdSeq] })), qos: 1 as const, retain: false } } : {}),
      });
      edge.on('error', () => undefined);
      try {
        await new Promise<void>((r) => edge.once('connect', () => r()));
        await edge.publishAsync(`spBv1.0/${group}/NBIRTH/E`, Buffer.from(birthBd(group, 0)), { qos: 1 });
        await edge.publishAsync(`spBv1.0/${group}/NDATA/E`, Buffer.from(data(1)), { qos: 1 });
        proxy.loseReplies();
        // Taken and stored; its PUBACK lost.
        const second = edge.publishAsync(`spBv1.0/${group}/NDATA/E`, Buffer.from(data(2)), { qos: 1 });
        for (let i = 0; i < 100 && !valuesOf(group).includes(22); i++) await new Promise((r) => setTimeout(r, 20));
        assert.deepEqual(valuesOf(group), [20, 21, 22]);
        // Never arrives: the link is gone.
        proxy.loseRequests();
        const third = edge.publishAsync(`spBv1.0/${group}/NDATA/E`, Buffer.from(data(3)), { qos: 1 });
        await new Promise((r) => setTimeout(r, 50));
        // The edge node's new session, once mqtt.js has sent again what it had not had acknowledged.
        const reborn = new Promise<void>((r) => edge.once('connect', () => void edge.publishAsync(`spBv1.0/${group}/NBIRTH/E`, Buffer.from(birthBd(group, 1)), { qos: 1 }).then(() => r())));
        proxy.cut();
        await Promise.all([second, third, reborn]);
        assert.deepEqual(valuesOf(group), [20, 21, 22, 23, 20.1], 'the duplicate not stored again, the unread publish stored, then the new session');
        const refused = input.sparkplug?.stats.refusedByCode ?? {};
        assert.equal(refused.SPARKPLUG_DUPLICATE, (refusedBefore.SPARKPLUG_DUPLICATE ?? 0) + 1, 'the duplicate counted');
        assert.equal(refused.SPARKPLUG_SEQ_GAP, refusedBefore.SPARKPLUG_SEQ_GAP, 'no seq gap');
        assert.equal(refused.SPARKPLUG_NOT_BORN, refusedBefore.SPARKPLUG_NOT_BORN, 'nothing refused as not born');
      } finally {
        await edge.endAsync(true);
        await proxy.close();
      }
    });
  }

  it('does not acknowledge a duplicate (DUP) of a message whose append then fails, though a later append of its edge node succeeds', async () => {
    appends.length = 0;
    const session = new SparkplugSession(client, () => undefined, createLogger('test', 'silent'), [], { resends: true });
    const [A, B] = [{}, {}];
    await session.onMessage('spBv1.0/R/NBIRTH/E', birthBd('R', 0), T0, { connection: A, dup: false });
    // NDATA 1 read on the first connection, its append on its way (and about to fail); the connection
    // breaks, the edge node comes back: its new NBIRTH, then NDATA 1 again, flagged DUP.
    delayMs = 30;
    refuseNext = 1;
    const first = session.onMessage('spBv1.0/R/NDATA/E', data(1), T0 + 1, { connection: A, dup: false });
    await new Promise((r) => setImmediate(r));
    const birth = session.onMessage('spBv1.0/R/NBIRTH/E', birthBd('R', 1), T0 + 2, { connection: B, dup: false });
    const again = session.onMessage('spBv1.0/R/NDATA/E', data(1), T0 + 3, { connection: B, dup: true });
    const outcome = (p: Promise<void>) => p.then(() => 'acknowledged', () => 'not acknowledged');
    const results = await Promise.all([outcome(first), outcome(birth), outcome(again)]);
    delayMs = 0;
    assert.equal(results[0], 'not acknowledged');
    assert.equal(results[2], 'not acknowledged', 'the DUP repeated data that is not stored: it must be sent again');
  });

  it('keeps nothing a sensor publishes as retained, under spBv1.0/ or its own topics', async () => {
    const sensor = await connectLocal('retainer');
    await sensor.publishAsync('spBv1.0/junk/x/1', Buffer.alloc(64 * 1024, 1), { qos: 1, retain: true });
    await sensor.publishAsync(`${PREFIX}/timeseries`, JSON.stringify({ t: 1 }), { qos: 1, retain: true });
    await sensor.endAsync();
    const reader = await connectLocal('reader');
    const got: string[] = [];
    reader.on('message', (topic) => got.push(topic));
    await reader.subscribeAsync('#', { qos: 1 });
    await new Promise((r) => setTimeout(r, 300));
    await reader.endAsync();
    assert.deepEqual(got, []);
  });

  it('puts what arrives while an append is on its way into the next append, in the order it came', async () => {
    appends.length = 0;
    delayMs = 30;
    const edge = await connectLocal('edge-fast');
    await edge.publishAsync('spBv1.0/G/NBIRTH/E', Buffer.from(birth('G')), { qos: 1 });
    await Promise.all(Array.from({ length: 40 }, (_, i) => edge.publishAsync('spBv1.0/G/NDATA/E', Buffer.from(data(i + 1)), { qos: 1 })));
    await edge.endAsync();
    delayMs = 0;
    assert.deepEqual(temps(), Array.from({ length: 41 }, (_, i) => 20 + i), 'every reading, in order');
    assert.ok(appends.length < 20, `${appends.length} appends for 41 messages: those waiting went together`);
  });
});

describe('local MQTT input: the primary host application (FIELD_SPARKPLUG_HOST_ID)', () => {
  const hosted = mqttInput(client, '127.0.0.1', 0, PREFIX, createLogger('test', 'silent'), undefined, { groups: [], hostId: 'plant-host' });
  const connect = (clientId: string) => mqtt.connectAsync(`mqtt://127.0.0.1:${hosted.port}`, { reconnectPeriod: 0, clientId, protocolVersion: 4 });
  /** The STATE messages an edge node subscribed to its primary host's gets, with their retain flag. */
  const stateOf = async (edge: mqtt.MqttClient, got: Array<{ online: boolean; timestamp: number; retain: boolean }>) => {
    edge.on('message', (_topic, payload, packet) => got.push({ ...(JSON.parse(payload.toString()) as { online: boolean; timestamp: number }), retain: packet.retain }));
    await edge.subscribeAsync('spBv1.0/STATE/plant-host', { qos: 1 });
  };
  before(() => hosted.start());

  it('is online, retained, for an edge node that waits for it before its birth; a local program cannot say otherwise; offline at a clean stop, with the same timestamp', async () => {
    const edge = await connect('edge-waits');
    const got: Array<{ online: boolean; timestamp: number; retain: boolean }> = [];
    await stateOf(edge, got);
    // The retained STATE comes after the SUBACK: waited for, then a while for any other.
    await eventually(() => (got.length >= 1 ? true : undefined), 10_000, 'the retained STATE');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(got.length, 1, JSON.stringify(got));
    assert.equal(got[0]!.online, true);
    assert.equal(got[0]!.retain, true, 'the retained STATE, there before the edge node came');
    assert.ok(got[0]!.timestamp <= Date.now() && got[0]!.timestamp > Date.now() - 60_000);

    // A local program publishing our STATE offline is hung up on; the edge node hears nothing of it.
    const rogue = await connect('rogue');
    rogue.on('error', () => undefined);
    const closed = new Promise<void>((r) => rogue.once('close', () => r()));
    rogue.publish('spBv1.0/STATE/plant-host', JSON.stringify({ online: false, timestamp: Date.now() }), { qos: 1, retain: true });
    await closed;
    await rogue.endAsync(true);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(got.length, 1, `nothing more heard: ${JSON.stringify(got)}`);

    await hosted.close();
    assert.deepEqual(got[1], { online: false, timestamp: got[0]!.timestamp, retain: false }, 'offline, with the timestamp of the birth, before the broker went');
    await edge.endAsync(true);
  });
});

describe('local MQTT input: Sparkplug B of a group not followed', () => {
  // FIELD_SPARKPLUG_GROUPS names the groups followed; an edge node of another group may still publish
  // on the local broker. Its messages were acknowledged and dropped with no count and no log line:
  // a misconfigured edge node's data vanished, nothing telling anyone.
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger('test', 'info', { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  const followed = mqttInput(client, '127.0.0.1', 0, PREFIX, log, undefined, { groups: ['Plant1'] });
  before(() => followed.start());
  after(() => followed.close());

  it('is acknowledged (nothing to send again) but refused, counted and logged as SPARKPLUG_GROUP_NOT_FOLLOWED', async () => {
    const edge = await mqtt.connectAsync(`mqtt://127.0.0.1:${followed.port}`, { reconnectPeriod: 0, clientId: 'edge-other-group', protocolVersion: 4 });
    await edge.publishAsync('spBv1.0/Plant2/NBIRTH/E', Buffer.from(birth('Plant2')), { qos: 1 });
    await edge.publishAsync('spBv1.0/Plant2/NDATA/E', Buffer.from(data(1)), { qos: 1 });
    // A command to an edge node of another group is none of the host's business, as in a group followed.
    await edge.publishAsync('spBv1.0/Plant2/NCMD/E', Buffer.from(data(2)), { qos: 1 });
    await edge.endAsync();
    const stats = followed.sparkplug?.stats;
    assert.equal(stats?.refusedByCode.SPARKPLUG_GROUP_NOT_FOLLOWED, 2);
    assert.equal(stats?.messages, 2);
    assert.ok(lines.some((l) => l.code === 'SPARKPLUG_GROUP_NOT_FOLLOWED' && String(l.msg).includes('Plant2')), JSON.stringify(lines));
  });
});
