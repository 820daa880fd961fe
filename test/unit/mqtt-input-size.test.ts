import assert from 'node:assert/strict';
import { connect as tcpConnect } from 'node:net';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import mqtt, { Store, type IClientOptions } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { mqttInput } from '../../field-client/src/inputs/mqtt-input.ts';
import { publishDigest, TakenPublishes } from '../../field-client/src/inputs/mqtt-resends.ts';
import type { Submission } from '../../field-client/src/client-options.ts';
import type { FieldClient } from '../../field-client/src/field-client.ts';
import type { HealthReporter } from '../../field-client/src/health.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { lossyProxy } from '../helpers/lossy-proxy.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * The local MQTT input refuses a packet longer than LIMITS.localMqttMaxPacketBytes as soon as its
 * length is read (never buffering it), logs FIELD_INPUT_INVALID, closes that connection, and goes
 * on serving the others.
 */
const PREFIX = 'fieldstream/local';
const OVER = LIMITS.localMqttMaxPacketBytes + 2 * 1024 * 1024;
const lines: Array<Record<string, unknown>> = [];
const log = createLogger('test', 'info', { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
const submitted: Submission[] = [];
const client = { submitMany: async (items: Submission[]) => void submitted.push(...items) } as unknown as FieldClient;
const input = mqttInput(client, '127.0.0.1', 0, PREFIX, log);
const refused = () => lines.filter((l) => l.code === 'FIELD_INPUT_INVALID' && l.topic === `${PREFIX}/health`);
const refusals = () => lines.filter((l) => l.code === 'FIELD_INPUT_INVALID' && /larger than/.test(String(l.msg)));

describe('local MQTT input: packet size', () => {
  before(() => input.start());
  after(() => input.close());

  it('the limit covers the largest payload an input takes', () => {
    assert.ok(LIMITS.localMqttMaxPacketBytes > Math.max(LIMITS.localInputJsonMaxBytes, LIMITS.sparkplugPayloadMaxBytes));
  });

  it('closes the connection once an oversized PUBLISH announces its length, before its payload has come', async () => {
    const socket = tcpConnect(input.port as number, '127.0.0.1');
    await once(socket, 'connect');
    socket.on('error', () => undefined);
    socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'raw', clean: true, keepalive: 0 }));
    const publish = mqttPacket.generate({ cmd: 'publish', topic: `${PREFIX}/timeseries`, payload: Buffer.alloc(OVER, 0x20), qos: 0, retain: false, dup: false });
    socket.write(publish.subarray(0, 64 * 1024)); // the header and a little of the payload; the rest never sent
    const closed = new Promise<boolean>((r) => socket.once('close', () => r(true)));
    const timeout = new Promise<boolean>((r) => setTimeout(() => r(false), 1_500).unref());
    const wasClosed = await Promise.race([closed, timeout]);
    socket.destroy();
    assert.equal(wasClosed, true, 'the broker closed the connection without waiting for the payload');
    assert.ok(refusals().length >= 1, 'FIELD_INPUT_INVALID logged');
  });

  it('refuses a real client publishing a few MiB over the limit, and still serves a normal publish', async () => {
    const before = refusals().length;
    const big = await mqtt.connectAsync(`mqtt://127.0.0.1:${input.port}`, { reconnectPeriod: 0, clientId: 'big' });
    big.on('error', () => undefined);
    const closed = new Promise<void>((r) => big.once('close', () => r()));
    big.publish(`${PREFIX}/timeseries`, Buffer.alloc(OVER, 0x20), { qos: 1 }, () => undefined);
    await closed;
    await big.endAsync(true);
    assert.equal(refusals().length, before + 1);
    assert.equal(submitted.length, 0);

    const ok = await mqtt.connectAsync(`mqtt://127.0.0.1:${input.port}`, { reconnectPeriod: 0, clientId: 'ok' });
    await ok.publishAsync(`${PREFIX}/timeseries`, JSON.stringify({ temperature: 21.5 }), { qos: 1 });
    await ok.endAsync();
    assert.equal(submitted.length, 1);
  });
});

