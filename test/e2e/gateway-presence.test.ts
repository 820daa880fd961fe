import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { CommandRouter } from '../../dmz/gateway/command-router.ts';
import { ReceiptRouter } from '../../dmz/gateway/receipt-router.ts';
import type { DeviceSession } from '../../dmz/gateway/device-session.ts';
import { StatusEnvelopeSchema, type StatusEnvelope } from '../../shared/contract/envelope.ts';
import { commandTopic, receiptTopic, statusTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import { DAY_MS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { connectMqtt, endMqtt, whenConnected } from '../../shared/mqtt/connect.ts';
import { readMqttTls } from '../../shared/mqtt/settings.ts';
import { freezableBroker } from '../helpers/freezable-broker.ts';
import { captureLogs } from '../helpers/gateway-fixture.ts';
import { TcpRelay } from '../helpers/tcp-relay.ts';
import { eventually, within } from '../helpers/ws-device.ts';

/**
 * A device's presence over a long connection: the gateway publishes it again every day and after
 * reconnecting to its broker, with the connection's `since`, so what reads presence within a window
 * of time still finds the device (the distributor's side: test/unit/device-presence.test.ts); and
 * the gateway's routers go on after a message whose handling fails. On a real Mosquitto over mutual
 * TLS, as the DMZ broker (the gateway's connection made as gateway.ts makes it), its connection cut
 * and restored by a relay as a broker going away and coming back would.
 */
const log = createLogger('test', 'silent');
const T0 = Date.UTC(2026, 0, 1);
const NOT_AFTER = T0 + 400 * DAY_MS;

const fx = freezableBroker('gateway-presence', [], 'dmz/mosquitto');

/** The gateway's broker connection, through a relay: cut() and restore() as the broker going away and back. */
interface GatewayConnection {
  readonly mqtt: MqttClient;
  /** the relay between the gateway and its broker, to hold what passes it one way */
  readonly relay: TcpRelay;
  /** Resolves once the client has seen its connection lost. */
  cut(): Promise<void>;
  /** Resolves once the client has connected again (its 'connect' listeners, the routers', have run). */
  restore(): Promise<void>;
  close(): Promise<void>;
}

async function gatewayConnection(clientId: string): Promise<GatewayConnection> {
  const relay = new TcpRelay({ host: '127.0.0.1', port: Number(new URL(fx.broker.tlsUrl).port) });
  await relay.start();
  const p = fx.pki.paths;
  const client = p.service('dmz/gateway-client');
  const mqtt = connectMqtt(
    { url: `mqtts://127.0.0.1:${relay.port}`, ...readMqttTls({ MQTT_CA_FILE: p.dmzBrokerCa.dmz, MQTT_CERT_FILE: client.cert, MQTT_KEY_FILE: client.key }), clientId, protocolVersion: 5, clean: true, reconnectPeriodMs: 100 },
    log,
    { resubscribe: false },
  );
  await within(whenConnected(mqtt), 10_000, 'the gateway connected to its broker');
  return {
    mqtt,
    relay,
    async cut() {
      await relay.cut();
      await eventually(() => (mqtt.connected ? undefined : true), 5_000, 'the broker connection lost');
    },
    async restore() {
      const connected = new Promise((resolve) => mqtt.once('connect', resolve));
      await relay.restore();
      await within(connected, 10_000, 'the gateway connected again');
    },
    async close() {
      await endMqtt(mqtt, true);
      await relay.close();
    },
  };
}

/** The internal side of the DMZ broker: the presences of `deviceIds` the gateway publishes, and a client to publish commands and receipts. */
async function internalSide(clientId: string, deviceIds: readonly string[]) {
  const MARKER = 'test/presence-marker';
  const client = await connectAsync(fx.broker.url, { protocolVersion: 5, clientId });
  const published: Array<{ topic: string; status: StatusEnvelope; retain: boolean }> = [];
  let markers = 0;
  let markerSeen = 0;
  client.on('message', (topic, payload, packet) => {
    if (topic === MARKER) markerSeen = Number(payload.toString());
    else published.push({ topic, status: StatusEnvelopeSchema.parse(JSON.parse(payload.toString())), retain: packet.retain });
  });
  // Retain as published (MQTT 5 §3.8.3.1): the flag the gateway set, not the broker's "sent live";
  // retain handling 2: none of the presences an earlier test left retained.
  await client.subscribeAsync([...deviceIds.map(statusTopic), MARKER], { qos: 1, rap: true, rh: 2 });
  return {
    client,
    published,
    /**
     * What `gateway` published since the last call, as [device, state, at, since] by device: once a
     * marker it publishes after them has arrived (Mosquitto passes one client's messages on to a
     * subscriber in the order received), so an empty list means nothing was published.
     */
    async take(gateway: MqttClient): Promise<Array<[string, string, number, number | undefined]>> {
      const marker = ++markers;
      await gateway.publishAsync(MARKER, String(marker), { qos: 1 });
      await eventually(() => (markerSeen >= marker ? true : undefined), 5_000, 'the marker');
      const out = published.map((p): [string, string, number, number | undefined] => [p.topic.split('/')[3] as string, p.status.state, p.status.at, p.status.since]);
      published.length = 0;
      return out.sort((a, b) => a[0].localeCompare(b[0]));
    },
    close: () => client.endAsync(true),
  };
}

const session = (deviceId: string) => ({ deviceId, isClosed: false, close: () => undefined }) as unknown as DeviceSession;

describe('the gateway publishes the presence of each device it holds again', () => {
  it('a day after its last, with the time of the connection; a connection or a disconnection without it', async () => {
    const gw = await gatewayConnection('gw-reminders');
    const internal = await internalSide('internal-reminders', ['meter-1', 'meter-2']);
    let now = T0;
    const router = new CommandRouter(gw.mqtt, 'gw-1', log, { refreshMs: DAY_MS, refreshCheckMs: 3_600_000, now: () => now });
    try {
      const a = session('meter-1');
      router.attach(a, NOT_AFTER);
      assert.deepEqual(await internal.take(gw.mqtt), [['meter-1', 'online', T0, undefined]]);
      now = T0 + DAY_MS - 1;
      router.refresh();
      assert.deepEqual(await internal.take(gw.mqtt), [], 'not due yet');
      now = T0 + DAY_MS;
      router.refresh();
      const reminder = await eventually(() => internal.published[0], 5_000, 'the reminder');
      assert.deepEqual(await internal.take(gw.mqtt), [['meter-1', 'online', T0 + DAY_MS, T0]]);
      assert.equal(reminder.status.certNotAfter, NOT_AFTER);
      assert.equal(reminder.retain, true);
      assert.equal(reminder.topic, statusTopic('meter-1'));
      now += 3_600_000;
      router.refresh();
      assert.deepEqual(await internal.take(gw.mqtt), [], 'the next one a day after this one');

      // Broker away: a device let in meanwhile has no presence yet; at the reconnection it gets its
      // first (no `since`), the one held before a reminder. The day counts from then. (A presence
      // handed to the client meanwhile would be sent at the reconnection: the list then has it.)
      await gw.cut();
      now += 3_600_000;
      router.attach(session('meter-2'), NOT_AFTER);
      now += 60_000;
      router.refresh();
      await gw.restore();
      const reconnected = now;
      assert.deepEqual(await internal.take(gw.mqtt), [
        ['meter-1', 'online', reconnected, T0],
        ['meter-2', 'online', reconnected, undefined],
      ]);

      router.detach(a);
      assert.deepEqual(await internal.take(gw.mqtt), [['meter-1', 'offline', reconnected, undefined]]);
      now = reconnected + DAY_MS;
      router.refresh();
      assert.deepEqual(await internal.take(gw.mqtt), [['meter-2', 'online', reconnected + DAY_MS, reconnected - 60_000]]);
    } finally {
      router.close();
      await internal.close();
      await gw.close();
    }
  });

  /**
   * A device that left while the broker was away had its `offline` dropped (the broker is away, and
   * the next connection published only the devices still held): its retained presence said
   * `online` for a device long gone, until it connected again (a device retired, never).
   */
  it("publishes at the reconnection the offline of a device that left while the broker was away, at the time it left; not of one back meanwhile", async () => {
    const gw = await gatewayConnection('gw-departed');
    const internal = await internalSide('internal-departed', ['meter-gone', 'meter-back']);
    let now = T0;
    const router = new CommandRouter(gw.mqtt, 'gw-1', log, { refreshMs: DAY_MS, refreshCheckMs: 3_600_000, now: () => now });
    try {
      const gone = session('meter-gone');
      const back = session('meter-back');
      router.attach(gone, NOT_AFTER);
      router.attach(back, NOT_AFTER);
      await internal.take(gw.mqtt);
      await gw.cut();
      now += 60_000;
      const leftAt = now;
      router.detach(gone);
      router.detach(back);
      now += 60_000;
      router.attach(session('meter-back'), NOT_AFTER);
      now += 60_000;
      await gw.restore();
      assert.deepEqual(await internal.take(gw.mqtt), [
        ['meter-back', 'online', now, undefined],
        ['meter-gone', 'offline', leftAt, undefined],
      ]);
      await gw.cut();
      await gw.restore();
      assert.deepEqual((await internal.take(gw.mqtt)).filter(([d]) => d === 'meter-gone'), [], 'published once');
    } finally {
      router.close();
      await internal.close();
      await gw.close();
    }
  });

  it('dates an offline when its device was last heard, never before the last presence of its connection', async () => {
    const gw = await gatewayConnection('gw-heard');
    const internal = await internalSide('internal-heard', ['meter-1']);
    let now = T0;
    const router = new CommandRouter(gw.mqtt, 'gw-1', log, { refreshMs: DAY_MS, refreshCheckMs: 3_600_000, now: () => now });
    try {
      const a = session('meter-1');
      router.attach(a, NOT_AFTER);
      now += 60_000;
      router.detach(a, T0 + 30_000);
      assert.deepEqual(await internal.take(gw.mqtt), [
        ['meter-1', 'online', T0, undefined],
        ['meter-1', 'offline', T0 + 30_000, undefined],
      ]);
      const b = session('meter-1');
      router.attach(b, NOT_AFTER);
      router.detach(b, T0);
      assert.deepEqual(await internal.take(gw.mqtt), [
        ['meter-1', 'online', now, undefined],
        ['meter-1', 'offline', now, undefined],
      ]);
    } finally {
      router.close();
      await internal.close();
      await gw.close();
    }
  });

  it('on its own timer, until closed', async () => {
    const gw = await gatewayConnection('gw-timer');
    const internal = await internalSide('internal-timer', ['meter-1']);
    let now = T0;
    const router = new CommandRouter(gw.mqtt, 'gw-1', log, { refreshMs: DAY_MS, refreshCheckMs: 10, now: () => now });
    try {
      router.attach(session('meter-1'));
      await internal.take(gw.mqtt);
      now = T0 + DAY_MS;
      const reminder = await eventually(() => internal.published[0], 5_000, 'the reminder');
      assert.equal(reminder.status.certNotAfter, undefined, 'a device token: no certificate');
      assert.deepEqual(await internal.take(gw.mqtt), [['meter-1', 'online', T0 + DAY_MS, T0]]);
      router.close();
      now += 2 * DAY_MS;
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(await internal.take(gw.mqtt), []);
    } finally {
      router.close();
      await internal.close();
      await gw.close();
    }
  });
});

/**
 * mqtt.js calls its 'message' listeners synchronously: an error one of them throws ends the
 * process, and every device's connection with it. What the DMZ broker delivers is not the devices',
 * and a fault in handling one message (a bug, a compromised internal side) must cost that message
 * only. The fault is a device session's (stubbed to throw), the messages the broker's.
 */
describe('the gateway routers go on after a message whose handling fails unforeseen', () => {
  const failing = (deviceId: string) =>
    ({
      deviceId,
      isClosed: false,
      close: () => undefined,
      sendCommand: () => {
        throw new TypeError('unforeseen');
      },
      sendCommit: () => {
        throw new TypeError('unforeseen');
      },
    }) as unknown as DeviceSession;

  it('the command router logs it with its code, and routes the next command', async () => {
    const gw = await gatewayConnection('gw-commands');
    const internal = await internalSide('internal-commands', ['meter-1', 'meter-2']);
    const logs = captureLogs();
    const router = new CommandRouter(gw.mqtt, 'gw-1', logs.logger);
    try {
      const sent: unknown[] = [];
      router.attach(failing('meter-1'));
      router.attach({ deviceId: 'meter-2', isClosed: false, close: () => undefined, sendCommand: (f: unknown) => sent.push(f) } as unknown as DeviceSession);
      // Each device's presence follows its SUBSCRIBE on the gateway's connection: both subscribed.
      assert.equal((await internal.take(gw.mqtt)).length, 2);
      const command = (commandId: string) => Buffer.from(JSON.stringify({ v: 1, commandId, command: 'reboot', issuedAt: T0 }));
      await internal.client.publishAsync(commandTopic('meter-1'), command('c-1'), { qos: 1 });
      await internal.client.publishAsync(commandTopic('meter-2'), command('c-2'), { qos: 1 });
      // The router itself still works: the next command reaches a healthy session.
      await eventually(() => (sent.length > 0 ? true : undefined), 5_000, 'the next command delivered');
      assert.equal(sent.length, 1);
      const logged = logs.lines.filter((l) => l.code === 'GATEWAY_INTERNAL');
      assert.equal(logged.length, 1);
      assert.equal(logged[0]?.topic, commandTopic('meter-1'));
      assert.equal(logged[0]?.level, 50, 'logged as an error');
      assert.ok(gw.mqtt.connected, 'the broker connection kept');
    } finally {
      router.close();
      await internal.close();
      await gw.close();
    }
  });

  it('the receipt router logs it with its code, and routes the next receipts', async () => {
    const gw = await gatewayConnection('gw-receipts');
    const internal = await internalSide('internal-receipts', []);
    const logs = captureLogs();
    const sent: unknown[] = [];
    const healthy = { deviceId: 'meter-2', sendCommit: (f: unknown) => sent.push(f) } as unknown as DeviceSession;
    const router = new ReceiptRouter(gw.mqtt, 'gw-1', (id) => (id === 'meter-1' ? failing(id) : healthy), logs.logger);
    try {
      await within(router.ready, 5_000, 'the receipts subscription');
      const receipts = (deviceId: string) => Buffer.from(JSON.stringify({ v: 1, gatewayId: 'gw-1', receipts: [{ deviceId, epoch: 'e1', ranges: [[1, 2]], mac: 'A'.repeat(43) }] }));
      await internal.client.publishAsync(receiptTopic('gw-1'), receipts('meter-1'), { qos: 1 });
      await internal.client.publishAsync(receiptTopic('gw-1'), receipts('meter-2'), { qos: 1 });
      await eventually(() => (sent.length > 0 ? true : undefined), 5_000, 'the next receipts delivered');
      assert.equal(sent.length, 1);
      const logged = logs.lines.filter((l) => l.code === 'GATEWAY_INTERNAL');
      assert.equal(logged.length, 1);
      assert.equal(logged[0]?.topic, receiptTopic('gw-1'));
      assert.ok(gw.mqtt.connected, 'the broker connection kept');
    } finally {
      router.close();
      await internal.close();
      await gw.close();
    }
  });
});


/**
 * After a reconnection mqtt.js sends again what the broker had not acknowledged, one message a
 * PUBACK, and only then emits 'connect', where the gateway subscribed again (its session is clean:
 * the broker held no subscription of it). A commit receipt for an envelope sent again could come
 * before that subscription, and the broker dropped it (no subscriber); its device sent its messages
 * again at its commit timeout. The subscriptions now go out at the CONNACK, before anything is sent
 * again. Made certain here: the broker's answers to the gateway are held from the CONNACK on, so
 * nothing of that connection is acknowledged when the internal side, seeing the envelope, answers
 * with its receipt.
 */
describe('after a reconnection, the gateway subscribes before it sends anything again', () => {
  it('routes the receipt of an envelope sent again, whatever its PUBACK waits for', async () => {
    const gw = await gatewayConnection('gw-resend');
    const internal = await connectAsync(fx.broker.url, { protocolVersion: 5, clientId: 'internal-resend' });
    const commits: unknown[] = [];
    const device = { deviceId: 'meter-7', sendCommit: (f: unknown) => commits.push(f) !== 0 } as unknown as DeviceSession;
    const router = new ReceiptRouter(gw.mqtt, 'gw-1', (id) => (id === 'meter-7' ? device : undefined), log);
    try {
      await within(router.ready, 5_000, 'the receipts subscription');
      // An envelope whose PUBACK never comes on this connection.
      gw.relay.hold('down');
      gw.mqtt.publish(uplinkTopic('meter-7', 'event'), JSON.stringify({ envelope: 1 }), { qos: 1 });
      await eventually(() => (Object.keys(gw.mqtt.outgoing).length > 0 ? true : undefined), 5_000, 'the envelope outstanding');
      await gw.cut();
      gw.relay.release('down');
      // The internal side: answers the envelope sent again with its receipt.
      let receiptCode: number | undefined;
      internal.on('message', (topic) => {
        if (topic !== uplinkTopic('meter-7', 'event')) return;
        const receipts = { v: 1, gatewayId: 'gw-1', receipts: [{ deviceId: 'meter-7', epoch: 'e1', ranges: [[1, 1]], mac: 'A'.repeat(43) }] };
        internal.publish(receiptTopic('gw-1'), JSON.stringify(receipts), { qos: 1 });
      });
      // The PUBACK's own code (mqtt.js hands the callback the PUBLISH): the internal side publishes nothing else.
      internal.on('packetreceive', (p) => {
        if (p.cmd === 'puback') receiptCode = p.reasonCode ?? 0;
      });
      await internal.subscribeAsync(uplinkTopic('meter-7', 'event'), { qos: 1 });
      // From the CONNACK on, what the broker sends the gateway is held.
      gw.mqtt.once('packetreceive', (p) => {
        if (p.cmd === 'connack') gw.relay.hold('down');
      });
      await gw.relay.restore();
      await eventually(() => (receiptCode !== undefined ? true : undefined), 10_000, 'the receipt published');
      assert.equal(receiptCode, 0, 'the broker had no subscriber for the receipt (PUBACK 0x10): dropped');
      gw.relay.release('down');
      await eventually(() => (commits.length > 0 ? true : undefined), 5_000, 'the receipt at the device');
    } finally {
      gw.relay.release('down');
      router.close();
      await internal.endAsync(true);
      await gw.close();
    }
  });
});
