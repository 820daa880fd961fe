import assert from 'node:assert/strict';
import { createSecretKey, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../embedded/broker.ts';
import { receiptTopic } from '../../shared/contract/topics.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { FEED_BOOT_PATTERN, parseStoredFeed, STORED_FEED_TOPIC, StoredFeedReader, type StoredFeedMessage } from '../../internal-network/shared/stored-feed.ts';
import { StoredFeedPublisher, type StoredListener } from '../../internal-network/distributor/stored-feed-publisher.ts';
import { WriteBatcher } from '../../internal-network/distributor/write-batcher.ts';
import { LocalPointStore, readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import { InfluxV1Sink } from '../../internal-network/distributor/sinks/influx-v1.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { eventually } from '../helpers/ws-device.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { feedKeyOf } from '../helpers/stored-feed.ts';

const log = createLogger('test', 'silent');
const reading = (i: number, device = 'pub-dev'): StoredPoint => ({ measurement: 'readings', tags: { device }, fields: { i, ok: true }, time: 1_740_787_200_000 + i });
const status = (i: number): StoredPoint => ({ measurement: 'device_status', tags: { device: `dev-${i}`, gateway: 'gateway-1' }, fields: { state: 'online' }, time: 1_740_787_200_000 + i });
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The stored-feed publisher and its place in the write path, on the embedded broker (aedes, mTLS,
 * the access policy of shared/acl.ts): a distributor connection publishes, a console connection
 * reads every message as the console does (StoredFeedReader: its MAC under the PKI's stored-feed
 * key, its time, its sequence number).
 */
describe('the stored-feed publisher', () => {
  const pki = makeTestPki([]);
  const key = feedKeyOf(pki.paths);
  const reader = new StoredFeedReader(key);
  /** the bytes each message had on the wire */
  const bytesOf = new WeakMap<StoredFeedMessage, number>();
  const raw: Buffer[] = [];
  let broker: EmbeddedBroker;
  let url: string;
  let publisherClient: MqttClient;
  let consoleClient: MqttClient;
  const received: StoredFeedMessage[] = [];
  const as = (service: 'internal/distributor' | 'internal/console', clientId: string) => {
    const s = pki.paths.service(service);
    return connectAsync(url, { ca: readFileSync(pki.paths.publicCa), cert: readFileSync(s.cert), key: readFileSync(s.key), clientId, protocolVersion: 4, reconnectPeriod: 0 });
  };
  /** What the console received from `source` once `n` points (or more) of it arrived. */
  const receivedFrom = (source: string, n: number) =>
    eventually(() => {
      const got = received.filter((m) => m.source === source);
      return got.reduce((k, m) => k + m.points.length, 0) >= n ? got : undefined;
    }, 10_000, `${n} points from ${source}`);

  before(async () => {
    broker = await startEmbeddedBroker({
      host: '127.0.0.1',
      port: 0,
      setting: 'EMBEDDED_MQTT_PORT',
      tls: { ca: readFileSync(pki.paths.publicCa, 'utf8'), cert: readFileSync(pki.paths.service('internal/mosquitto').cert, 'utf8'), key: readFileSync(pki.paths.service('internal/mosquitto').key, 'utf8') },
      logger: log,
    });
    url = `mqtts://127.0.0.1:${broker.port}`;
    publisherClient = await as('internal/distributor', 'feed-publisher');
    consoleClient = await as('internal/console', 'feed-console');
    consoleClient.on('message', (_t, payload) => {
      raw.push(payload);
      const m = reader.read(payload);
      bytesOf.set(m, payload.length);
      received.push(m);
    });
    await consoleClient.subscribeAsync(STORED_FEED_TOPIC, { qos: 0 });
  });
  after(async () => {
    await consoleClient?.endAsync(true);
    await publisherClient?.endAsync(true);
    await broker?.close();
    pki.cleanup();
  });

  it('gathers what is offered for one tick and sends it in messages of at most feedPointsPerMessage points', async () => {
    const feed = new StoredFeedPublisher([publisherClient], { source: 'coalesce', key }, log);
    const started = Date.now();
    const n = LIMITS.feedPointsPerMessage * 2 + 7;
    for (let i = 0; i < n; i += 100) feed.offer(Array.from({ length: Math.min(100, n - i) }, (_, k) => reading(i + k)));
    const got = await receivedFrom('coalesce', n);
    assert.ok(Date.now() - started >= 200, 'held for the coalescing tick');
    assert.deepEqual(got.map((m) => m.points.length), [LIMITS.feedPointsPerMessage, LIMITS.feedPointsPerMessage, 7]);
    assert.deepEqual(got.flatMap((m) => m.points), Array.from({ length: n }, (_, i) => reading(i)), 'every point, unchanged, in order');
    assert.ok(got.every((m) => m.dropped === 0));
    assert.deepEqual(feed.stats, { messages: 3, points: n, dropped: 0 });
    feed.close();
  });

  it('seals every message: one run, numbered from 1, sent now, its MAC under the stored-feed key, which another key does not verify', async () => {
    const feed = new StoredFeedPublisher([publisherClient], { source: 'sealed', key }, log);
    const started = Date.now();
    feed.offer([reading(1)]);
    await receivedFrom('sealed', 1);
    feed.offer([reading(2)]);
    const got = await receivedFrom('sealed', 2);
    assert.deepEqual(got.map((m) => m.seq), [1, 2]);
    assert.equal(new Set(got.map((m) => m.boot)).size, 1);
    assert.match(got[0]?.boot ?? '', FEED_BOOT_PATTERN);
    assert.ok(got.every((m) => m.sent >= started && m.sent <= Date.now()));
    const wire = raw.find((b) => b.includes('"source":"sealed"')) ?? assert.fail('not seen');
    assert.match(wire.toString('utf8'), /^\{"v":2,"mac":"[A-Za-z0-9_-]{43}","body":\{"source":"sealed","boot":"/);
    assert.throws(() => parseStoredFeed(wire, createSecretKey(randomBytes(32))), (e: unknown) => isFieldStreamError(e, 'STORED_FEED_UNAUTHENTICATED'));
    // Another publisher (a restart) is another run, numbered from 1 again.
    const again = new StoredFeedPublisher([publisherClient], { source: 'sealed', key }, log);
    again.offer([reading(3)]);
    const after = await receivedFrom('sealed', 3);
    assert.equal(after[2]?.seq, 1);
    assert.notEqual(after[2]?.boot, after[0]?.boot);
    feed.close();
    again.close();
  });

  it('splits by size too: no message over its byte limit; a point too large for any is left out and counted', async () => {
    const maxMessageBytes = 200_000;
    const feed = new StoredFeedPublisher([publisherClient], { source: 'sized', key, maxMessageBytes }, log);
    const wide = (i: number): StoredPoint => ({ measurement: 'events', tags: { device: 'pub-dev', event_type: 'note' }, fields: { message: 'x'.repeat(60_000) }, time: i });
    const huge: StoredPoint = { measurement: 'events', tags: { device: 'pub-dev' }, fields: Object.fromEntries(Array.from({ length: 4 }, (_, i) => [`f${i}`, 'y'.repeat(60_000)])), time: 99 };
    feed.offer([wide(1), huge, ...Array.from({ length: 11 }, (_, i) => wide(10 + i))]);
    const got = await receivedFrom('sized', 12);
    assert.deepEqual(got.map((m) => m.points.length), [3, 3, 3, 3], 'three 60 kB points fit in 200 kB, four do not');
    for (const m of got) assert.ok((bytesOf.get(m) ?? Infinity) <= maxMessageBytes, 'sealed, on the wire');
    assert.ok(!got.some((m) => m.points.some((p) => p.time === 99)), 'the 240 kB point is not in the feed');
    assert.equal(got[0]?.dropped, 1, 'and the first message says one was left out');
    assert.equal(feed.stats.dropped, 1);
    feed.close();
  });

  it('leaves out (and counts) a point the console would refuse, so it cannot spoil its message', async () => {
    const feed = new StoredFeedPublisher([publisherClient], { source: 'checked', key }, log);
    feed.offer([reading(1), { ...reading(2), fields: { bad: Number.NaN } }, reading(3)]);
    const [m] = await receivedFrom('checked', 2);
    assert.deepEqual(m?.points, [reading(1), reading(3)]);
    assert.equal(m?.dropped, 1);
    feed.close();
  });

  it('without a broker connection: drops and counts, queues nothing, and the next message says how many', async () => {
    const clients: MqttClient[] = [];
    const dropped: number[] = [];
    const published: number[] = [];
    const feed = new StoredFeedPublisher(clients, { source: 'offline', key }, log, { dropped: { inc: (n) => dropped.push(n) }, published: { inc: (n) => published.push(n) } });
    // A connection that is not up: to a port where nothing listens.
    const down = await import('mqtt').then(({ connect }) => connect(`mqtts://127.0.0.1:1`, { reconnectPeriod: 0, connectTimeout: 1000 }));
    down.on('error', () => undefined);
    clients.push(down);
    feed.offer([reading(1), reading(2), reading(3)]);
    await pause(400);
    assert.equal(feed.stats.dropped, 3);
    assert.deepEqual(dropped, [3]);
    assert.equal(received.filter((m) => m.source === 'offline').length, 0);
    // A connection comes up (listed first or later: the first usable one is taken).
    clients.push(publisherClient);
    feed.offer([reading(4)]);
    const [m] = await receivedFrom('offline', 1);
    assert.deepEqual(m?.points, [reading(4)]);
    assert.equal(m?.dropped, 3);
    assert.deepEqual(published, [1]);
    down.end(true);
    feed.close();
  });

  it('adds nothing to a connection whose socket is backed up', async () => {
    const busy = await as('internal/distributor', 'feed-busy');
    try {
      const feed = new StoredFeedPublisher([busy], { source: 'busy', key }, log);
      feed.offer([reading(1)]);
      // 4 MiB in the socket, written in this very turn: nothing of it can have drained before
      // close() publishes what waits, synchronously.
      busy.publish(receiptTopic('nobody-reads-this'), Buffer.alloc(4 * 1024 * 1024, 0x61), { qos: 0 });
      assert.ok((busy.stream.writableLength ?? 0) > LIMITS.feedSocketBufferMaxBytes, 'the socket is backed up');
      feed.close();
      assert.deepEqual(feed.stats, { messages: 0, points: 0, dropped: 1 });
      await pause(300);
      assert.equal(received.filter((m) => m.source === 'busy').length, 0);
    } finally {
      await busy.endAsync(true);
    }
  });

  it('over its pending cap leaves readings out first, and keeps the rarer kinds while the extra room lasts', async () => {
    const feed = new StoredFeedPublisher([publisherClient], { source: 'capped', key, maxPendingPoints: 10, extraPendingPoints: 3 }, log);
    feed.offer(Array.from({ length: 8 }, (_, i) => reading(i)));
    feed.offer([reading(8), reading(9), reading(10), status(1), reading(11), status(2), status(3), status(4)]);
    const got = await receivedFrom('capped', 13);
    const points = got.flatMap((m) => m.points);
    assert.deepEqual(points.filter((p) => p.measurement === 'readings').map((p) => p.fields.i), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(points.filter((p) => p.measurement === 'device_status').map((p) => p.tags.device), ['dev-1', 'dev-2', 'dev-3']);
    assert.equal(got[0]?.dropped, 3, 'readings 10 and 11, and the fourth status');
    feed.close();
  });

  it("bounds the DMZ's word per tick: a flood of gateways' reports and presences leaves the devices' health and the distributor's findings in", async () => {
    // What a taken DMZ can forge at will (presences, gateways' security reports naming registered
    // devices) filled the room every tick: the health the devices signed and what the distributor
    // found itself were left out of the console's live view.
    const t = 1_740_787_200_000;
    const report = (i: number): StoredPoint => ({ measurement: 'security_events', tags: { device: `dev-${i}`, reason: 'GATEWAY_RATE_LIMITED', source: 'gateway' }, fields: { count: 1 }, time: t + i });
    const health = (i: number): StoredPoint => ({ measurement: 'device_health', tags: { device: `dev-${i}` }, fields: { uptime_s: i }, time: t + i });
    const finding = (i: number): StoredPoint => ({ measurement: 'security_events', tags: { device: `dev-${i}`, reason: 'SECURITY_BAD_SIGNATURE', source: 'distributor' }, fields: { count: 1 }, time: t + i });
    const feed = new StoredFeedPublisher([publisherClient], { source: 'dmz-word', key, maxPendingPoints: 10, extraPendingPoints: 5, maxPendingDmzWordPoints: 4 }, log);
    feed.offer(Array.from({ length: 12 }, (_, i) => report(i)));
    feed.offer([status(1), status(2)]);
    feed.offer([health(1), health(2), finding(1)]);
    const got = await receivedFrom('dmz-word', 7);
    const points = got.flatMap((m) => m.points);
    assert.deepEqual(points.filter((p) => p.tags.source === 'gateway').map((p) => p.tags.device), ['dev-0', 'dev-1', 'dev-2', 'dev-3'], 'the first four of the DMZ\'s word');
    assert.deepEqual(points.filter((p) => p.measurement === 'device_status'), [], 'no room left for more of it this tick');
    assert.deepEqual(points.filter((p) => p.measurement === 'device_health').map((p) => p.tags.device), ['dev-1', 'dev-2']);
    assert.deepEqual(points.filter((p) => p.tags.source === 'distributor').map((p) => p.tags.reason), ['SECURITY_BAD_SIGNATURE']);
    assert.equal(got[0]?.dropped, 10, 'eight reports and two presences');
    feed.close();
  });
});

describe('the write path offers to the feed what the database took, and only that', () => {
  const tmp = tempDir('feed-batcher');
  after(() => tmp.cleanup());
  const points = [reading(1), reading(2), status(3)];

  /** Records what is offered, and what the store held at that moment. */
  function recorder(dir?: string): StoredListener & { offers: { points: readonly StoredPoint[]; storedThen: number }[] } {
    const offers: { points: readonly StoredPoint[]; storedThen: number }[] = [];
    return { offers, offer: (p) => offers.push({ points: p, storedThen: dir ? readLocalStore(dir).length : 0 }) };
  }

  it('a write that fails (the database is unreachable) offers nothing', async () => {
    const port = await freePort();
    const listener = recorder();
    const batcher = new WriteBatcher(new InfluxV1Sink({ url: `http://127.0.0.1:${port}`, database: 'nothing', timeoutMs: 2000 }), 100, 1, undefined, listener);
    await assert.rejects(batcher.write(points), (e: unknown) => isFieldStreamError(e, 'DISTRIBUTOR_WRITE_FAILED'));
    assert.deepEqual(listener.offers, []);
    await batcher.close();
  });

  it('a write that succeeds offers its points, already durable, and grouped writes offer all of theirs', async () => {
    const dir = join(tmp.dir, 'store');
    const listener = recorder(dir);
    const batcher = new WriteBatcher(new LocalPointStore(dir), 100, 1, undefined, listener);
    await batcher.write(points);
    assert.equal(listener.offers.length, 1);
    assert.deepEqual(listener.offers[0]?.points, points);
    assert.equal(listener.offers[0]?.storedThen, points.length, 'in the store when offered');
    // Three messages while one write is in flight: the next request carries the other two.
    await Promise.all([batcher.write([reading(10)]), batcher.write([reading(11)]), batcher.write([reading(12)])]);
    assert.deepEqual(listener.offers.flatMap((o) => o.points).map((p) => p.time), [...points, reading(10), reading(11), reading(12)].map((p) => p.time));
    await batcher.close();
  });

  it('a feed that throws cannot fail a write that succeeded', async () => {
    const batcher = new WriteBatcher(new LocalPointStore(join(tmp.dir, 'store2')), 100, 1, undefined, {
      offer() {
        throw new Error('feed broken');
      },
    });
    await batcher.write(points);
    await batcher.close();
  });
});