describe('local MQTT input: nothing kept for a subscriber that is away', () => {
  before(() => input.start());
  after(() => input.close());
  const url = () => `mqtt://127.0.0.1:${input.port}`;

  it('refuses a persistent session (clean session 0), which would have the broker hold every reading for it while it is away', async () => {
    const persistent = await mqtt.connectAsync(url(), { clientId: 'listener', clean: false, reconnectPeriod: 0, protocolVersion: 4 }).then(
      (c) => (void c.end(true), 'connected'),
      (err: Error) => err.message,
    );
    assert.match(persistent, /not authorized/i);
    assert.ok(lines.some((l) => l.code === 'FIELD_INPUT_INVALID' && /persistent/.test(String(l.msg))), 'logged');
    // Readings published meanwhile are stored, and none waits in the broker for the listener.
    const from = submitted.length;
    const sensor = await mqtt.connectAsync(url(), { clientId: 'sensor', reconnectPeriod: 0, protocolVersion: 4 });
    for (let i = 0; i < 200; i++) await sensor.publishAsync(`${PREFIX}/timeseries`, JSON.stringify({ t: i }), { qos: 1 });
    await sensor.endAsync();
    assert.equal(submitted.length - from, 200);
  });

  it('still delivers to a clean session what is published while it is connected (a command handler of type mqtt)', async () => {
    const listener = await mqtt.connectAsync(url(), { clientId: 'amplifier', reconnectPeriod: 0, protocolVersion: 4 });
    const got: string[] = [];
    listener.on('message', (_topic, payload) => got.push(payload.toString()));
    await listener.subscribeAsync('local/amplifier/gain', { qos: 1 });
    await input.publish('local/amplifier/gain', '{"gain":3}');
    await eventually(() => (got.length >= 1 ? true : undefined), 10_000, 'the publish at the listener');
    await new Promise((r) => setTimeout(r, 200));
    await listener.endAsync();
    assert.deepEqual(got, ['{"gain":3}']);
  });
});

/**
 * mqtt.js's outgoing store, flagging DUP on what it sends again, as MQTT 3.1.1 §3.3.1.1 asks
 * (MQTT-3.3.1-1) and as Eclipse Paho does: mqtt.js itself sends its stored packets as first sent.
 * The first send is the packet itself; the store keeps a copy of it (mqtt.js `_storeAndSend`).
 */
class DupFlaggingStore extends Store {
  override put(packet: Parameters<Store['put']>[0], cb: Parameters<Store['put']>[1]): this {
    return super.put({ ...packet, dup: true } as typeof packet, cb);
  }
}

