import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect, connectAsync, type MqttClient } from 'mqtt';
import { Consumer } from '../../internal-network/distributor/consumer.ts';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import type { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import { InfluxV1Sink } from '../../internal-network/distributor/sinks/influx-v1.ts';
import { WriteBatcher } from '../../internal-network/distributor/write-batcher.ts';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import { loadDistributorConfig } from '../../internal-network/distributor/config.ts';
import { startDistributor } from '../../internal-network/distributor/distributor.ts';
import { gatewayPresenceTopic, statusTopic } from '../../shared/contract/topics.ts';
import { LIMITS } from '../../shared/limits.ts';
import { LogCapture } from '../helpers/embedded.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { createLogger } from '../../shared/logger.ts';
import { connectMqtt } from '../../shared/mqtt/connect.ts';
import { readMqttTls } from '../../shared/mqtt/settings.ts';
import { makeTestPki, serviceMqttSettings, tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';
import { eventually } from '../helpers/ws-device.ts';

const DB = 'stall';

describe('the distributor while InfluxDB is frozen (SIGSTOP: its connection open, no answer)', () => {
  let work: ReturnType<typeof tempDir>;
  const pki = makeTestPki([]);
  let broker: { url: string; tlsUrl?: string; process: ManagedProcess };
  let influx: InfluxV1;
  let publisher: MqttClient;
  before(async () => {
    work = tempDir('sink-stall');
    const server = pki.paths.service('internal/mosquitto');
    broker = await startMosquitto(work.dir, { ca: pki.paths.publicCa, cert: server.cert, key: server.key });
    influx = await InfluxV1.start(join(work.dir, 'influx'), DB);
    publisher = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'publisher' });
  });
  after(async () => {
    await influx?.process.resume().catch(() => undefined);
    await publisher?.endAsync();
    await influx?.process.stop();
    await broker?.process.stop();
    work?.cleanup();
    pki.cleanup();
  });

  /**
   * A consumer (keepalive 1 s: a ping every half second, the connection given up 1.5 s
   * after the broker's last word) whose messages are each one point written through the batcher into
   * the real InfluxDB (a request timeout of 500 ms), counting the copies in progress at once and
   * the topics written. `tls`: over mutual TLS, as the distributor connects (connectMqtt).
   */
  const stalledConsumer = (clientId: string, tls = false) => {
    const sink = new WriteBatcher(new InfluxV1Sink({ url: influx.url, database: DB, username: influx.user, password: influx.password, timeoutMs: 500 }), 5000, 2);
    const copies = { now: 0, most: 0 };
    const written: string[] = [];
    const handler = {
      handle: async (topic: string) => {
        copies.now++;
        copies.most = Math.max(copies.most, copies.now);
        try {
          await sink.write([{ measurement: 'readings', tags: { device: clientId }, fields: { v: 1 }, time: Date.now() }]);
        } finally {
          copies.now--;
        }
        written.push(topic);
        return { points: 1, files: 0 };
      },
      deadLetterReceipts: () => [],
    } as unknown as MessageHandler;
    const session = { keepalive: 1, properties: { sessionExpiryInterval: 300 }, reconnectPeriod: 200 };
    const client = tls
      ? connectMqtt(
          { url: broker.tlsUrl ?? '', ...readMqttTls(serviceMqttSettings(pki.paths, 'internal/distributor', broker.tlsUrl)), clientId, protocolVersion: 5, clean: false },
          createLogger('test', 'silent'),
          // A broker frozen takes in a connection (the kernel does) but never answers it: tried again after 2 s.
          { ...session, connectTimeout: 2000 },
        )
      : connect(broker.url, { protocolVersion: 5, clientId, clean: false, ...session });
    const consumer = new Consumer(client, handler, new DeadLetters(join(work.dir, `dead-letter-${clientId}`)), { initialMs: 50, maxMs: 200 }, undefined, createLogger('test', 'silent'));
    return { client, consumer, copies, written };
  };

  it('keeps one copy of each message in progress per connection, and its connection, however long the store is frozen', async () => {
    const { client, consumer, copies } = stalledConsumer('stalled-consumer');
    let closes = 0;
    client.on('close', () => closes++);
    try {
      await new Promise<void>((resolve) => client.once('connect', () => resolve()));
      await client.subscribeAsync('stall/#', { qos: 1 });
      await influx.process.pause();
      for (let i = 0; i < 3; i++) await publisher.publishAsync(`stall/${i}`, String(i), { qos: 1 });
      // Three times as long as mqtt.js waits for a sign of life (1.5 s) before it drops the connection.
      await new Promise((r) => setTimeout(r, 4500));
      const stalled = { closes, most: copies.most, retries: consumer.stats.retries };
      await influx.process.resume();
      await eventually(() => (consumer.stats.messages >= 3 ? true : undefined), 20_000, 'all three written after the store came back');
      assert.equal(stalled.closes, 0, `the connection was kept while the store was frozen (${JSON.stringify(stalled)})`);
      assert.ok(stalled.retries >= 3, 'the write was retried meanwhile');
      assert.equal(copies.most, 1, 'one message in progress at a time on the connection');
      assert.equal(consumer.stats.messages, 3, 'each message written once');
    } finally {
      consumer.stop();
      client.end(true);
    }
  });

  it('abandons a message in progress whose connection closed: the copy the broker delivers again is the one written and acknowledged', async () => {
    const { client, consumer, copies } = stalledConsumer('reconnected-consumer');
    try {
      await new Promise<void>((resolve) => client.once('connect', () => resolve()));
      await client.subscribeAsync('again/#', { qos: 1 });
      await influx.process.pause();
      await publisher.publishAsync('again/0', '0', { qos: 1 });
      await eventually(() => (consumer.stats.retries >= 2 ? true : undefined), 10_000, 'the write retried');
      // The connection lost (as to a broker restart or a network fault) with the message in progress.
      const reconnected = new Promise<void>((resolve) => client.once('connect', () => resolve()));
      client.stream.destroy();
      await reconnected;
      // Longer than an attempt (the request's 500 ms timeout): the first copy's attempt is over.
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal(copies.now, 1, 'only the copy delivered again is in progress');
      await influx.process.resume();
      await eventually(() => (consumer.stats.messages >= 1 ? true : undefined), 20_000, 'written after the store came back');
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(consumer.stats.messages, 1, 'written once');
    } finally {
      consumer.stop();
      await client.endAsync();
    }
    // Acknowledged: the session, taken up again, has nothing to deliver again.
    const again = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'reconnected-consumer', clean: false, properties: { sessionExpiryInterval: 300 } });
    const redelivered: string[] = [];
    again.on('message', (topic) => redelivered.push(topic));
    await new Promise((r) => setTimeout(r, 1000));
    await again.endAsync();
    assert.deepEqual(redelivered, []);
  });

  // A connection can die without a word (a network partition, the broker's host frozen): no FIN, no
  // RST. mqtt.js hands the broker's answers to pings over only after the message in progress, so
  // the consumer judges the connection by the bytes its socket reads: nothing for 1.5 keepalives,
  // and it is closed, the message in progress abandoned (the broker delivers it again).
  it('closes a connection on which the broker fell silent (frozen) with a message in progress, within two keepalives, and stops retrying that copy: the one delivered again is written, once', async () => {
    const { client, consumer, written } = stalledConsumer('silent-broker-consumer', true);
    const closes: number[] = [];
    client.on('close', () => closes.push(performance.now()));
    try {
      await new Promise<void>((resolve) => client.once('connect', () => resolve()));
      await client.subscribeAsync('silent/#', { qos: 1 });
      await influx.process.pause();
      await publisher.publishAsync('silent/0', '0', { qos: 1 });
      await eventually(() => (consumer.stats.retries >= 2 ? true : undefined), 10_000, 'the write retried');
      assert.equal(closes.length, 0, 'the connection kept while the broker answered');
      await broker.process.pause();
      const frozen = performance.now();
      await eventually(() => (closes.length > 0 ? true : undefined), 5_000, 'the connection closed after the broker fell silent');
      // The broker's last word came before it froze: 1.5 keepalives after it, and a check's delay.
      const tookMs = closes[0]! - frozen;
      assert.ok(tookMs <= 2_000, `closed ${Math.round(tookMs)} ms after the broker froze (keepalive 1 s)`);
      // The attempt in flight at the close ends with its request (500 ms); then no more.
      await new Promise((r) => setTimeout(r, 800));
      const retries = consumer.stats.retries;
      await new Promise((r) => setTimeout(r, 1_500));
      assert.equal(consumer.stats.retries, retries, 'the copy taken on the closed connection is no longer retried');
      await broker.process.resume();
      await eventually(() => (client.connected ? true : undefined), 10_000, 'connected again once the broker came back');
      await eventually(() => (consumer.stats.retries > retries ? true : undefined), 10_000, "the broker's new delivery retried");
      await influx.process.resume();
      await eventually(() => (consumer.stats.messages >= 1 ? true : undefined), 20_000, 'written after the store came back');
      await new Promise((r) => setTimeout(r, 1_000));
      assert.deepEqual(written, ['silent/0'], 'written once');
    } finally {
      await broker.process.resume();
      await influx.process.resume();
      consumer.stop();
      await client.endAsync();
    }
    // Acknowledged: the session, taken up again, has nothing to deliver again.
    const again = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'silent-broker-consumer', clean: false, properties: { sessionExpiryInterval: 300 } });
    const redelivered: string[] = [];
    again.on('message', (topic) => redelivered.push(topic));
    await new Promise((r) => setTimeout(r, 1000));
    await again.endAsync();
    assert.deepEqual(redelivered, []);
  });

  // Behind a message in progress the socket stops reading once its buffers hold more than mqtt.js
  // took (backpressure): the broker's answers to pings wait in the kernel behind the backlog. That is
  // no silence of the broker's, and the connection is kept.
  it('keeps its connection while a backlog larger than its socket reads at once waits behind a message in progress; each message written once, in order', async () => {
    const { client, consumer, written } = stalledConsumer('backlog-consumer', true);
    let closes = 0;
    client.on('close', () => closes++);
    try {
      await new Promise<void>((resolve) => client.once('connect', () => resolve()));
      await client.subscribeAsync('held/#', { qos: 1 });
      await influx.process.pause();
      // 1.9 MiB: past what the socket reads ahead (its 16 KiB and mqtt.js's), held in the kernel.
      for (let i = 0; i < 30; i++) await publisher.publishAsync(`held/${i}`, Buffer.alloc(64 * 1024, i), { qos: 1 });
      const stream = client.stream as unknown as { readableLength: number; readableHighWaterMark: number };
      await eventually(() => (stream.readableLength >= stream.readableHighWaterMark ? true : undefined), 5_000, 'the socket held back');
      // Three times as long as the broker may be silent before its connection is given up.
      await new Promise((r) => setTimeout(r, 4_500));
      assert.equal(closes, 0, 'the connection was kept');
      await influx.process.resume();
      await eventually(() => (written.length >= 30 ? true : undefined), 30_000, 'all written after the store came back');
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(closes, 0, 'the connection was kept');
      assert.deepEqual(written, Array.from({ length: 30 }, (_, i) => `held/${i}`), 'each message once, in order');
    } finally {
      await influx.process.resume();
      consumer.stop();
      await client.endAsync();
    }
  });

  it('logs the failed writes its consumers retry at most LIMITS.distributorRetryLogMaxPerWindow lines per window, all consumers together, each with its code', async () => {
    const logs = new LogCapture();
    const distributor = startDistributor(
      loadDistributorConfig({
        ...serviceMqttSettings(pki.paths, 'internal/distributor', broker.tlsUrl),
        MQTT_PROTOCOL_VERSION: '5',
        DISTRIBUTOR_CLIENT_ID: 'distributor-stall',
        DISTRIBUTOR_CONSUMERS: '8',
        DISTRIBUTOR_DEVICE_KEYS_DIR: join(pki.dir, 'internal', 'device-keys'),
        DISTRIBUTOR_STATE_DIR: join(work.dir, 'state'),
        DISTRIBUTOR_METRICS_PORT: 'off',
        DISTRIBUTOR_FEED: 'off',
        DISTRIBUTOR_RETRY_MAX_MS: '200',
        INFLUXDB_URL: influx.url,
        INFLUXDB_DATABASE: DB,
        INFLUXDB_USERNAME: influx.user,
        INFLUXDB_PASSWORD: influx.password,
        INFLUXDB_TIMEOUT_MS: '300',
        FILE_STORAGE_PATH: join(work.dir, 'files'),
        DEAD_LETTER_PATH: join(work.dir, 'dead-letters'),
      }),
      logs.logger,
      { processMetrics: false },
    );
    try {
      await distributor.ready;
      await influx.process.pause();
      // A gateway's presence each: one point, on every consumer (the broker shares them round robin).
      for (let i = 0; i < 16; i++) await publisher.publishAsync(gatewayPresenceTopic(`gw-${i}`), JSON.stringify({ v: 1, state: 'online', gatewayId: `gw-${i}`, since: Date.now() }), { qos: 1 });
      // Within one window (TIMINGS.floodLogIntervalMs, 10 s): a few dozen attempts of the consumers.
      await new Promise((r) => setTimeout(r, 3000));
      const retries = distributor.stats().retries;
      const lines = logs.lines.filter((l) => l.code === 'DISTRIBUTOR_WRITE_FAILED').length;
      await influx.process.resume();
      await eventually(() => (distributor.stats().messages >= 16 ? true : undefined), 20_000, 'every presence written after the store came back');
      assert.ok(retries >= 3 * LIMITS.distributorRetryLogMaxPerWindow, `the consumers retried (${retries} retries)`);
      assert.ok(lines >= 1 && lines <= LIMITS.distributorRetryLogMaxPerWindow, `${lines} lines for ${retries} retries`);
    } finally {
      await influx.process.resume();
      await distributor.close();
    }
  });

  // The last counts either are left for the stop's own write or went, once their second ended, with
  // a periodic write that is still in flight at the stop: lost the same way, and said so either way.
  for (const c of [
    { name: 'left for the stop', id: 'stop', settleMs: 0 },
    { name: 'taken by a periodic write still in flight at the stop', id: 'stop-in-flight', settleMs: 2_500 },
  ]) it(`stops within its close grace with counts of security refusals to write (${c.name}) and the store frozen; the counts are said lost`, async () => {
    const logs = new LogCapture();
    const distributor = startDistributor(
      loadDistributorConfig({
        ...serviceMqttSettings(pki.paths, 'internal/distributor', broker.tlsUrl),
        MQTT_PROTOCOL_VERSION: '5',
        DISTRIBUTOR_CLIENT_ID: `distributor-${c.id}`,
        // Its own group: the earlier distributor's sessions (8 consumers) are kept by the broker, and
        // would be dealt their share of the presences.
        DISTRIBUTOR_SHARE_GROUP: `distributors-${c.id}`,
        DISTRIBUTOR_DEVICE_KEYS_DIR: join(pki.dir, 'internal', 'device-keys'),
        DISTRIBUTOR_REQUIRE_SIGNATURES: 'true',
        DISTRIBUTOR_STATE_DIR: join(work.dir, `state-${c.id}`),
        DISTRIBUTOR_METRICS_PORT: 'off',
        DISTRIBUTOR_FEED: 'off',
        INFLUXDB_URL: influx.url,
        INFLUXDB_DATABASE: DB,
        INFLUXDB_USERNAME: influx.user,
        INFLUXDB_PASSWORD: influx.password,
        // Far longer than the stop may take: a stop that waits for the request is seen.
        INFLUXDB_TIMEOUT_MS: '30000',
        FILE_STORAGE_PATH: join(work.dir, `files-${c.id}`),
        DEAD_LETTER_PATH: join(work.dir, `dead-letters-${c.id}`),
      }),
      logs.logger,
      { processMetrics: false },
    );
    let closed = false;
    try {
      await distributor.ready;
      await influx.process.pause();
      // The presence of an id nobody registered is counted (refusal-tally.ts), not stored: the first
      // count goes to the frozen store with the periodic write, the last is left for the stop (or,
      // past the end of its second and the tick after it, within 2 s: taken by a periodic write too).
      const ghost = (i: number) => publisher.publishAsync(statusTopic(`ghost-${c.id}-${i}`), JSON.stringify({ v: 1, state: 'online', gatewayId: 'gw-1', at: Date.now() }), { qos: 1 });
      await ghost(1);
      await eventually(() => (distributor.verifier.stats.refused >= 1 ? true : undefined), 10_000, 'the first presence counted');
      await new Promise((r) => setTimeout(r, 1500));
      await ghost(2);
      await eventually(() => (distributor.verifier.stats.refused >= 2 ? true : undefined), 10_000, 'the last presence counted');
      await new Promise((r) => setTimeout(r, c.settleMs));
      const started = performance.now();
      await distributor.close();
      closed = true;
      const tookMs = performance.now() - started;
      // A bound on a hang, not a measure of speed: the grace is TIMINGS.closeGraceMs (2 s), the
      // request timeout 30 s.
      assert.ok(tookMs < 10_000, `the stop took ${Math.round(tookMs)} ms`);
      assert.ok(
        logs.lines.some((l) => typeof l.msg === 'string' && l.msg.startsWith('counts of security refusals not written: the database did not answer before the stop')),
        'the counts left unwritten are said so',
      );
    } finally {
      await influx.process.resume();
      if (!closed) await distributor.close();
    }
  });
});
