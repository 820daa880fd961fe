import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { VictoriaMetrics } from '../../scripts/local-stack/victoria-metrics.ts';
import { tempDir } from '../helpers/pki.ts';
import { serverWrites } from '../../bench/lib/influx-access-log.ts';
import { eventually } from '../helpers/ws-device.ts';
import { InfluxV1Sink } from '../../internal-network/distributor/sinks/influx-v1.ts';
import { InfluxV2Sink } from '../../internal-network/distributor/sinks/influx-v2.ts';
import { WriteBatcher } from '../../internal-network/distributor/write-batcher.ts';
import type { PointSink } from '../../internal-network/distributor/sinks/sink.ts';
import { FieldTypeGuard } from '../../internal-network/distributor/sinks/field-types.ts';
import { dataPoints, POINT_KEY, uplinkKey, type StoredPoint } from '../../internal-network/distributor/points.ts';
import { LocalPointStore, readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { parseEnvelope, UplinkEnvelopeSchema } from '../../shared/contract/envelope.ts';
import { gatewayUplinkTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';

const DB = 'sinks';
const point = (device: string, fields: StoredPoint['fields'], time: number): StoredPoint => ({ measurement: 'readings', tags: { device }, fields, time });
/**
 * A batcher taking points of any age: these tests date points at the epoch's first milliseconds,
 * each test its own; the distributor's bound on a point's age (DISTRIBUTOR_MAX_POINT_AGE_DAYS) has
 * its own test (line-protocol-influx.test.ts).
 */
const anyAge = (sink: PointSink, maxPoints = 5000, concurrency = 1) => new WriteBatcher(sink, maxPoints, concurrency, undefined, undefined, Number.POSITIVE_INFINITY);
const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof FieldStreamError ? e.code : String(e)));