describe('local MQTT input: a publish sent again (DUP)', () => {
  before(() => input.start());
  after(() => input.close());

  it('takes a reading sent again with DUP and its packet identifier, after its PUBACK was lost, once; one whose first copy never arrived is taken', async () => {
    const proxy = await lossyProxy(input.port as number);
    const sent: Array<{ messageId?: number; dup?: boolean }> = [];
    const sensor = mqtt.connect(proxy.url, { clientId: 'sensor-dup', protocolVersion: 4, reconnectPeriod: 100, outgoingStore: new DupFlaggingStore() } as IClientOptions);
    sensor.on('error', () => undefined);
    sensor.on('packetsend', (p) => void (p.cmd === 'publish' && sent.push({ messageId: p.messageId, dup: p.dup })));
    const readings = () => submitted.filter((s) => 'wind' in (s.payload as object)).map((s) => s.payload as Record<string, unknown>);
    try {
      await new Promise<void>((r) => sensor.once('connect', () => r()));
      await sensor.publishAsync(`${PREFIX}/timeseries`, JSON.stringify({ wind: 1 }), { qos: 1 });
      // Taken and queued; its PUBACK lost with the link.
      proxy.loseReplies();
      const second = sensor.publishAsync(`${PREFIX}/timeseries`, JSON.stringify({ wind: 2 }), { qos: 1 });
      await eventually(() => (readings().length === 2 ? true : undefined), 5_000, 'the second reading taken');
      // Never arrives.
      proxy.loseRequests();
      const third = sensor.publishAsync(`${PREFIX}/timeseries`, JSON.stringify({ wind: 3 }), { qos: 1 });
      await new Promise((r) => setTimeout(r, 50));
      proxy.cut();
      await Promise.all([second, third]);
      const resent = sent.slice(3);
      assert.deepEqual(resent, [{ messageId: sent[1]?.messageId, dup: true }, { messageId: sent[2]?.messageId, dup: true }], 'both sent again, flagged DUP, with their packet identifiers');
      assert.deepEqual(readings().map((r) => r.wind), [1, 2, 3], 'the reading whose PUBACK was lost is not a second reading; the one never taken is taken');
    } finally {
      await sensor.endAsync(true);
      await proxy.close();
    }
  });

  it('forgets a publish whose append failed (its copy sent again is taken), and keeps at most LIMITS.localMqttTakenPublishesMax', async () => {
    const taken = new TakenPublishes();
    const d = publishDigest('t', Buffer.from('{"a":1}'));
    taken.remember('c', 1, d, Promise.resolve(false));
    assert.equal(await taken.earlier('c', 1, true, d), false);
    assert.equal(taken.earlier('c', 1, true, d), undefined, 'forgotten once its append failed');
    taken.remember('c', 1, d, Promise.resolve(true));
    assert.equal(await taken.earlier('c', 1, true, d), true);
    assert.equal(taken.earlier('c', 1, false, d), undefined, 'not flagged DUP: a new publish');
    assert.equal(taken.earlier('other', 1, true, d), undefined, 'another client');
    for (let i = 0; i < LIMITS.localMqttTakenPublishesMax + 10; i++) taken.remember('many', i, d, Promise.resolve(true));
    assert.equal(taken.size, LIMITS.localMqttTakenPublishesMax);
    assert.equal(taken.earlier('c', 1, true, d), undefined, 'the oldest forgotten first');
  });

  it('tells a copy not flagged DUP by its connection only while the first is appended, and then holds that connection no more', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const taken = new TakenPublishes();
    const d = publishDigest('t', Buffer.from('{"a":1}'));
    let queued!: (ok: boolean) => void;
    // Made and looked at in a function of its own: an async function's frame may keep what it held.
    const publishOn = (): WeakRef<object> => {
      const connection = { id: 'a connection' };
      taken.remember('c', 1, d, new Promise<boolean>((resolve) => (queued = resolve)), connection);
      assert.ok(taken.earlier('c', 1, false, d, connection) instanceof Promise, 'being appended: a copy on its connection is the same publish');
      assert.equal(taken.earlier('c', 1, false, d, {}), undefined, 'on another connection, not flagged DUP: a new publish');
      assert.ok(taken.earlier('c', 1, false, d, {}, true) instanceof Promise, 'its identifier in use (a QoS 2 publish not released): the same publish');
      return new WeakRef(connection);
    };
    const gone = publishOn();
    queued(true);
    await new Promise((r) => setImmediate(r));
    assert.equal(taken.earlier('c', 1, false, d, {}), undefined, 'acknowledged: the identifier is free again');
    assert.equal(taken.earlier('c', 1, true, d, {}), true);
    // Not deref'd before a collection in the same turn: that keeps the target alive through it.
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(gone.deref(), undefined, 'the connection of a publish queued is not held');
  });

  it('takes a publish flagged DUP that reuses a packet identifier with other bytes (the identifier was free again: MQTT 3.1.1 §2.3.1)', async () => {
    const ids = { n: 7 };
    const provider = { allocate: () => ids.n, getLastAllocated: () => ids.n, register: () => true, deallocate: () => undefined, clear: () => undefined };
    const sensor = await mqtt.connectAsync(`mqtt://127.0.0.1:${input.port}`, { clientId: 'sensor-reuse', protocolVersion: 4, reconnectPeriod: 0, messageIdProvider: provider } as IClientOptions);
    const readings = () => submitted.filter((s) => 'gust' in (s.payload as object)).map((s) => (s.payload as Record<string, unknown>).gust);
    try {
      await sensor.publishAsync(`${PREFIX}/timeseries`, JSON.stringify({ gust: 1 }), { qos: 1 });
      await sensor.publishAsync(`${PREFIX}/timeseries`, JSON.stringify({ gust: 2 }), { qos: 1, dup: true });
      await sensor.publishAsync(`${PREFIX}/timeseries`, JSON.stringify({ gust: 2 }), { qos: 1, dup: true });
      await sensor.publishAsync(`${PREFIX}/timeseries`, JSON.stringify({ gust: 2 }), { qos: 1 });
      assert.deepEqual(readings(), [1, 2, 2], 'other bytes are another reading; the same bytes flagged DUP are the one taken; a publish not flagged DUP is a new one');
    } finally {
      await sensor.endAsync();
    }
  });
});

