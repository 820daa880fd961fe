import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { SEED_MESSAGES } from '../fixtures/seed-messages.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { extraDistributor, startTestStack, influxSettings } from '../helpers/stack.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import type { RunningFieldClient } from '../../field-client/src/start.ts';
import { readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { STORED_FEED_TOPIC, StoredFeedReader, type StoredFeedMessage } from '../../internal-network/shared/stored-feed.ts';
import { feedKeyOf, newBoot, sealedFeed } from '../helpers/stored-feed.ts';
import { commandTopic, receiptTopic, statusTopic, TOPIC_FILTERS, uplinkTopic } from '../../shared/contract/topics.ts';

const DB = 'sensor_data';
const FIELD = 'feed-field';
const BASE = Date.parse('2025-03-01T00:00:00Z');
const NOT_AUTHORIZED = 135; // MQTT 5 reason code

/**
 * The stored feed on the real deployment (Caddy, both Mosquittos with their ACL files and the
 * bridge, InfluxDB 1.x): a subscriber with the `console` certificate receives what the distributor
 * stored, sealed under the stored-feed key (read as the console reads it), only that, can do
 * nothing else, and the feed stays on the internal broker. What a compromised DMZ can put on the
 * topic through the bridge, and the console's refusal of it: stored-feed-bridge.test.ts.
 */
describe('the stored feed on the real stack', () => {
  const work = tempDir('feed-stack');
  const pki = makeTestPki([FIELD, 'sensor-001']);
  const logs = new LogCapture();
  let influx: InfluxV1;
  let stack: LocalStack;
  let quiet: ManagedProcess;
  let field: RunningFieldClient;
  let console_: MqttClient;
  /** every feed message, and whether the database held each of its points when it arrived */
  const feed: { message: StoredFeedMessage; inDatabase: Promise<boolean> }[] = [];
  /** the codes of messages the reader refused (none is expected here) */
  const refused: string[] = [];
  const key = feedKeyOf(pki.paths);
  const reader = new StoredFeedReader(key);
  const points = (f: (p: StoredPoint, m: StoredFeedMessage) => boolean) => feed.flatMap(({ message }) => message.points.filter((p) => f(p, message)));
  const ca = () => readFileSync(pki.paths.publicCa);
  const as = (service: string, url: string, clientId: string) => {
    const s = pki.paths.service(service);
    return connectAsync(url, { ca: ca(), cert: readFileSync(s.cert), key: readFileSync(s.key), clientId, protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000 });
  };

  /** Whether InfluxDB holds this reading, looked up the moment the feed delivered it. */
  const readingInDatabase = async (p: StoredPoint) =>
    (await influx.rows(DB, `SELECT * FROM readings WHERE device = '${p.tags.device}' AND time = ${p.time}ms`)).length === 1;

  before(async () => {
    influx = await InfluxV1.start(join(work.dir, 'influxdb'), DB);
    ({ stack } = await startTestStack(pki.dir, join(work.dir, 'stack'), {
      ...influxSettings(influx, DB),
      DISTRIBUTOR_REQUIRE_SIGNATURES: 'true',
    }));
    // A second distributor with the feed off, in a share group of its own: it writes everything too.
    quiet = extraDistributor('distributor-quiet', pki.paths, stack.urls.internalMqtt, join(work.dir, 'stack'), { DISTRIBUTOR_FEED: 'off', DISTRIBUTOR_REQUIRE_SIGNATURES: 'true' });
    await quiet.start();
    console_ = await as('internal/console', stack.urls.internalMqtt, 'feed-test-console');
    console_.on('message', (topic, payload) => {
      assert.equal(topic, STORED_FEED_TOPIC);
      let message: StoredFeedMessage;
      try {
        message = reader.read(payload);
      } catch (err) {
        refused.push((err as { code?: string }).code ?? String(err));
        return;
      }
      const readings = message.points.filter((p) => p.measurement === 'readings' && p.tags.device === FIELD);
      feed.push({ message, inDatabase: Promise.all(readings.map(readingInDatabase)).then((all) => all.every(Boolean)) });
    });
    const granted = await console_.subscribeAsync(STORED_FEED_TOPIC, { qos: 0 });
    assert.deepEqual(granted.map((g) => g.qos), [0]);
    field = await startTestFieldClient(pki.paths, FIELD, stack.urls.wss, logs.logger);
  });
  after(async () => {
    await field?.close();
    await console_?.endAsync(true);
    await quiet?.stop();
    await stack?.close();
    await influx?.process.stop();
    pki.cleanup();
    work.cleanup();
  });

  it("delivers a field client's readings once they are in the database, and its presence", async () => {
    await Promise.all(Array.from({ length: 50 }, (_, i) => field.client.submit('timeseries', { flow: i * 0.5, pump_on: i % 2 === 0, timestamp: BASE + i * 1000 })));
    const got = await eventually(() => {
      const r = points((p) => p.measurement === 'readings' && p.tags.device === FIELD);
      return r.length >= 50 ? r : undefined;
    }, 30_000, 'the readings on the feed');
    assert.deepEqual(
      got.map((p) => p.time).sort((a, b) => a - b),
      Array.from({ length: 50 }, (_, i) => BASE + i * 1000),
    );
    assert.deepEqual(got.find((p) => p.time === BASE + 7000), { measurement: 'readings', tags: { device: FIELD }, fields: { flow: 3.5, pump_on: false }, time: BASE + 7000 });
    // Looked up in InfluxDB the moment each message arrived: every reading was there already.
    assert.deepEqual(await Promise.all(feed.map((f) => f.inDatabase)), feed.map(() => true));
    const online = points((p) => p.measurement === 'device_status' && p.tags.device === FIELD);
    assert.equal(online[0]?.fields.state, 'online');
    assert.equal(online[0]?.tags.gateway, 'gateway-1');
    assert.ok(feed.every(({ message }) => message.source === 'distributor-1'), 'only the stack distributor publishes');
    assert.deepEqual(refused, [], 'every message sealed under the stored-feed key, each new');
  });

  it('carries every kind the distributor writes: events, file records, command responses and health too', async () => {
    await field.client.submit('event', { eventType: 'door_open', severity: 'low', message: 'cabinet opened', timestamp: BASE });
    await field.client.submit('file', { filename: 'feed.csv', contentType: 'text/csv', data: Buffer.from('a,b\n1,2\n').toString('base64') });
    await field.client.submit('response', { commandId: 'cmd-feed-1', status: 'completed', result: 'done' });
    await field.client.submit('health', { uptimeSeconds: 3600, queueMessages: 0, queueBytes: 0, awaitingReceipt: 0, version: '0.1.0', intervalSeconds: 60, local: { battery: 87 } });
    let k = new Set<string>();
    const kinds = await eventually(() => {
      k = new Set(points((p) => p.tags.device === FIELD).map((p) => p.measurement));
      return ['events', 'files', 'command_responses', 'device_health'].every((m) => k.has(m)) ? k : undefined;
    }, 20_000, 'events, files, command responses and device_health on the feed').catch((err: Error) => assert.fail(`${err.message}; the feed had ${[...k].join(', ')}`));
    assert.ok(kinds.has('readings') && kinds.has('device_status'));
    const [event] = points((p) => p.measurement === 'events' && p.tags.device === FIELD);
    assert.deepEqual(event, { measurement: 'events', tags: { device: FIELD, event_type: 'door_open', severity: 'low' }, fields: { message: 'cabinet opened' }, time: BASE });
    const [file] = points((p) => p.measurement === 'files' && p.tags.device === FIELD);
    assert.equal(file?.fields.filename, 'feed.csv');
    assert.equal(file?.fields.size, 8);
    const [response] = points((p) => p.measurement === 'command_responses' && p.tags.device === FIELD);
    assert.deepEqual(response?.tags, { device: FIELD, status: 'completed' });
    assert.equal(response?.fields.cmd_id, 'cmd-feed-1');
    assert.equal(response?.fields.result, 'done');
    // A health message (the field client's heartbeat), with the field names the console reads.
    const health = points((p) => p.measurement === 'device_health' && p.tags.device === FIELD).find((p) => p.fields.local_battery === 87);
    assert.deepEqual(health?.fields, { uptime_s: 3600, queue_messages: 0, queue_bytes: 0, awaiting_receipt: 0, version: '0.1.0', interval_s: 60, local_battery: 87 });
  });

  it('shows an unsigned message (signatures required) as the security event it became, never as a reading', async () => {
    const d = await RawDevice.connect(stack.urls.wss, RawDevice.tlsFor(pki.paths, 'sensor-001'));
    d.send(SEED_MESSAGES.timeseries);
    assert.equal((await d.next()).type, 'ack');
    d.close();
    const [event] = await eventually(() => {
      const e = points((p) => p.measurement === 'security_events' && p.tags.device === 'sensor-001');
      return e.length > 0 ? e : undefined;
    }, 20_000, 'the security event on the feed');
    assert.equal(event?.tags.reason, 'SECURITY_UNSIGNED');
    assert.equal(event?.fields.data_type, 'timeseries');
    assert.deepEqual(points((p) => p.measurement === 'readings' && p.tags.device === 'sensor-001'), []);
  });

  it('the console certificate reads nothing but the feed, and publishes nowhere', async () => {
    const probe = await as('internal/console', stack.urls.internalMqtt, 'feed-test-probe');
    try {
      const seen: string[] = [];
      probe.on('message', (t) => seen.push(t));
      // Mosquitto 2.0 grants a subscription its ACL denies and enforces "read" on delivery (or
      // refuses it with 135): either way, nothing of a device topic may arrive.
      for (const filter of [TOPIC_FILTERS.uplink, TOPIC_FILTERS.status, TOPIC_FILTERS.receipts, '#']) {
        const [g] = await probe.subscribeAsync(filter, { qos: 1 }).catch(() => [{ qos: NOT_AUTHORIZED }]);
        assert.ok(g && (g.qos === 1 || g.qos === NOT_AUTHORIZED), `${filter}: ${JSON.stringify(g)}`);
      }
      const before = points(() => true).length;
      await field.client.submit('timeseries', { flow: 99, timestamp: BASE + 99_000 });
      await eventually(() => (points((p) => p.time === BASE + 99_000).length > 0 ? true : undefined), 20_000, 'the reading on the feed');
      await new Promise((r) => setTimeout(r, 500));
      assert.ok(points(() => true).length > before);
      assert.deepEqual(seen.filter((t) => t !== STORED_FEED_TOPIC), [], 'no device topic reached the console certificate');
      for (const topic of [STORED_FEED_TOPIC, uplinkTopic(FIELD, 'timeseries'), statusTopic(FIELD), commandTopic(FIELD), receiptTopic('gateway-1')]) {
        await assert.rejects(probe.publishAsync(topic, '{}', { qos: 1 }), (e: { code?: number }) => e.code === NOT_AUTHORIZED, topic);
      }
    } finally {
      await probe.endAsync(true);
    }
  });

  it('nobody but the distributor publishes on the feed: not the DMZ, not the other internal identities', async () => {
    // Sealed with the right key even: the broker's ACL alone refuses these publishers (what arrives
    // over the bridge, which no ACL holds, is stored-feed-bridge.test.ts's).
    const forged = sealedFeed(key, { source: 'forger', points: [{ measurement: 'readings', tags: { device: FIELD }, fields: { flow: -1 }, time: BASE }] });
    const attempts: [string, string][] = [
      ['dmz/gateway', stack.urls.dmzMqtt],
      ['internal/consumer', stack.urls.internalMqtt],
      ['internal/command-api', stack.urls.internalMqtt],
      ['internal/monitor', stack.urls.internalMqtt],
      ['internal/monitor', stack.urls.dmzMqtt],
    ];
    for (const [service, url] of attempts) {
      const c = await as(service, url, `feed-forger-${service.replace('/', '-')}`);
      try {
        await assert.rejects(c.publishAsync(STORED_FEED_TOPIC, forged, { qos: 1 }), (e: { code?: number }) => e.code === NOT_AUTHORIZED, `${service} on ${url}`);
      } finally {
        await c.endAsync(true);
      }
    }
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(!feed.some(({ message }) => message.source === 'forger'));
  });

  it('the feed never crosses the bridge to the DMZ broker', async () => {
    // What the DMZ broker received, from its own $SYS counter (read with the monitor certificate,
    // which may read $SYS there): a message that crossed would count, whatever the DMZ ACL then
    // did with it. Commit receipts, which the bridge does carry out, are the control.
    const monitor = await as('internal/monitor', stack.urls.dmzMqtt, 'feed-test-monitor');
    const distributor = await as('internal/distributor', stack.urls.internalMqtt, 'feed-test-publisher');
    try {
      let received: number | undefined;
      monitor.on('message', (_t, v) => (received = Number(v.toString())));
      await monitor.subscribeAsync('$SYS/broker/publish/messages/received', { qos: 0 });
      const start = await eventually(() => received, 15_000, 'the DMZ broker $SYS counter');
      const FEED = 300;
      const CONTROL = 100;
      const boot = newBoot();
      for (let i = 0; i < FEED; i++) distributor.publish(STORED_FEED_TOPIC, sealedFeed(key, { source: 'bridge-probe', boot, seq: i + 1 }), { qos: 0 });
      for (let i = 0; i < CONTROL; i++) await distributor.publishAsync(receiptTopic('bridge-probe'), 'x', { qos: 1 });
      // The control crossed (after the feed messages, on the same bridge connection)...
      await eventually(() => ((received ?? 0) - start >= CONTROL ? true : undefined), 20_000, 'the control messages to reach the DMZ broker');
      // ...and one more $SYS interval (5 s) for anything late.
      await new Promise((r) => setTimeout(r, 6000));
      const crossed = (received ?? 0) - start;
      // The rest of the stack publishes there too meanwhile (presence, statuses, security reports,
      // the bridge's notifications): 6 to 21 more were seen. Had the feed crossed, it would be 300 more.
      assert.ok(crossed < CONTROL + FEED / 2, `the DMZ broker received ${crossed} messages: ${CONTROL} control messages and not the ${FEED} feed ones`);
      assert.ok(feed.some(({ message }) => message.source === 'bridge-probe'), 'the feed messages were published (the console got them)');
    } finally {
      await monitor.endAsync(true);
      await distributor.endAsync(true);
    }
  });

  it('DISTRIBUTOR_FEED=off: a distributor that wrote everything published nothing', async () => {
    const dir = join(work.dir, 'stack', 'distributor-quiet', 'timeseries');
    const wrote = await eventually(() => {
      const r = readLocalStore(dir).filter((p) => p.measurement === 'readings' && p.tags.device === FIELD);
      return r.length >= 50 ? r : undefined;
    }, 20_000, 'the quiet distributor to write the readings');
    assert.ok(wrote.length >= 50);
    assert.deepEqual(feed.filter(({ message }) => message.source === 'distributor-quiet'), []);
    assert.ok(feed.some(({ message }) => message.source === 'distributor-1'), 'while the other one did');
  });
});
