import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Aedes } from 'aedes';
import { connectAsync, type MqttClient } from 'mqtt';
import { PubackReasons } from '../../dmz/gateway/puback-reasons.ts';
import { UplinkPublisher, type AcceptedMessage } from '../../dmz/gateway/uplink-publisher.ts';
import { GatewayEnvelopeSchema, UplinkEnvelopeSchema } from '../../shared/contract/envelope.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * The gateway's publisher on a real MQTT broker (aedes, the embedded one) over a real socket:
 * envelopes of many devices falling due together leave in a few socket writes, not one each, and
 * every device's messages arrive in its own envelope (or its section of the gateway's), in order,
 * exactly once.
 */
describe('the gateway publishing envelopes when their linger ends', () => {
  let aedes: Aedes;
  let server: Server;
  let publisherClient: MqttClient;
  let watcher: MqttClient;
  const received: Array<{ topic: string; deviceId: string; ids: string[] }> = [];
  const raw: Array<{ topic: string; payload: unknown }> = [];
  let writes = 0;

  before(async () => {
    aedes = await Aedes.createBroker();
    server = createServer((socket) => aedes.handle(socket));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `mqtt://127.0.0.1:${(server.address() as AddressInfo).port}`;
    watcher = await connectAsync(url, { clientId: 'watcher' });
    watcher.on('message', (topic, payload) => {
      raw.push({ topic, payload: JSON.parse(payload.toString('utf8')) });
      const env = JSON.parse(payload.toString('utf8')) as { deviceId: string; messages?: Array<{ messageId: string }> };
      if (env.messages) received.push({ topic, deviceId: env.deviceId, ids: env.messages.map((m) => m.messageId) });
    });
    await watcher.subscribeAsync('fieldstream/#', { qos: 1 });
    publisherClient = await connectAsync(url, { clientId: 'gateway' });
    // Counts what reaches the socket: one call per write system call's worth of data.
    const socket = publisherClient.stream as Socket & { _writev: (...a: unknown[]) => unknown; _write: (...a: unknown[]) => unknown };
    for (const name of ['_writev', '_write'] as const) {
      const original = socket[name].bind(socket);
      socket[name] = (...args: unknown[]) => {
        writes++;
        return original(...args);
      };
    }
  });
  after(async () => {
    await publisherClient.endAsync();
    await watcher.endAsync();
    await new Promise<void>((r) => aedes.close(() => r()));
    server.close();
  });

  const reading = (id: string): AcceptedMessage => ({ deviceId: id.split('-')[0] as string, dataType: 'timeseries', messageId: id, payload: { t: 1 } });

  it('publishes 300 devices whose linger ends together in a few writes, each device in its own envelope', async () => {
    const publisher = new UplinkPublisher(publisherClient, { gatewayId: 'gw-1', timeoutMs: 5000, lingerMs: 30, maxMessages: 3, envelopes: 'device' });
    received.length = 0;
    const settled: Array<Promise<void>> = [];
    const now = Date.now();
    for (let d = 0; d < 300; d++) for (const g of publisher.publish(`dev-${d}`, [reading(`${d}-a`)], now)) settled.push(g.done);
    // A second frame of each within the linger joins its envelope; device 0's third and fourth
    // make it full (3) at once, and the fourth starts a new one of its own.
    for (let d = 0; d < 300; d++) for (const g of publisher.publish(`dev-${d}`, [reading(`${d}-b`)], now)) settled.push(g.done);
    for (const id of ['0-c', '0-d']) for (const g of publisher.publish('dev-0', [reading(id)], now)) settled.push(g.done);
    writes = 0;
    await Promise.all(settled);
    assert.ok(writes <= 20, `${writes} socket writes for 301 envelopes`);
    // The PUBACKs came from the broker: the watcher gets its copies after, in its own time.
    await eventually(() => (received.length >= 301 ? true : undefined), 15_000, 'the watcher to get 301 envelopes');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(received.length, 301, 'one envelope per device, and the one device 0 filled, then its next');
    const byDevice = new Map<string, string[][]>();
    for (const r of received) byDevice.set(r.deviceId, [...(byDevice.get(r.deviceId) ?? []), r.ids]);
    assert.deepEqual(byDevice.get('dev-0'), [['0-a', '0-b', '0-c'], ['0-d']]);
    for (let d = 1; d < 300; d++) assert.deepEqual(byDevice.get(`dev-${d}`), [[`${d}-a`, `${d}-b`]], `dev-${d}`);
  });

  it('keeps each envelope to its own linger when arrivals are spread out', async () => {
    const publisher = new UplinkPublisher(publisherClient, { gatewayId: 'gw-1', timeoutMs: 5000, lingerMs: 40, maxMessages: 100, envelopes: 'device' });
    received.length = 0;
    const started = performance.now();
    const first = publisher.publish('early', [reading('e')], Date.now())[0]?.done;
    await new Promise((r) => setTimeout(r, 25));
    const second = publisher.publish('late', [reading('l')], Date.now())[0]?.done;
    await first;
    const firstAt = performance.now() - started;
    await second;
    const secondAt = performance.now() - started;
    assert.ok(firstAt >= 39 && firstAt < secondAt, `the early one at ${firstAt.toFixed(1)} ms, the late one at ${secondAt.toFixed(1)} ms`);
    assert.ok(secondAt >= 64, `the late one waited its own linger: ${secondAt.toFixed(1)} ms`);
  });

  it("puts the readings of every device in the gateway's envelopes, other messages in their device's", async () => {
    const publisher = new UplinkPublisher(publisherClient, { gatewayId: 'gw-1', timeoutMs: 5000, lingerMs: 30, maxMessages: 250, envelopes: 'gateway' });
    raw.length = 0;
    const settled: Array<Promise<void>> = [];
    const now = Date.now();
    const sent = new Map<string, string[]>();
    const send = (deviceId: string, id: string) => {
      sent.set(deviceId, [...(sent.get(deviceId) ?? []), id]);
      for (const g of publisher.publish(deviceId, [reading(id)], now)) settled.push(g.done);
    };
    for (let d = 0; d < 300; d++) send(`dev-${d}`, `${d}-a`);
    for (let d = 0; d < 300; d++) send(`dev-${d}`, `${d}-b`);
    send('dev-0', '0-c');
    const event: AcceptedMessage = { deviceId: 'dev-7', dataType: 'event', messageId: '7-event', payload: { eventType: 'door_open' } };
    for (const g of publisher.publish('dev-7', [event], now)) settled.push(g.done);
    await Promise.all(settled);
    const readings = () => raw.filter((r) => r.topic === 'fieldstream/v1/gateways/gw-1/up/timeseries').reduce((n, r) => n + (r.payload as { devices: Array<{ messages: unknown[] }> }).devices.reduce((k, s) => k + s.messages.length, 0), 0);
    await eventually(() => (readings() >= 601 && raw.some((r) => r.topic === 'fieldstream/v1/devices/dev-7/up/event') ? true : undefined), 15_000, 'the watcher to get every envelope');
    await new Promise((r) => setTimeout(r, 200));

    const gatewayEnvelopes = raw.filter((r) => r.topic === 'fieldstream/v1/gateways/gw-1/up/timeseries').map((r) => GatewayEnvelopeSchema.parse(r.payload));
    // 601 readings, 250 to an envelope at most: full ones leave at once, the rest when the linger ends.
    assert.deepEqual(gatewayEnvelopes.map((e) => e.devices.reduce((n, s) => n + s.messages.length, 0)), [250, 250, 101]);
    const got = new Map<string, string[]>();
    for (const env of gatewayEnvelopes) for (const s of env.devices) got.set(s.deviceId, [...(got.get(s.deviceId) ?? []), ...s.messages.map((m) => m.messageId)]);
    assert.deepEqual(got, sent, "each device's readings arrive once, in the order they came");

    // (the devices of the tests before have their own names: anything of these devices is from here)
    const others = raw.filter((r) => /^fieldstream\/v1\/devices\/dev-/.test(r.topic));
    assert.deepEqual(others.map((r) => r.topic), ['fieldstream/v1/devices/dev-7/up/event']);
    assert.deepEqual(UplinkEnvelopeSchema.parse(others[0]?.payload).messages.map((m) => m.messageId), ['7-event']);
  });

  it('never joins two large frames of two devices into one envelope, and never hands the broker an envelope past its limit', async () => {
    const publisher = new UplinkPublisher(publisherClient, { gatewayId: 'gw-big', timeoutMs: 5000, lingerMs: 50, maxMessages: 1000, envelopes: 'gateway' });
    raw.length = 0;
    const now = Date.now();
    // Two devices' frames of 8 MiB each (what they declared, within their limits), at once: joined,
    // they were one envelope past the broker's 16 MiB, which cut the gateway off its broker for good.
    const big = (deviceId: string, id: string): AcceptedMessage => ({ deviceId, dataType: 'timeseries', messageId: id, payload: { t: 1, note: 'x'.repeat(1000) } });
    const done = [
      ...publisher.publish('big-a', [big('big-a', 'a-1')], now, LIMITS.frameMaxBytes),
      ...publisher.publish('big-b', [big('big-b', 'b-1')], now, LIMITS.frameMaxBytes),
      ...publisher.publish('small-c', [reading('small-c1')], now, 200),
      ...publisher.publish('small-d', [reading('small-d1')], now, 200),
    ].map((g) => g.done);
    await Promise.all(done);
    await eventually(() => (raw.filter((r) => r.topic === 'fieldstream/v1/gateways/gw-big/up/timeseries').length >= 3 ? true : undefined), 15_000, 'the watcher to get 3 envelopes');
    await new Promise((r) => setTimeout(r, 200));
    const sections = raw.filter((r) => r.topic === 'fieldstream/v1/gateways/gw-big/up/timeseries').map((r) => GatewayEnvelopeSchema.parse(r.payload).devices.map((d) => d.deviceId));
    assert.deepEqual(sections, [['big-a'], ['big-b'], ['small-c', 'small-d']], 'a large frame has an envelope of its own; small ones join one another');

    // An envelope that would be past the broker's limit is refused (final: sending it again would
    // not help), and nothing is published.
    raw.length = 0;
    const huge: AcceptedMessage = { deviceId: 'huge', dataType: 'timeseries', messageId: 'h-1', payload: { t: 1, note: 'y'.repeat(LIMITS.brokerPacketMaxBytes) } };
    const [group] = publisher.publish('huge', [huge], now, LIMITS.frameMaxBytes);
    await assert.rejects(group!.done, (err: unknown) => err instanceof FieldStreamError && err.code === 'CONTRACT_FRAME_TOO_LARGE');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(raw.length, 0);
    assert.ok(publisherClient.connected);
  });

  it('counts in its backlog what the MQTT client holds: each envelope from its hand-over to its PUBACK', async () => {
    const publisher = new UplinkPublisher(publisherClient, { gatewayId: 'gw-count', timeoutMs: 5000, lingerMs: 0, maxMessages: 10, envelopes: 'gateway' });
    const [group] = publisher.publish('count', [reading('count-1')], Date.now(), 100);
    assert.ok(publisher.backlogBytes > 0, 'counted as it is handed over');
    await group!.done;
    assert.equal(publisher.backlogBytes, 0, 'no longer once the broker answered');
  });
});