describe('local MQTT input: health values bounded as over HTTP', () => {
  const taken: unknown[] = [];
  const health = { setLocal: (u: unknown) => (taken.push(u), {}), status: () => ({}) } as unknown as HealthReporter;
  const withHealth = mqttInput(client, '127.0.0.1', 0, PREFIX, log, health);
  before(() => withHealth.start());
  after(() => withHealth.close());

  it('refuses a health payload larger than LIMITS.healthLocalBodyMaxBytes before parsing it, as PUT /v1/health does', async () => {
    const sensor = await mqtt.connectAsync(`mqtt://127.0.0.1:${withHealth.port}`, { reconnectPeriod: 0, clientId: 'battery' });
    await sensor.publishAsync(`${PREFIX}/health`, JSON.stringify({ battery: 87 }), { qos: 1 });
    await sensor.endAsync();
    assert.deepEqual(taken, [{ battery: 87 }]);
    // Valid, but past the documented 32 KiB (padding): refused, as the HTTP input refuses it.
    const padded = `{"battery": 86${' '.repeat(LIMITS.healthLocalBodyMaxBytes)}}`;
    // 7 MiB of values of the wrong type: parsed and checked, it held the event loop for seconds.
    const hostile = `{${Array.from({ length: 600_000 }, (_, i) => `"k${i}":[1]`).join(',')}}`;
    for (const payload of [padded, hostile]) {
      const before = refused().length;
      const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${withHealth.port}`, { reconnectPeriod: 0, clientId: 'battery-bad' });
      c.on('error', () => undefined);
      const closed = new Promise<void>((r) => c.once('close', () => r()));
      const lag = watchEventLoop();
      c.publish(`${PREFIX}/health`, payload, { qos: 1 }, () => undefined);
      const wasClosed = await Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000).unref())]);
      const held = lag.stop();
      await c.endAsync(true);
      assert.equal(wasClosed, true, `the connection closed (${payload.length} bytes)`);
      assert.equal(refused().length, before + 1, 'FIELD_INPUT_INVALID logged');
      assert.ok(held < 1_000, `the event loop was held ${held} ms`);
    }
    assert.deepEqual(taken, [{ battery: 87 }], 'nothing of them taken');
  });

  it('refuses an event of more keys than a reading may have fields at once, not after checking each (HTTP /v1/events takes the same path)', async () => {
    // 8 MiB of keys whose values are not scalars: each checked, it held the event loop for 4 s.
    // (null, not [1]: as many arrays are refused before the parse, as no readings hold them.)
    const hostile = `{"eventType":"door",${Array.from({ length: 560_000 }, (_, i) => `"k${i}":null`).join(',')}}`;
    const from = submitted.length;
    const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${withHealth.port}`, { reconnectPeriod: 0, clientId: 'door' });
    c.on('error', () => undefined);
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    // JSON.parse of these 8 MiB remains (some 300 ms, more on a busy machine): what the checks
    // after it add is what is bounded, against the parse timed here, on the machine as it is now.
    const parseMs = timed(() => JSON.parse(hostile));
    const lag = watchEventLoop();
    c.publish(`${PREFIX}/event`, hostile, { qos: 1 }, () => undefined);
    await closed;
    const held = lag.stop();
    await c.endAsync(true);
    assert.ok(lines.some((l) => l.code === 'FIELD_INPUT_INVALID' && /more than 256 fields/.test(String(l.msg))), 'refused with FIELD_INPUT_INVALID, saying why');
    assert.equal(submitted.length, from);
    // Checked key by key it was 4 s, some 13 times the parse.
    assert.ok(held < 4 * parseMs + 250, `the event loop was held ${held} ms, where the parse alone took ${parseMs} ms`);
  });
});

