import assert from 'node:assert/strict';
import { createSecretKey, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { parseExposition, sumOf } from '../../shared/metrics/exposition.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { commandTopic, receiptTopic, STORED_FEED_TOPIC } from '../../shared/contract/topics.ts';
import { loadConsoleConfig } from '../../internal-network/console/config.ts';
import { startConsole, type OperatorConsole } from '../../internal-network/console/console.ts';
import { StoredFeedPublisher } from '../../internal-network/distributor/stored-feed-publisher.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { RogueDmzBroker, startBridgedInternalMosquitto } from '../helpers/rogue-dmz-broker.ts';
import { feedKeyOf, newBoot, sealedFeed } from '../helpers/stored-feed.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'pump-7';
const reading = (pressure: number, time: number): StoredPoint => ({ measurement: 'readings', tags: { device: DEVICE }, fields: { pressure_bar: pressure }, time });

/**
 * Mosquitto applies no ACL to what arrives over a bridge configured in the broker, and the bridge's
 * `topic ... in` lines only choose what it subscribes to: a compromised DMZ server can publish on
 * the internal broker's stored-feed topic, retained too. This runs that attack on the real internal
 * Mosquitto with its own configuration (mosquitto.conf, acl, bridge.conf rendered by
 * render-bridges.sh) and the real console: what arrives without a valid MAC under the stored-feed
 * key, or not new, is refused, counted and logged, and the console goes on showing what the
 * distributor (its feed publisher, with the distributor's certificate) sealed. A second DMZ
 * server's broker is bridged to as well, to show what else such a broker can send (SECURITY.md).
 */
describe('the stored feed through a bridge to a compromised DMZ', () => {
  const pki = makeTestPki([DEVICE]);
  const tmp = tempDir('feed-bridge');
  const repo = join(import.meta.dirname, '..', '..');
  const logs = new LogCapture();
  const key = feedKeyOf(pki.paths);
  const rogue = new RogueDmzBroker(pki.paths.service('dmz/mosquitto'));
  /** a second DMZ server's broker, bridged to as well (DMZ_BROKER_HOSTS), which the first attacks through the internal broker */
  const other = new RogueDmzBroker(pki.paths.service('dmz/mosquitto'));
  let stopBroker: (() => Promise<void>) | undefined;
  let internalUrl = '';
  let operatorConsole: OperatorConsole;
  let distributor: MqttClient;
  let feed: StoredFeedPublisher;
  /** genuine messages as they travelled, captured with the console's identity */
  const captured: Buffer[] = [];
  let capture: MqttClient;

  const latest = () => operatorConsole.fleet.detail(DEVICE)?.latest?.fields.pressure_bar;
  const metrics = async () => parseExposition(await (await fetch(`${operatorConsole.metricsServer?.url}/metrics`)).text());
  const refused = async (reason: string) => sumOf(await metrics(), 'fieldstream_console_feed_refused_total', { reason }) ?? 0;
  /** Offers a genuine reading to the feed until the console shows it. */
  const shown = (pressure: number) =>
    eventually(
      () => {
        if (latest() === pressure) return true;
        feed.offer([reading(pressure, Date.now())]);
        return undefined;
      },
      20_000,
      `the console to show the genuine reading ${pressure}`,
    );

  before(async () => {
    await rogue.listen();
    await other.listen();
    const internal = await startBridgedInternalMosquitto(repo, pki, tmp.dir, `localhost:${rogue.port},localhost:${other.port}`);
    internalUrl = internal.url;
    stopBroker = internal.stop;

    const as = (service: string, clientId: string) => {
      const s = pki.paths.service(service);
      return connectAsync(internalUrl, { ca: readFileSync(pki.paths.publicCa), cert: readFileSync(s.cert), key: readFileSync(s.key), clientId, protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000 });
    };
    distributor = await eventually(() => as('internal/distributor', 'distributor-1').catch(() => undefined), 10_000, 'the internal broker');
    feed = new StoredFeedPublisher([distributor], { source: 'distributor-1', key }, logs.logger);
    capture = await as('internal/console', 'feed-capture');
    capture.on('message', (_t, payload) => captured.push(payload));
    await capture.subscribeAsync(STORED_FEED_TOPIC, { qos: 0 });
    operatorConsole = await startConsole(
      loadConsoleConfig({
        MQTT_URL: internalUrl,
        MQTT_CA_FILE: pki.paths.publicCa,
        MQTT_CERT_FILE: pki.paths.service('internal/console').cert,
        MQTT_KEY_FILE: pki.paths.service('internal/console').key,
        CONSOLE_CLIENT_ID: 'console-bridge-test',
        CONSOLE_HOST: '127.0.0.1',
        CONSOLE_PORT: '0',
        CONSOLE_METRICS_HOST: '127.0.0.1',
        CONSOLE_METRICS_PORT: '0',
        CONSOLE_MANAGE_API: 'off',
        CONSOLE_ANOMALY: 'off',
        COMMAND_API_TOKEN: 'a'.repeat(32),
        CONSOLE_DEVICE_KEYS_DIR: join(pki.dir, 'internal', 'device-keys'),
        CONSOLE_REVOKED_DEVICES_FILE: join(pki.dir, 'internal', 'revoked-devices.txt'),
        CONSOLE_DEVICE_TOKENS_FILE: join(tmp.dir, 'no-tokens.json'),
        CONSOLE_STORED_FEED_KEY_FILE: pki.paths.storedFeedKey,
        TIMESERIES_LOCAL_PATH: join(tmp.dir, 'timeseries'),
      }),
      logs.logger,
      { processMetrics: false },
    );
    // The bridge dialled the rogue broker and subscribed: from now on it delivers what that one sends.
    const filters = await Promise.race([rogue.subscribed, new Promise<never>((_, no) => setTimeout(() => no(new Error('the bridge never subscribed')), 30_000))]);
    await Promise.race([other.subscribed, new Promise<never>((_, no) => setTimeout(() => no(new Error('the second bridge never subscribed')), 30_000))]);
    assert.ok(!filters.some((f) => f.includes('internal')), 'the bridge does not even subscribe to the feed');
  });
  after(async () => {
    feed?.close();
    await operatorConsole?.close();
    await capture?.endAsync(true);
    await distributor?.endAsync(true);
    await stopBroker?.();
    await rogue.close();
    await other.close();
    tmp.cleanup();
    pki.cleanup();
  });

  it('refuses what the DMZ publishes on the feed topic (STORED_FEED_UNAUTHENTICATED), counted and logged, while the genuine feed is shown', async () => {
    await shown(1.0);
    const taken = sumOf(await metrics(), 'fieldstream_console_feed_messages_total') ?? 0;
    const future = Date.now() + 60_000; // newer than anything genuine: had one been taken, it would stay the latest
    // What the review's forger sent: a message of the first version, retained.
    rogue.inject(STORED_FEED_TOPIC, JSON.stringify({ v: 1, source: 'distributor-1', dropped: 0, points: [reading(999, future)] }), true);
    // The new layout, sealed under a key of the attacker's own.
    rogue.inject(STORED_FEED_TOPIC, sealedFeed(createSecretKey(randomBytes(32)), { source: 'distributor-1', points: [reading(998, future)] }));
    // A genuine message's seal on a body altered afterwards.
    rogue.inject(STORED_FEED_TOPIC, sealedFeed(key, { source: 'distributor-1', points: [reading(1.0, future)] }).toString('latin1').replace('"pressure_bar":1', '"pressure_bar":997'));
    await eventually(async () => ((await refused('STORED_FEED_UNAUTHENTICATED')) >= 3 ? true : undefined), 15_000, 'the three forged messages refused');

    await shown(1.1);
    assert.equal(latest(), 1.1, 'the genuine reading, not a forged one');
    const after = await metrics();
    assert.equal(sumOf(after, 'fieldstream_console_feed_refused_total', { reason: 'STORED_FEED_UNAUTHENTICATED' }), 3);
    assert.ok((sumOf(after, 'fieldstream_console_feed_messages_total') ?? 0) > taken, 'genuine messages still taken');
    const lines = logs.lines.filter((l) => l.code === 'STORED_FEED_UNAUTHENTICATED');
    assert.ok(lines.length >= 1 && lines.every((l) => l.topic === STORED_FEED_TOPIC && l.msg === 'stored-feed message refused'), JSON.stringify(lines[0]));
    assert.ok(lines.some((l) => /version 1, without a MAC/.test(String(l.err))), 'the v1 forgery named as such');
    assert.ok(operatorConsole.mqtt.connected, 'the console stays up and connected');
  });

  it('refuses a genuine message sent again through the bridge (STORED_FEED_REPLAYED), or sent long before (STORED_FEED_STALE)', async () => {
    await shown(1.2);
    const genuine = captured.find((b) => b.includes('"pressure_bar":1.2')) ?? assert.fail('the genuine message was not captured');
    await shown(1.3);
    const before = await metrics();
    // Sent again: what it says is old now (1.2 after 1.3), and it was taken once already.
    rogue.inject(STORED_FEED_TOPIC, genuine);
    // Sealed under the right key (a message taken off the internal network) but sent long ago.
    rogue.inject(STORED_FEED_TOPIC, sealedFeed(key, { source: 'distributor-1', boot: newBoot(), sent: Date.now() - 2 * TIMINGS.feedMaxAgeMs, points: [reading(0.1, Date.now() + 60_000)] }));
    await eventually(async () => ((await refused('STORED_FEED_REPLAYED')) >= 1 && (await refused('STORED_FEED_STALE')) >= 1 ? true : undefined), 15_000, 'the replayed and the old message refused');
    const after = await metrics();
    assert.equal(sumOf(after, 'fieldstream_console_feed_messages_total'), sumOf(before, 'fieldstream_console_feed_messages_total'), 'neither taken');
    assert.equal(latest(), 1.3);
    assert.ok(logs.codes().includes('STORED_FEED_REPLAYED') && logs.codes().includes('STORED_FEED_STALE'));
  });

  it('brings in any other topic too, $SYS included: what SECURITY.md says the broker exporter cannot trust', async () => {
    const m = pki.paths.service('internal/monitor');
    const monitor = await connectAsync(internalUrl, { ca: readFileSync(pki.paths.publicCa), cert: readFileSync(m.cert), key: readFileSync(m.key), clientId: 'feed-bridge-monitor', protocolVersion: 5, reconnectPeriod: 0 });
    try {
      const seen: string[] = [];
      monitor.on('message', (t, v) => seen.push(`${t}=${v.toString()}`));
      await monitor.subscribeAsync('$SYS/broker/connection/#', { qos: 0 });
      rogue.inject('$SYS/broker/connection/fieldstream-bridge-2/state', '1', true);
      await eventually(() => (seen.includes('$SYS/broker/connection/fieldstream-bridge-2/state=1') ? true : undefined), 10_000, 'the forged bridge state on the internal broker');
    } finally {
      await monitor.endAsync(true);
    }
  });

  it('carries commands and commit receipts one DMZ broker sends out to the other DMZ servers\' brokers: what their devices\' keys must hold (SECURITY.md)', async () => {
    rogue.inject(commandTopic(DEVICE), '{"forged":true}');
    rogue.inject(receiptTopic('gateway-of-the-other-server'), '{"forged":true}');
    await eventually(() => (other.received.includes(commandTopic(DEVICE)) && other.received.includes(receiptTopic('gateway-of-the-other-server')) ? true : undefined), 10_000, 'the forged command and receipt at the other DMZ broker');
    assert.ok(!rogue.received.includes(commandTopic(DEVICE)), 'not sent back where they came from');
  });

  it('exposes every refusal reason from 0, so an alert sees the first', async () => {
    const samples = await metrics();
    for (const reason of ['STORED_FEED_TOO_LARGE', 'STORED_FEED_UNAUTHENTICATED', 'STORED_FEED_INVALID', 'STORED_FEED_STALE', 'STORED_FEED_REPLAYED']) {
      assert.notEqual(sumOf(samples, 'fieldstream_console_feed_refused_total', { reason }), undefined, reason);
    }
    assert.equal(sumOf(samples, 'fieldstream_console_feed_refused_total', { reason: 'STORED_FEED_INVALID' }), 0);
  });
});