/**
 * mqtt.js hands a publish's callback no PUBACK when its reason code is 0x10 (No matching
 * subscribers): the code is read as each PUBACK arrives, under its packet identifier, which mqtt.js
 * reuses once a publish is settled. Only the PUBACK just received for an identifier counts.
 */
describe('the reason code of the PUBACK that settled a publish', () => {
  const puback = (messageId: number, reasonCode?: number) => ({ cmd: 'puback', messageId, ...(reasonCode === undefined ? {} : { reasonCode }) });

  it('gives each publish its own PUBACK\'s code, once, whatever came before under its identifier', () => {
    const client = new EventEmitter();
    const reasons = PubackReasons.of(client as unknown as MqttClient);
    assert.equal(PubackReasons.of(client as unknown as MqttClient), reasons, 'one per client: each PUBACK counted once');
    client.emit('packetreceive', puback(7, 0x10));
    assert.equal(reasons.take(7), 0x10);
    assert.equal(reasons.take(7), 0, 'taken: not given to the next publish of that identifier');
    // A PUBACK whose publish's callback takes nothing here (the gateway's presence), then the next
    // publish under that identifier, answered with success: the earlier code is not its own.
    client.emit('packetreceive', puback(9, 0x10));
    client.emit('packetreceive', puback(9, 0));
    assert.equal(reasons.take(9), 0);
    client.emit('packetreceive', puback(9));
    assert.equal(reasons.take(9), 0, 'MQTT 3.1.1: no reason code, a success');
    client.emit('packetreceive', { cmd: 'suback', messageId: 11, granted: [0x80] });
    client.emit('packetreceive', puback(12, 0x87));
    assert.equal(reasons.take(11), 0, 'only PUBACKs count');
    assert.equal(reasons.take(12), 0x87);
    assert.equal(reasons.take(undefined), 0, 'the client ended it: no PUBACK');
  });
});