describe('local MQTT input: a subscriber that stops reading', () => {
  before(() => input.start());
  after(() => input.close());

  it('is cut off once more than LIMITS.localMqttSubscriberBacklogMaxBytes wait to be written to it, rather than every reading published held for it in memory; the publishers go on', async () => {
    const subscriber = tcpConnect(input.port as number, '127.0.0.1');
    await once(subscriber, 'connect');
    subscriber.on('error', () => undefined);
    const gone = new Promise<void>((r) => subscriber.once('close', () => r()));
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    const suback = new Promise<void>((r) => parser.on('packet', (p) => void (p.cmd === 'suback' && r())));
    subscriber.on('data', (d: Buffer) => parser.parse(d));
    subscriber.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'stops-reading', clean: true, keepalive: 0 }));
    subscriber.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `${PREFIX}/#`, qos: 1 }] }));
    await suback;
    subscriber.pause();
    const from = submitted.length;
    const sensor = await mqtt.connectAsync(`mqtt://127.0.0.1:${input.port}`, { reconnectPeriod: 0, clientId: 'fast-sensor' });
    // 1 MiB of readings a message, 300 of them: what a paused subscriber was made to hold.
    const payload = JSON.stringify(Array.from({ length: 16 }, (_, i) => ({ temperature: i, note: 'x'.repeat(64 * 1024) })));
    let peak = 0;
    const watch = setInterval(() => (peak = Math.max(peak, process.memoryUsage().arrayBuffers)), 20);
    const base = process.memoryUsage().arrayBuffers;
    for (let i = 0; i < 300; i++) await sensor.publishAsync(`${PREFIX}/timeseries`, payload, { qos: 1 });
    clearInterval(watch);
    await sensor.endAsync();
    // Read again, it finds its connection closed (a paused socket does not see the end before).
    subscriber.resume();
    const closed = await Promise.race([gone.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5_000))]);
    subscriber.destroy();
    assert.equal(submitted.length - from, 300 * 16, 'every reading taken');
    assert.equal(closed, true, 'the subscriber that stopped reading is still connected');
    assert.ok(lines.some((l) => l.code === 'FIELD_INPUT_BUSY' && l.clientId === 'stops-reading'), 'logged');
    assert.ok(peak - base < LIMITS.localMqttSubscriberBacklogMaxBytes + 96 * 2 ** 20, `${Math.round((peak - base) / 2 ** 20)} MiB held at most`);
  });
});