describe('time-series sinks against real databases', () => {
  const work = tempDir('sinks');
  let influx: InfluxV1;
  let vm: VictoriaMetrics;
  before(async () => {
    // With its access log, as the sustained benchmark runs it (one test below reads it).
    influx = await InfluxV1.start(join(work.dir, 'influx'), DB, { accessLog: true });
    vm = await VictoriaMetrics.start(join(work.dir, 'vm'));
  });
  after(async () => {
    await influx.process.stop();
    await vm.process.stop();
    work.cleanup();
  });

  const v1 = (password = influx.password) => new InfluxV1Sink({ url: influx.url, database: DB, username: influx.user, password, timeoutMs: 5000 });

  it('InfluxDB 1.x: writes numbers, strings and booleans at millisecond timestamps; rewriting is harmless', async () => {
    const pts = [point('s1', { t: 21.5, label: 'a "quoted", string', ok: true }, 1700000000123), point('s1', { t: 22 }, 1700000000124)];
    await v1().write(pts);
    await v1().write(pts);
    const rows = await influx.rows(DB, `SELECT * FROM readings WHERE device = 's1'`);
    assert.deepEqual(rows, [
      { time: 1700000000123, device: 's1', t: 21.5, label: 'a "quoted", string', ok: true },
      { time: 1700000000124, device: 's1', t: 22, label: null, ok: null },
    ]);
  });

  it("InfluxDB 1.x: its access log gives the server's own time for each write request, as the sustained benchmark reads it", async () => {
    const from = Math.floor(Date.now() / 1000) * 1000;
    const before = serverWrites(readFileSync(influx.logFile, 'utf8')).length;
    await v1().write([point('s8', { v: 8 }, 1700000300000)]);
    await v1().write([point('s8', { v: 9 }, 1700000300001)]);
    // The log line is written as the response goes: it may follow the answer by a moment.
    const writes = await eventually(() => {
      const all = serverWrites(readFileSync(influx.logFile, 'utf8'));
      return all.length >= before + 2 ? all.slice(before) : undefined;
    });
    assert.equal(writes.length, 2, JSON.stringify(writes));
    for (const w of writes) {
      assert.equal(w.status, 204);
      assert.ok(w.ms > 0 && w.ms < 5_000, JSON.stringify(w));
      assert.ok(w.atMs >= from && w.atMs <= Date.now(), JSON.stringify(w));
    }
  });

  it('InfluxDB 1.x: a small request goes as it is, a large one gzipped; both are stored whole', async () => {
    const large = Array.from({ length: 2000 }, (_, i) => point('s6', { v: i, note: `reading ${i}` }, 1700000100000 + i));
    await v1().write([point('s7', { v: 7 }, 1700000200000)]);
    await v1().write(large);
    assert.deepEqual(await influx.rows(DB, `SELECT v FROM readings WHERE device = 's7'`), [{ time: 1700000200000, v: 7 }]);
    const rows = await influx.rows(DB, `SELECT count(v), sum(v) FROM readings WHERE device = 's6'`);
    assert.deepEqual([rows[0]?.count, rows[0]?.sum], [2000, (1999 * 2000) / 2]);
  });

  it('InfluxDB 1.x: bad data is DISTRIBUTOR_WRITE_REJECTED; wrong credentials and a stopped server are retried', async () => {
    await v1().write([point('s2', { mode: 'auto' }, 1)]);
    assert.equal(await code(v1().write([point('s2', { mode: 3 }, 2)])), 'DISTRIBUTOR_WRITE_REJECTED'); // field type conflict
    assert.equal(await code(v1('wrong').write([point('s2', { x: 1 }, 3)])), 'DISTRIBUTOR_WRITE_FAILED');
    await influx.process.stop();
    try {
      assert.equal(await code(v1().write([point('s2', { x: 1 }, 4)])), 'DISTRIBUTOR_WRITE_FAILED');
    } finally {
      await influx.restart();
    }
  });

  describe("the field-type guard: one device's value of another type cannot fix a field's type in a new shard for every device", () => {
    const TDB = 'types';
    const WEEK = 7 * 86_400_000;
    // Each a week apart, so each in a shard of its own (the default policy's shard groups are 7 days).
    const now = Date.now();
    const week = (n: number) => now - (10 - n) * WEEK;
    const silent = createLogger('test', 'silent');
    const sinkOf = (database = TDB, user = influx.user, password = influx.password) => new InfluxV1Sink({ url: influx.url, database, username: user, password, timeoutMs: 5000 });
    const guarded = (o: { database?: string; user?: string; password?: string; learnOnly?: boolean; maxEntries?: number; measurements?: string[] } = {}) => {
      const inner = sinkOf(o.database, o.user, o.password);
      return new FieldTypeGuard(inner, silent, o.learnOnly ? undefined : () => inner.fieldTypes(o.measurements ?? ['readings']), o.maxEntries);
    };
    const message = (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof FieldStreamError ? `${e.code}: ${e.message}` : String(e)));
    before(async () => {
      await influx.query(`CREATE DATABASE "${TDB}"`);
    });

    it('without it (the bare sink), the first value in a new shard wins: every honest device is refused there', async () => {
      await influx.query('CREATE DATABASE "types_bare"');
      const bare = sinkOf('types_bare');
      await bare.write([point('pump-1', { t: 21.5 }, week(0))]);
      await bare.write([point('bad-1', { t: 'hot' }, week(1))]);
      assert.equal(await code(bare.write([point('pump-2', { t: 22 }, week(1) + 1)])), 'DISTRIBUTOR_WRITE_REJECTED');
    });

    it('with it, read from the database at start: the value of another type is refused, the honest values of the new shard are written', async () => {
      await guarded().write([point('pump-1', { t: 21.5, mode: 'auto', ok: true }, week(0))]);
      // A restart: a new guard, which reads the types the database holds.
      const g = guarded();
      assert.match(await message(g.write([point('bad-1', { t: 'hot' }, week(1))])), /^DISTRIBUTOR_WRITE_REJECTED: field type conflict: field "t" of measurement "readings" is a string here, and the database holds it as a float/);
      assert.equal(g.size, 3, 'read from the database: t, mode, ok');
      assert.match(await message(g.write([point('bad-1', { ok: 1 }, week(1))])), /is a float here, and the database holds it as a boolean/);
      assert.match(await message(g.write([point('bad-1', { mode: false }, week(1))])), /is a boolean here, and the database holds it as a string/);
      assert.equal(await code(g.write([point('pump-2', { t: 22, mode: 'manual', ok: false, fresh: 'new field' }, week(1) + 1)])), 'ok');
      assert.deepEqual(await influx.rows(TDB, `SELECT t, mode, ok, fresh FROM readings WHERE time >= ${week(1)}ms AND time < ${week(2)}ms`), [
        { time: week(1) + 1, t: 22, mode: 'manual', ok: false, fresh: 'new field' },
      ]);
      // A field first written through the guard is kept to as well, learnt from a point of now (the
      // shard being written: one dated weeks ago, as above, teaches nothing).
      assert.equal(await code(g.write([point('bad-1', { fresh: 3 }, week(2))])), 'ok');
      assert.equal(await code(g.write([point('pump-2', { fresh: 'new field' }, now)])), 'ok');
      assert.match(await message(g.write([point('bad-1', { fresh: 4 }, week(2) + 1)])), /field "fresh" of measurement "readings" is a float here/);
    });

    it('through the write batcher, only the message holding the value of another type is refused (a dead letter); the others of its request are written', async () => {
      const batcher = new WriteBatcher(guarded(), 5000);
      const results = await Promise.all([
        code(batcher.write([point('pump-3', { t: 20 }, week(3))])),
        code(batcher.write([point('bad-2', { t: 'cold' }, week(3) + 1)])),
        code(batcher.write([point('pump-4', { t: 19 }, week(3) + 2)])),
      ]);
      assert.deepEqual(results, ['ok', 'DISTRIBUTOR_WRITE_REJECTED', 'ok']);
      assert.deepEqual((await influx.rows(TDB, `SELECT t FROM readings WHERE time >= ${week(3)}ms AND time < ${week(4)}ms`)).map((r) => r.t), [20, 19]);
    });

    it('a user without READ on the database: the guard learns from its writes and from the refusals, which name the type the shard holds', async () => {
      await influx.query(`CREATE USER "writer" WITH PASSWORD 'writer-password'`);
      await influx.query(`GRANT WRITE ON "${TDB}" TO "writer"`);
      const g = guarded({ user: 'writer', password: 'writer-password' });
      assert.equal(await code(g.write([point('pump-5', { level: 3.5 }, now + 3)])), 'ok');
      assert.equal(g.size, 1, 'SHOW FIELD KEYS refused (403): nothing read, the write learnt from');
      assert.match(await message(g.write([point('bad-3', { level: 'full' }, week(5))])), /field "level" of measurement "readings" is a string here, and the database holds it as a float/);
      // A guard that has not seen `t` written: the database refuses it in the shard of now, naming the type.
      await sinkOf().write([point('pump-5', { t: 20 }, now + 4)]);
      const learner = guarded({ learnOnly: true });
      assert.match(await message(learner.write([point('bad-3', { t: 'warm' }, now + 5)])), /^DISTRIBUTOR_WRITE_REJECTED: InfluxDB answered 400/);
      assert.match(await message(learner.write([point('bad-3', { t: 'warm' }, week(6))])), /field "t" of measurement "readings" is a string here, and the database holds it as a float/);
    });

    it('a field the database already holds with two types (in two shards) is not refused either way; past its bound the guard remembers no more fields', async () => {
      await sinkOf().write([point('old-1', { both: 1 }, week(0))]);
      await sinkOf().write([point('old-1', { both: 'one' }, week(1))]);
      const g = guarded();
      assert.equal(await code(g.write([point('old-2', { both: 2 }, week(6))])), 'ok');
      assert.equal(await code(g.write([point('old-2', { both: 'two' }, week(7))])), 'ok');
      const bounded = guarded({ maxEntries: 2 });
      await bounded.write([point('pump-6', { t: 1 }, week(7) + 1)]);
      assert.equal(bounded.size, 2, 'read from the database up to its bound');
    });

    it("reads the types of its own measurements only: another writer's fields in the same database count against none of its bounds; a name with regular-expression characters matches itself alone", async () => {
      const other = (measurement: string, fields: StoredPoint['fields'], time = now): StoredPoint => ({ measurement, tags: { host: 'h1' }, fields, time });
      await sinkOf().write([other('cpu', { usage: 0.5, note: 'x' }), other('mem', { free: 1 }), other('a.b', { n: 'text' }), other('aXb', { n: 1 }), other('x/y', { s: true })]);
      const g = guarded({ measurements: ['readings', 'a.b', 'x/y'] });
      await g.write([point('pump-8', { t: 1 }, now)]);
      assert.match(await message(g.write([other('a.b', { n: 2 })])), /field "n" of measurement "a.b" is a float here, and the database holds it as a string/);
      assert.match(await message(g.write([other('x/y', { s: 'yes' })])), /field "s" of measurement "x\/y" is a string here/);
      // In another shard (the database itself refuses another type in the same one).
      assert.equal(await code(g.write([other('aXb', { n: 'three' }, week(8)), other('cpu', { usage: 'busy' }, week(8))])), 'ok', 'aXb and cpu are not its measurements: not read, not refused');
    });

    it("a value dated long ago teaches the guard nothing: written into an old shard (or refused there), it cannot have the fleet's values refused in every other", async () => {
      // Learning from writes alone (a user without READ; InfluxDB 2.x): after a restart it knows nothing.
      const g = guarded({ learnOnly: true });
      // A device back-dates a string of a field no one wrote in that old shard: the database takes it there.
      assert.equal(await code(g.write([point('bad-4', { gauge: 'broken' }, week(0) + 7)])), 'ok');
      assert.equal(await code(g.write([point('pump-7', { gauge: 1.5 }, Date.now())])), 'ok', "the fleet's value of now is written");
      // What was learnt from a write of now is kept to.
      assert.match(await message(g.write([point('bad-4', { gauge: 'x' }, Date.now() + 1)])), /field "gauge" of measurement "readings" is a string here, and the database holds it as a float/);
      // A refusal in an old shard (which holds the string) names a type no newer shard holds.
      const r = guarded({ learnOnly: true });
      assert.equal(await code(r.write([point('bad-4', { gauge: 2 }, week(0) + 8)])), 'DISTRIBUTOR_WRITE_REJECTED');
      assert.equal(await code(r.write([point('pump-8', { gauge: 2.5 }, Date.now() + 2)])), 'ok', "the fleet's value of now is written after the old shard's refusal");
    });

    it('a database that does not exist yet at the first write: its types are read once it does, not learnt from writes alone', async () => {
      const later = 'types_later';
      const g = guarded({ database: later });
      assert.equal(await code(g.write([point('pump-9', { t: 20 }, week(0))])), 'DISTRIBUTOR_WRITE_FAILED');
      await influx.query(`CREATE DATABASE "${later}"`);
      // Written meanwhile by something else (restored from a backup, another distributor of the same database).
      await sinkOf(later).write([point('pump-9', { t: 20 }, week(0))]);
      assert.match(await message(g.write([point('bad-5', { t: 'hot' }, week(1))])), /field type conflict: field "t" of measurement "readings" is a string here, and the database holds it as a float/);
    });
  });

  it('InfluxDB 1.x: a database that accepts the connection and never answers is DISTRIBUTOR_WRITE_FAILED at the deadline', async () => {
    // A hung server (what a frozen database looks like from the network): a socket that stays silent.
    const silent = createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const port = (silent.address() as AddressInfo).port;
      const sink = new InfluxV1Sink({ url: `http://127.0.0.1:${port}`, database: DB, timeoutMs: 300 });
      const started = Date.now();
      assert.equal(await code(sink.write([point('s5', { v: 1 }, 1)])), 'DISTRIBUTOR_WRITE_FAILED');
      assert.ok(Date.now() - started < 5000, 'given up at its deadline');
      await sink.close();
    } finally {
      silent.closeAllConnections?.();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('the batcher combines concurrent writes into one request, and isolates a bad message', async () => {
    const batcher = anyAge(v1());
    await batcher.write([point('s3', { mode: 'manual' }, 1)]);
    const results = await Promise.all([
      code(batcher.write([point('s3', { v: 1 }, 10)])), // the four, written in one task, go together
      code(batcher.write([point('s3', { v: 2 }, 11)])),
      code(batcher.write([point('s3', { mode: 7 }, 12)])), // a type conflict
      code(batcher.write([point('s3', { v: 3 }, 13)])),
    ]);
    assert.deepEqual(results, ['ok', 'ok', 'DISTRIBUTOR_WRITE_REJECTED', 'ok']);
    // 1 + 1 combined (refused) + 4 one by one
    assert.equal(batcher.stats.requests, 6);
    const rows = await influx.rows(DB, `SELECT v FROM readings WHERE device = 's3' AND time >= 10ms`);
    assert.deepEqual(rows.map((r) => r.v), [1, 2, 3]);
  });

  it("a gateway's envelope: the section the database refuses goes alone to the dead letters, the others are written", async () => {
    const keys = tempDir('sections');
    try {
      const verifier = new MessageVerifier(new DeviceKeyRegistry(keys.dir), new ReplayWindows(join(keys.dir, 'replay')), { requireSignatures: false, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, createLogger('test', 'silent'));
      const handler = new MessageHandler(anyAge(v1()), new FileStore(join(keys.dir, 'files')), verifier);
      await v1().write([point('sect-b', { tone: 'high' }, 20)]); // "tone" is a string field from now on
      const section = (deviceId: string, payload: Record<string, unknown>) => ({ deviceId, messages: [{ messageId: `${deviceId}.1`, payload }] });
      const env = { v: 1, gatewayId: 'gw-s', dataType: 'timeseries', receivedAt: Date.now(), devices: [section('sect-a', { level: 1, timestamp: 21 }), section('sect-b', { tone: 2, timestamp: 22 }), section('sect-c', { level: 3, timestamp: 23 })] };
      const done = await handler.handle(gatewayUplinkTopic('gw-s'), Buffer.from(JSON.stringify(env)));
      assert.equal(done.points, 2);
      assert.deepEqual(done.deadLetters?.map((d) => [d.topic, d.error.code]), [[uplinkTopic('sect-b', 'timeseries'), 'DISTRIBUTOR_WRITE_REJECTED']]);
      const kept = parseEnvelope(UplinkEnvelopeSchema, done.deadLetters?.[0]?.payload ?? Buffer.alloc(0));
      assert.deepEqual([kept.deviceId, kept.gatewayId, kept.messages.map((m) => m.payload)], ['sect-b', 'gw-s', [{ tone: 2, timestamp: 22 }]], "the device's own envelope, as it would have come");
      const rows = await influx.rows(DB, `SELECT level, device FROM readings WHERE time >= 21ms AND time <= 23ms`);
      assert.deepEqual(rows.map((r) => [r.device, r.level]), [['sect-a', 1], ['sect-c', 3]]);
    } finally {
      keys.cleanup();
    }
  });

  it('distinct messages of one series at the same millisecond are a point each (events, files, responses, health), a copy is the same point, readings of one time merge', async () => {
    // InfluxDB keeps one point per (measurement, tags, time): two alarms of one device in the same
    // second (the contract's ISO timestamps are often to the second) were one point, the other
    // acknowledged and receipted, and lost.
    const keys = tempDir('collide');
    try {
      const verifier = new MessageVerifier(new DeviceKeyRegistry(keys.dir), new ReplayWindows(join(keys.dir, 'replay')), { requireSignatures: false, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, createLogger('test', 'silent'));
      const handler = new MessageHandler(new WriteBatcher(v1(), 5000), new FileStore(join(keys.dir, 'files')), verifier);
      const timestamp = '2024-01-01T12:00:00Z';
      const envOf = (dataType: string, payloads: object[]) => ({
        v: 1, gatewayId: 'gw-c', deviceId: 'collide-1', dataType, receivedAt: Date.now(),
        messages: payloads.map((payload, i) => ({ messageId: `${dataType}-${i}`, payload })),
      });
      const health = (queueMessages: number) => ({ uptimeSeconds: 10, queueMessages, queueBytes: 0, awaitingReceipt: 0, version: '1.0.0', intervalSeconds: 60, timestamp });
      const envelopes = [
        envOf('event', [{ eventType: 'alarm', severity: 'high', message: 'door open', timestamp }, { eventType: 'alarm', severity: 'high', message: 'window open', timestamp }]),
        envOf('file', [{ filename: 'a.txt', data: Buffer.from('first').toString('base64'), metadata: { timestamp } }, { filename: 'b.txt', data: Buffer.from('second').toString('base64'), metadata: { timestamp } }]),
        envOf('response', [{ commandId: 'cmd-1', status: 'failed', result: 'first try', timestamp }, { commandId: 'cmd-1', status: 'failed', result: 'second try', timestamp }]),
        envOf('health', [health(1), health(2)]),
        envOf('timeseries', [{ t: 1, timestamp }, { h: 2, timestamp }]),
      ];
      for (const env of envelopes) await handler.handle(uplinkTopic('collide-1', env.dataType as never), Buffer.from(JSON.stringify(env)));
      // Each delivered again (a lost PUBACK), and replayed from the dead letters: the same points.
      for (const env of envelopes) await handler.handle(uplinkTopic('collide-1', env.dataType as never), Buffer.from(JSON.stringify(env)));
      for (const env of envelopes.filter((e) => e.dataType !== 'file')) {
        const parsed = parseEnvelope(UplinkEnvelopeSchema, Buffer.from(JSON.stringify(env)));
        await v1().write(dataPoints(parsed as never, parsed.messages.map((m) => uplinkKey(m.messageId))));
      }
      const rows = async (measurement: string, field: string) =>
        (await influx.rows(DB, `SELECT "${field}" FROM "${measurement}" WHERE "device" = 'collide-1'`)).map((r) => [r.time, r[field]]);
      const at = Date.parse(timestamp);
      const sorted = (r: unknown[][]) => r.map((x) => String(x[1])).sort();
      assert.deepEqual(sorted(await rows('events', 'message')), ['door open', 'window open']);
      assert.deepEqual(sorted(await rows('files', 'filename')), ['a.txt', 'b.txt']);
      assert.deepEqual(sorted(await rows('command_responses', 'result')), ['first try', 'second try']);
      assert.deepEqual(sorted(await rows('device_health', 'queue_messages')), ['1', '2']);
      // Queried at millisecond precision, each is still at its message's millisecond.
      for (const [m, field] of [['events', 'message'], ['files', 'filename'], ['command_responses', 'result'], ['device_health', 'queue_messages']] as const) {
        assert.deepEqual((await rows(m, field)).map((r) => r[0]), [at, at], m);
        const window = await influx.rows(DB, `SELECT count("${field}") FROM "${m}" WHERE "device" = 'collide-1' AND time >= ${at}ms AND time < ${at + 1}ms`);
        assert.equal(window[0]?.count, 2, `${m}: both found in their millisecond`);
      }
      assert.deepEqual(await influx.rows(DB, `SELECT t, h FROM readings WHERE "device" = 'collide-1'`), [{ time: at, t: 1, h: 2 }], 'readings of one device and time are one point, as before');
    } finally {
      keys.cleanup();
    }
  });

  it("the local store: `npm run readings` shows two events of one time apart, a copy once, and its export imports as printed (precision=ns) a point each", async () => {
    const store = tempDir('local-export');
    try {
      const at = Date.parse('2024-01-01T12:00:00Z');
      const event = (key: string, message: string): StoredPoint => ({ measurement: 'events', tags: { device: 'local-1', event_type: 'alarm', severity: 'high' }, fields: { message }, time: at, [POINT_KEY]: key });
      const local = new LocalPointStore(store.dir);
      await local.write([event('m:e1', 'door open'), event('m:e2', 'window open')]);
      await local.write([event('m:e1', 'door open')]); // a redelivered message appends its point again
      await local.write([point('local-1', { t: 1 }, at), point('local-1', { h: 2 }, at)]);
      await local.close();
      assert.deepEqual(readLocalStore(store.dir).filter((p) => p.measurement === 'events').map((p) => p.fields.message).sort(), ['door open', 'window open']);
      assert.deepEqual(readLocalStore(store.dir).filter((p) => p.measurement === 'readings').map((p) => p.fields), [{ t: 1, h: 2 }]);
      // docs/operations.md: `npm run --silent readings -- --last 0 --line-protocol > export.lp`, then the 1.x import.
      const lp = execFileSync('npm', ['run', '--silent', 'readings', '--', '--last', '0', '--line-protocol', '--dir', store.dir], { encoding: 'utf8' });
      await influx.query('CREATE DATABASE "sensor_data"');
      const res = await fetch(`${influx.url}/write?db=sensor_data&precision=ns`, { method: 'POST', body: lp, headers: { authorization: `Basic ${Buffer.from(`${influx.user}:${influx.password}`).toString('base64')}` } });
      assert.equal(res.status, 204, await res.text());
      assert.deepEqual((await influx.rows('sensor_data', 'SELECT message FROM events')).map((r) => [r.time, r.message]).sort(), [[at, 'door open'], [at, 'window open']]);
      assert.deepEqual(await influx.rows('sensor_data', 'SELECT t, h FROM readings'), [{ time: at, t: 1, h: 2 }]);
    } finally {
      store.cleanup();
    }
  });

  it('a reading older than the retention policy is refused by InfluxDB (400, not a silent 204) and goes to the dead letters; a fresh one beside it is written', async () => {
    // InfluxDB 1.x drops points older than its retention policy's duration and says so ("partial
    // write: points beyond retention policy dropped=N", 400): a device back after a long time away
    // must not have its old readings receipted while the database threw them away.
    await influx.query('CREATE DATABASE "short" WITH DURATION 1h');
    const keys = tempDir('retention');
    try {
      const verifier = new MessageVerifier(new DeviceKeyRegistry(keys.dir), new ReplayWindows(join(keys.dir, 'replay')), { requireSignatures: false, freshnessMs: 30_000, maxDelayMs: 30 * 86_400_000 }, createLogger('test', 'silent'));
      const sink = new InfluxV1Sink({ url: influx.url, database: 'short', username: influx.user, password: influx.password, timeoutMs: 5000 });
      const handler = new MessageHandler(new WriteBatcher(sink, 5000), new FileStore(join(keys.dir, 'files')), verifier);
      const now = Date.now();
      const section = (deviceId: string, timestamp: number) => ({ deviceId, messages: [{ messageId: `${deviceId}.1`, payload: { level: 1, timestamp } }] });
      const env = { v: 1, gatewayId: 'gw-r', dataType: 'timeseries', receivedAt: now, devices: [section('back-after-2-days', now - 2 * 86_400_000), section('fresh', now)] };
      const done = await handler.handle(gatewayUplinkTopic('gw-r'), Buffer.from(JSON.stringify(env)));
      assert.equal(done.points, 1);
      assert.deepEqual(done.deadLetters?.map((d) => [d.topic, d.error.code]), [[uplinkTopic('back-after-2-days', 'timeseries'), 'DISTRIBUTOR_WRITE_REJECTED']]);
      assert.match(done.deadLetters?.[0]?.error.message ?? '', /beyond retention policy/);
      const rows = await influx.rows('short', 'SELECT level, device FROM readings');
      assert.deepEqual(rows.map((r) => r.device), ['fresh']);
      await sink.close();
    } finally {
      keys.cleanup();
    }
  });

  it('a request larger than the server takes (413) is halved until each part fits, and written; a point alone too large is refused (a dead letter), not retried for ever', async () => {
    // InfluxDB 1.x's max-body-size, as nginx's client_max_body_size, InfluxDB 3's
    // max-http-request-size or InfluxDB Cloud's limit: answered 413. (InfluxDB 1.6 measures the body
    // as sent, so a limit under the sink's gzip threshold shows it.)
    const small = await InfluxV1.start(join(work.dir, 'influx-small'), DB, { maxBodySize: 700 });
    try {
      const sink = new InfluxV1Sink({ url: small.url, database: DB, username: small.user, password: small.password, timeoutMs: 5000 });
      const note = 'n'.repeat(250);
      const batch = new WriteBatcher(sink, 5000);
      // Three messages of three devices gathered into one request of about 870 bytes.
      const written = await Promise.all(['a', 'b', 'c'].map((d, i) => code(batch.write([point(`big-${d}`, { v: i, note }, 1700000400000 + i)]))));
      assert.deepEqual(written, ['ok', 'ok', 'ok']);
      const rows = await small.rows(DB, `SELECT v FROM readings WHERE device =~ /^big-/`);
      assert.deepEqual(rows.map((r) => r.v), [0, 1, 2]);
      // A point larger than the limit by itself: nothing a retry can change until the limit is raised.
      const alone = await batch.write([point('big-d', { v: 3, note: 'n'.repeat(800) }, 1700000400003)]).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(alone instanceof FieldStreamError && alone.code === 'DISTRIBUTOR_WRITE_REJECTED', String(alone));
      assert.match(alone.message, /413/);
      await sink.close();
    } finally {
      await small.process.stop();
    }
  });

  it("behind Caddy's request_body limit (answered 502, not 413): a batch failing 502 is tried a few times, then halved until each part fits, every point written once; one point alone, or a store down behind it, is retried after a few requests", async () => {
    // Caddy 2.6 answers a body over `request_body max_size` 502, empty, when its reverse proxy reads
    // it (its log: "HTTP 413: http: request body too large"), just as it answers a store it cannot reach.
    const caddy = await caddyInFront(join(work.dir, 'caddy-limit'), [
      { upstream: influx.url, maxBytes: 700 },
      { upstream: `http://127.0.0.1:${await freePort()}` }, // nothing listens: a store down
    ]);
    const limited = await recordingProxy(caddy.urls[0] as string);
    const down = await recordingProxy(caddy.urls[1] as string);
    try {
      const through = (url: string) => new InfluxV1Sink({ url, database: DB, username: influx.user, password: influx.password, timeoutMs: 5000 });
      const sink = through(limited.url);
      const batch = new WriteBatcher(sink, 5000);
      const note = 'n'.repeat(250);
      // Three messages of three devices gathered into one request of about 870 bytes.
      const written = await Promise.all(['a', 'b', 'c'].map((d, i) => code(batch.write([point(`caddy-${d}`, { v: i, note }, 1700000450000 + i)]))));
      assert.deepEqual(written, ['ok', 'ok', 'ok']);
      assert.deepEqual((await influx.rows(DB, `SELECT v FROM readings WHERE device =~ /^caddy-/`)).map((r) => r.v), [0, 1, 2]);
      assert.ok(limited.writes.filter((w) => w.status === 502).length >= 2, `tried more than once before halving: ${JSON.stringify(limited.writes)}`);
      assert.deepEqual(limited.writes.filter((w) => w.status === 204).reduce((n, w) => n + w.lines, 0), 3, `every point sent in one request taken, once: ${JSON.stringify(limited.writes)}`);
      // Two points: the first goes alone, then the other, and no empty request.
      limited.writes.length = 0;
      assert.deepEqual(await Promise.all(['e', 'f'].map((d, i) => code(batch.write([point(`caddy-${d}`, { v: 5 + i, note: 'n'.repeat(400) }, 1700000450005 + i)])))), ['ok', 'ok']);
      assert.ok(limited.writes.every((w) => w.lines > 0), JSON.stringify(limited.writes));
      assert.equal(limited.writes.filter((w) => w.status === 204).reduce((n, w) => n + w.lines, 0), 2, JSON.stringify(limited.writes));
      assert.deepEqual((await influx.rows(DB, `SELECT v FROM readings WHERE device =~ /^caddy-[ef]$/`)).map((r) => r.v), [5, 6]);
      // A point over the limit by itself is answered 502 as a store down is: retried (kept), never a dead letter.
      limited.writes.length = 0;
      assert.equal(await code(batch.write([point('caddy-d', { v: 3, note: 'n'.repeat(800) }, 1700000450003)])), 'DISTRIBUTOR_WRITE_FAILED');
      assert.ok(limited.writes.length <= LIMITS.influxBadGatewayTries, `${limited.writes.length} requests`);
      // The store down behind Caddy: every request 502. A few requests, not one per line.
      const lines = Array.from({ length: 64 }, (_, i) => point('caddy-down', { v: i }, 1700000460000 + i));
      assert.equal(await code(through(down.url).write(lines)), 'DISTRIBUTOR_WRITE_FAILED');
      assert.ok(down.writes.length > 1 && down.writes.length <= LIMITS.influxBadGatewayTries + 1, `${down.writes.length} requests: ${JSON.stringify(down.writes)}`);
      assert.ok(down.writes.every((w) => w.status === 502));
      await sink.close();
    } finally {
      await Promise.all([limited.close(), down.close()]);
      await caddy.process.stop();
    }
  });

  it("envelopes of the largest legal shape (batchMaxMessages readings of readingMaxFields fields) go in requests of at most LIMITS.influxRequestMaxBytes of line protocol, 1.x and 2.x, and every reading is written", async () => {
    // 5,000 points of 256 fields, about 23 MB of line protocol, was one request: InfluxDB 1.x took
    // seconds over it, past the write deadline once busy, and the request was retried for ever.
    const fields = (i: number) => Object.fromEntries(Array.from({ length: LIMITS.readingMaxFields }, (_, f) => [`f${String(f).padStart(3, '0')}`, i + f / 1000]));
    const envelope = (device: string, at: number) => Array.from({ length: LIMITS.batchMaxMessages }, (_, i) => point(device, fields(i), at + i));
    const envelopes = 5;
    const targets: Array<[string, string, (url: string) => PointSink, (device: string) => Promise<number>]> = [
      ['1.x', influx.url, (url) => new InfluxV1Sink({ url, database: DB, username: influx.user, password: influx.password, timeoutMs: 60_000 }), async (device) => Number((await influx.rows(DB, `SELECT count(f255) FROM readings WHERE device =~ /^${device}/`))[0]?.count ?? 0)],
      ['2.x', vm.url, (url) => new InfluxV2Sink({ url, token: 't', org: 'o', bucket: 'b', timeoutMs: 60_000 }), async (device) => (await vm.export('readings_f255')).filter((s) => String(s.metric.device).startsWith(device)).reduce((n, s) => n + s.values.length, 0)],
    ];
    for (const [name, target, sinkAt, written] of targets) {
      const proxy = await recordingProxy(target);
      try {
        const sink = sinkAt(proxy.url);
        const batcher = anyAge(sink, 5000);
        const device = `widest-${name}-`;
        const results = await Promise.all(Array.from({ length: envelopes }, (_, e) => code(batcher.write(envelope(`${device}${e}`, 1700000600000 + e * 10_000)))));
        assert.deepEqual(results, Array(envelopes).fill('ok'), name);
        assert.equal(batcher.stats.requests, 1, `${name}: the five envelopes were one batch of 5,000 points`);
        const writes = proxy.writes.filter((w) => w.status === 204);
        assert.ok(writes.length > 1, `${name}: ${writes.length} request(s)`);
        for (const w of proxy.writes) assert.ok(w.bytes <= LIMITS.influxRequestMaxBytes, `${name}: a request of ${w.bytes} bytes of line protocol, over ${LIMITS.influxRequestMaxBytes}`);
        assert.equal(writes.reduce((n, w) => n + w.lines, 0), envelopes * LIMITS.batchMaxMessages, `${name}: every reading sent once`);
        await eventually(async () => ((await written(device)) === envelopes * LIMITS.batchMaxMessages ? true : undefined), 30_000, `${name}: every reading stored`);
        await sink.close();
      } finally {
        await proxy.close();
      }
    }
  });

  it('the batcher keeps at most its concurrency of requests in flight, and every message learns its own outcome', async () => {
    const real = v1();
    let inFlight = 0;
    let most = 0;
    const counting: PointSink = {
      description: 'counting',
      write: async (pts) => {
        most = Math.max(most, ++inFlight);
        try {
          await real.write(pts);
        } finally {
          inFlight--;
        }
      },
      close: () => real.close(),
    };
    const batcher = anyAge(counting, 3, 2);
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => code(batcher.write([point('s4', { v: i }, 100 + i)]))));
    assert.deepEqual(results, Array(12).fill('ok'));
    assert.equal(most, 2, 'two requests at once, never more');
    assert.ok(batcher.stats.requests < 12, `${batcher.stats.requests} requests: messages were combined`);
    const rows = await influx.rows(DB, `SELECT v FROM readings WHERE device = 's4'`);
    assert.deepEqual(rows.map((r) => r.v), Array.from({ length: 12 }, (_, i) => i));
  });

  it('InfluxDB 2.x API (VictoriaMetrics) through the client library: values and millisecond timestamps', async () => {
    const sink = new InfluxV2Sink({ url: vm.url, token: 't', org: 'o', bucket: 'b', timeoutMs: 5000 });
    const pts = Array.from({ length: 12_000 }, (_, i) => point('v1', { level: i / 4 }, 1700000000000 + i)); // more than one request's worth
    await sink.write(pts);
    await sink.close();
    // VictoriaMetrics makes new samples searchable within about a second.
    const [series] = await eventually(async () => {
      const s = await vm.export('readings_level');
      return s[0]?.values.length === 12_000 ? s : undefined;
    });
    assert.equal(series?.values.length, 12_000);
    assert.equal(series?.values[5], 1.25);
    assert.equal(series?.timestamps[5], 1700000000005);
  });

  it('v1 and v2: close() gives up a write in flight on a frozen database (SIGSTOP) at once, not at its deadline; a write after it fails too', async () => {
    const sinks: Array<[string, PointSink, { process: { pause(): Promise<void>; resume(): Promise<void> } }]> = [
      ['1.x', new InfluxV1Sink({ url: influx.url, database: DB, username: influx.user, password: influx.password, timeoutMs: 60_000 }), influx],
      ['2.x', new InfluxV2Sink({ url: vm.url, token: 't', org: 'o', bucket: 'b', timeoutMs: 60_000 }), vm],
    ];
    for (const [name, sink, db] of sinks) {
      await db.process.pause();
      try {
        const writing = code(sink.write([point('closing', { v: 1 }, 1700000500000)]));
        // the request is on its way (connected: the kernel accepts for a stopped process) before the close
        await new Promise((r) => setTimeout(r, 300));
        const started = Date.now();
        await sink.close();
        assert.equal(await writing, 'DISTRIBUTOR_WRITE_FAILED', name);
        assert.ok(Date.now() - started < 10_000, `${name}: given up at the close, not at the 60 s deadline`);
        const after = Date.now();
        assert.equal(await code(sink.write([point('closing', { v: 2 }, 1700000500001)])), 'DISTRIBUTOR_WRITE_FAILED', `${name}: after the close`);
        assert.ok(Date.now() - after < 1_000, `${name}: a write after the close fails at once, not at its deadline`);
      } finally {
        await db.process.resume();
      }
    }
  });

  it('InfluxDB 2.x API: an unreachable server is DISTRIBUTOR_WRITE_FAILED', async () => {
    const sink = new InfluxV2Sink({ url: 'http://127.0.0.1:1', token: 't', org: 'o', bucket: 'b', timeoutMs: 2000 });
    assert.equal(await code(sink.write([point('x', { a: 1 }, 1)])), 'DISTRIBUTOR_WRITE_FAILED');
    await sink.close();
  });
});

/**
 * A real Caddy with a server (an HTTP port) per site, each a reverse proxy to `upstream`, with a
 * request_body `max_size` of `maxBytes` when given; `urls` in the order of `sites`.
 */
async function caddyInFront(dir: string, sites: ReadonlyArray<{ upstream: string; maxBytes?: number }>): Promise<{ urls: string[]; process: ManagedProcess }> {
  mkdirSync(dir, { recursive: true });
  const ports = await Promise.all(sites.map(() => freePort()));
  const servers = Object.fromEntries(
    sites.map((s, i) => {
      const handle: unknown[] = s.maxBytes === undefined ? [] : [{ handler: 'request_body', max_size: s.maxBytes }];
      handle.push({ handler: 'reverse_proxy', upstreams: [{ dial: new URL(s.upstream).host }] });
      return [`s${i}`, { listen: [`127.0.0.1:${ports[i]}`], routes: [{ handle }] }];
    }),
  );
  const config = join(dir, 'caddy.json');
  writeFileSync(config, JSON.stringify({ admin: { listen: `127.0.0.1:${await freePort()}` }, apps: { http: { servers } } }));
  const process = new ManagedProcess({ name: 'caddy', command: 'caddy', args: ['run', '--config', config], env: { PATH: globalThis.process.env.PATH, HOME: dir }, cwd: dir, logFile: join(dir, 'caddy.log'), ready: { port: ports[0] as number, host: '127.0.0.1' } });
  await process.start();
  return { urls: ports.map((p) => `http://127.0.0.1:${p}`), process };
}

/**
 * An HTTP proxy in front of a database that passes every request on as it is and records, for each
 * write, the line protocol it carried (bytes, gunzipped; lines) and the database's answer.
 */
async function recordingProxy(target: string): Promise<{ url: string; writes: Array<{ bytes: number; lines: number; status: number }>; close(): Promise<void> }> {
  const writes: Array<{ bytes: number; lines: number; status: number }> = [];
  const read = async (req: IncomingMessage) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  };
  const server = createServer((req, res) => {
    void (async () => {
      const body = await read(req);
      const headers: Record<string, string> = {};
      for (const h of ['authorization', 'content-type', 'content-encoding', 'accept-encoding']) if (typeof req.headers[h] === 'string') headers[h] = req.headers[h];
      const answer = await fetch(new URL(req.url ?? '/', target), { method: req.method ?? 'GET', headers, ...(req.method === 'POST' ? { body } : {}) });
      const text = Buffer.from(await answer.arrayBuffer());
      if (/\/write\b/.test(req.url ?? '')) {
        const lp = req.headers['content-encoding'] === 'gzip' ? gunzipSync(body) : body;
        writes.push({ bytes: lp.length, lines: lp.length === 0 ? 0 : lp.toString('utf8').split('\n').length, status: answer.status });
      }
      res.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'text/plain' });
      res.end(text);
    })().catch((err: unknown) => {
      res.writeHead(502);
      res.end(String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    writes,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