describe('local MQTT input: JSON nested or holding more containers than any readings', () => {
  before(() => input.start());
  after(() => input.close());

  it('is refused before it is parsed: 8 MiB of nested arrays held the event loop for seconds, where legal readings of that size take a fraction', async () => {
    const depth = Math.floor((LIMITS.localInputJsonMaxBytes - 64) / 2);
    const hostile = `{"eventType":"door","data":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    // The legal readings of about that size, parsed and checked: what a payload may cost.
    const legal = JSON.stringify(Array.from({ length: LIMITS.localInputMaxItems }, (_, i) => ({ temperature: i, note: 'x'.repeat(800) })));
    const legalMs = timed(() => JSON.parse(legal));
    const from = submitted.length;
    const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${input.port}`, { reconnectPeriod: 0, clientId: 'nested' });
    c.on('error', () => undefined);
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    const lag = watchEventLoop();
    c.publish(`${PREFIX}/event`, hostile, { qos: 1 }, () => undefined);
    await closed;
    const held = lag.stop();
    await c.endAsync(true);
    assert.ok(lines.some((l) => l.code === 'FIELD_INPUT_INVALID' && /objects and arrays/.test(String(l.msg))), 'refused with FIELD_INPUT_INVALID, saying why');
    assert.equal(submitted.length, from);
    assert.ok(held < 3 * legalMs + 250, `the event loop was held ${held} ms, where legal readings of that size parse in ${legalMs} ms`);
    // Legal readings of that size are taken as before.
    const ok = await mqtt.connectAsync(`mqtt://127.0.0.1:${input.port}`, { reconnectPeriod: 0, clientId: 'legal' });
    await ok.publishAsync(`${PREFIX}/timeseries`, legal, { qos: 1 });
    await ok.endAsync();
    assert.equal(submitted.length, from + LIMITS.localInputMaxItems);
  });
});

describe('local MQTT input: QoS 2 publishes awaiting their PUBREL', () => {
  before(() => input.start());
  after(() => input.close());

  it('hold none of their payloads: a program that never sends PUBREL holds at most a few hundred bytes per packet identifier, not its message', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const socket = tcpConnect(input.port as number, '127.0.0.1');
    await once(socket, 'connect');
    socket.on('error', () => undefined);
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    let pubrecs = 0;
    let pubcomps = 0;
    parser.on('packet', (p) => void (p.cmd === 'pubrec' && pubrecs++, p.cmd === 'pubcomp' && pubcomps++));
    socket.on('data', (d: Buffer) => parser.parse(d));
    socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'never-releases', clean: true, keepalive: 0 }));
    // 2 MiB of valid readings each, queued (the stub takes them) and so answered PUBREC: MQTT 3.1.1 §4.3.3.
    const payload = Buffer.from(JSON.stringify(Array.from({ length: 1000 }, (_, i) => ({ temperature: i, note: 'x'.repeat(2000) }))));
    const MESSAGES = 100;
    gc();
    const before = process.memoryUsage().arrayBuffers;
    for (let id = 1; id <= MESSAGES; id++) {
      if (!socket.write(mqttPacket.generate({ cmd: 'publish', topic: `${PREFIX}/timeseries`, payload, qos: 2, messageId: id, retain: false, dup: false }))) await once(socket, 'drain');
    }
    await eventually(() => (pubrecs >= MESSAGES ? true : undefined), 60_000, `${MESSAGES} PUBRECs`);
    gc();
    const held = process.memoryUsage().arrayBuffers - before;
    assert.ok(held < 20 * payload.length, `${Math.round(held / 2 ** 20)} MiB held for ${MESSAGES} messages of ${Math.round(payload.length / 2 ** 20)} MiB awaiting their PUBREL`);
    // The protocol as before: a copy sent again before its PUBREL is answered PUBREC and not taken
    // again; each PUBREL is answered PUBCOMP; a real client's QoS 2 publish completes.
    const taken = submitted.length;
    socket.write(mqttPacket.generate({ cmd: 'publish', topic: `${PREFIX}/timeseries`, payload, qos: 2, messageId: 1, retain: false, dup: true }));
    await eventually(() => (pubrecs >= MESSAGES + 1 ? true : undefined), 10_000, 'the PUBREC of the copy');
    for (let id = 1; id <= MESSAGES; id++) socket.write(mqttPacket.generate({ cmd: 'pubrel', messageId: id }));
    await eventually(() => (pubcomps >= MESSAGES ? true : undefined), 10_000, `${MESSAGES} PUBCOMPs`);
    assert.equal(submitted.length, taken);
    socket.destroy();
    const real = await mqtt.connectAsync(`mqtt://127.0.0.1:${input.port}`, { reconnectPeriod: 0, clientId: 'qos2' });
    await real.publishAsync(`${PREFIX}/timeseries`, JSON.stringify({ temperature: 20 }), { qos: 2 });
    await real.endAsync();
    assert.equal(submitted.length, taken + 1);
  });

  it('takes a copy sent again before its PUBREL once, flagged DUP or not: its packet identifier is still in use (MQTT 3.1.1 §4.3.3, MQTT-4.3.3-2)', async () => {
    const socket = tcpConnect(input.port as number, '127.0.0.1');
    await once(socket, 'connect');
    socket.on('error', () => undefined);
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    const got: string[] = [];
    parser.on('packet', (p) => void got.push(p.cmd));
    socket.on('data', (d: Buffer) => parser.parse(d));
    socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'resends-without-dup', clean: true, keepalive: 0 }));
    await eventually(() => (got.includes('connack') ? true : undefined), 5_000, 'CONNACK');
    const from = submitted.length;
    const publish = (messageId: number, dup: boolean) => mqttPacket.generate({ cmd: 'publish', topic: `${PREFIX}/timeseries`, payload: JSON.stringify({ level: messageId }), qos: 2, messageId, retain: false, dup });
    // After its PUBREC: the sender did not see it, and sends the publish again, without DUP (as some do).
    socket.write(publish(7, false));
    await eventually(() => (got.filter((c) => c === 'pubrec').length === 1 ? true : undefined), 5_000, 'the first PUBREC');
    socket.write(publish(7, false));
    await eventually(() => (got.filter((c) => c === 'pubrec').length === 2 ? true : undefined), 5_000, 'the PUBREC of the copy');
    // Before its first PUBREC: two copies in one write, the second flagged DUP or not.
    socket.write(Buffer.concat([publish(8, false), publish(8, false)]));
    await eventually(() => (got.filter((c) => c === 'pubrec').length === 4 ? true : undefined), 5_000, 'both PUBRECs of 8');
    socket.write(Buffer.concat([mqttPacket.generate({ cmd: 'pubrel', messageId: 7 }), mqttPacket.generate({ cmd: 'pubrel', messageId: 8 })]));
    await eventually(() => (got.filter((c) => c === 'pubcomp').length === 2 ? true : undefined), 5_000, 'the PUBCOMPs');
    assert.deepEqual(submitted.slice(from).map((s) => (s.payload as { level: number }).level), [7, 8]);
    // Released, the identifier is free again: a publish with it is a new one, taken.
    socket.write(publish(7, false));
    await eventually(() => (got.filter((c) => c === 'pubrec').length === 5 ? true : undefined), 5_000, 'the PUBREC of a new publish');
    assert.equal(submitted.length, from + 3);
    socket.destroy();
  });
});

/** How long `fn` took, in ms by the wall clock. */
function timed(fn: () => unknown): number {
  const start = performance.now();
  fn();
  return Math.round(performance.now() - start);
}

/** The longest the event loop went without a turn (ms), from now until stop(): what a payload's checks held it. */
function watchEventLoop(): { stop(): number } {
  let longest = 0;
  let last = Date.now();
  const tick = setInterval(() => {
    longest = Math.max(longest, Date.now() - last);
    last = Date.now();
  }, 20);
  return {
    stop() {
      clearInterval(tick);
      return Math.max(longest, Date.now() - last);
    },
  };
}
