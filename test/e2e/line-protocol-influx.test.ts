import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import { tempDir } from '../helpers/pki.ts';
import { InfluxV1Sink } from '../../internal-network/distributor/sinks/influx-v1.ts';
import { WriteBatcher } from '../../internal-network/distributor/write-batcher.ts';
import { eventPoints, type StoredPoint } from '../../internal-network/distributor/points.ts';
import type { EnvelopeOf } from '../../shared/contract/envelope.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { InfluxQlHistory } from '../../internal-network/console/history/influxql.ts';

const DB = 'lp';
const FORGED = '=1\nreadings,device=victim temperature=99 1700000000000\n#';
const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof FieldStreamError ? e.code : String(e)));

/**
 * Line protocol injection against a real InfluxDB 1.x: what it stores from our encoder is what the
 * points said, and no key or value of one device's point can make it store a point of another.
 */
describe('line protocol injection, against a real InfluxDB 1.x', () => {
  const work = tempDir('lp-influx');
  let influx: InfluxV1;
  before(async () => {
    influx = await InfluxV1.start(join(work.dir, 'influx'), DB);
  });
  after(async () => {
    await influx.process.stop();
    work.cleanup();
  });
  const sink = () => new InfluxV1Sink({ url: influx.url, database: DB, username: influx.user, password: influx.password, timeoutMs: 5000 });
  /** A body posted as it is, not through our encoder. */
  const rawWrite = async (body: string) => {
    const url = new URL('/write', influx.url);
    url.searchParams.set('db', DB);
    url.searchParams.set('precision', 'ms');
    const res = await fetch(url, { method: 'POST', body, headers: { authorization: `Basic ${Buffer.from(`${influx.user}:${influx.password}`).toString('base64')}` } });
    return res.status;
  };

  it("the review's forged event (a key ending in a backslash) is refused, coded, and stores no point for the victim; the other messages of its batch are written", async () => {
    // The event as it would reach the encoder had it passed the contract (a compromised DMZ, or any
    // other path): the encoder is the last line of defence.
    const env = {
      v: 1,
      deviceId: 'mallory',
      dataType: 'event',
      gatewayId: 'gw',
      receivedAt: 1_700_000_100_000,
      messages: [{ messageId: 'm.1', payload: { eventType: 'x', 'zz\\': FORGED } }],
    } as unknown as EnvelopeOf<'event'>;
    const forged = eventPoints(env);
    const honest: StoredPoint[] = [{ measurement: 'readings', tags: { device: 'honest' }, fields: { temperature: 20 }, time: 1_700_000_100_001 }];
    const batcher = new WriteBatcher(sink(), 5000);
    const [a, b] = await Promise.all([code(batcher.write(forged)), code(batcher.write(honest))]);
    assert.deepEqual([a, b], ['DISTRIBUTOR_WRITE_REJECTED', 'ok']);
    assert.deepEqual(await influx.rows(DB, `SELECT * FROM readings WHERE device = 'victim'`), []);
    assert.deepEqual(await influx.rows(DB, `SELECT temperature FROM readings WHERE device = 'honest'`), [{ time: 1_700_000_100_001, temperature: 20 }]);
    // Hostile tag values and measurements too: each refused before anything is sent.
    for (const p of <StoredPoint[]>[
      { measurement: 'events', tags: { device: 'mallory\\' }, fields: { f: FORGED }, time: 1 },
      { measurement: 'events', tags: { device: 'mallory', event_type: 'a\nreadings,device=victim temperature=98 1700000000000' }, fields: { f: 1 }, time: 2 },
      { measurement: 'events\\', tags: { device: 'mallory' }, fields: { f: FORGED }, time: 3 },
    ]) assert.equal(await code(sink().write([p])), 'DISTRIBUTOR_WRITE_REJECTED', JSON.stringify(p));
    assert.deepEqual(await influx.rows(DB, `SELECT * FROM readings WHERE device = 'victim'`), []);
  });

  it('stores hostile string values, and names with a backslash the encoder keeps, exactly as they were', async () => {
    const values = [FORGED, 'ends with a backslash \\', 'quote " and \\" and \\\\', 'line\r\nbreaks\n', '"'];
    const points: StoredPoint[] = values.map((v, i) => ({ measurement: 'texts', tags: { device: 'd\\x', kind: 'a b,c=d' }, fields: { 'k\\y': v, 'o k,=': i }, time: 1_700_000_200_000 + i }));
    await sink().write(points);
    const rows = await influx.rows(DB, `SELECT * FROM texts`);
    assert.deepEqual(
      rows,
      values.map((v, i) => ({ time: 1_700_000_200_000 + i, device: 'd\\x', kind: 'a b,c=d', 'k\\y': v, 'o k,=': i })),
    );
    assert.deepEqual(await influx.rows(DB, `SELECT * FROM readings WHERE device = 'victim'`), []);
  });

  it('a field named as a tag (device) is refused: InfluxQL would read it for the tag, listing the point under another device and hiding that device\'s own', async () => {
    await sink().write([{ measurement: 'readings', tags: { device: 'owner' }, fields: { t: 20 }, time: 1_700_000_400_000 }]);
    const forged: StoredPoint = { measurement: 'readings', tags: { device: 'mallory' }, fields: { device: 'owner', t: 1000 }, time: 1_700_000_400_001 };
    assert.equal(await code(sink().write([forged])), 'DISTRIBUTOR_WRITE_REJECTED');
    // What the console's history asks (internal-network/console/history/influxql.ts).
    assert.deepEqual(await influx.rows(DB, `SELECT "t" FROM "readings" WHERE "device" = 'owner'`), [{ time: 1_700_000_400_000, t: 20 }]);
  });

  it("a message dated more than LIMITS.pointMaxAheadMs ahead is refused alone, before InfluxDB makes a shard for it; the batch's others are written", async () => {
    const shards = async () => (await influx.query('SHOW SHARDS')).results?.[0]?.series?.find((x) => x.name === DB)?.values.length ?? 0;
    const now = Date.now();
    const batcher = new WriteBatcher(sink(), 5000);
    const ahead = (days: number): StoredPoint[] => [{ measurement: 'readings', tags: { device: 'far-ahead' }, fields: { t: days }, time: now + days * 86_400_000 }];
    assert.deepEqual(await Promise.all([code(batcher.write(ahead(6))), code(batcher.write(ahead(0)))]), ['ok', 'ok']);
    const shardsBefore = await shards();
    const results = await Promise.all([code(batcher.write(ahead(365 * 200))), code(batcher.write(ahead(0.001))), code(batcher.write(ahead(8)))]);
    assert.deepEqual(results, ['DISTRIBUTOR_WRITE_REJECTED', 'ok', 'DISTRIBUTOR_WRITE_REJECTED']);
    assert.deepEqual((await influx.rows(DB, `SELECT "t" FROM "readings" WHERE "device" = 'far-ahead'`)).map((r) => r.t), [0, 0.001, 6]);
    assert.equal(await shards(), shardsBefore, 'no shard made for the weeks of the refused points');
  });

  it('a message dated more than DISTRIBUTOR_MAX_POINT_AGE_DAYS back is refused alone, before InfluxDB makes a shard for it: centuries of weekly shards otherwise', async () => {
    const shards = async () => (await influx.query('SHOW SHARDS')).results?.[0]?.series?.find((x) => x.name === DB)?.values.length ?? 0;
    const now = Date.now();
    const batcher = new WriteBatcher(sink(), 5000, 1, undefined, undefined, 365);
    const back = (days: number): StoredPoint[] => [{ measurement: 'readings', tags: { device: 'far-back' }, fields: { t: days }, time: now - days * 86_400_000 }];
    assert.equal(await code(batcher.write(back(0))), 'ok');
    const shardsBefore = await shards();
    // A device without a clock at 1970, one inventing a date of 1800, and one back from a year away.
    const results = await Promise.all([code(batcher.write(back((now - 60_000) / 86_400_000))), code(batcher.write(back(365 * 226))), code(batcher.write(back(366))), code(batcher.write(back(0.002)))]);
    assert.deepEqual(results, ['DISTRIBUTOR_WRITE_REJECTED', 'DISTRIBUTOR_WRITE_REJECTED', 'DISTRIBUTOR_WRITE_REJECTED', 'ok']);
    assert.deepEqual((await influx.rows(DB, `SELECT "t" FROM "readings" WHERE "device" = 'far-back'`)).map((r) => r.t), [0.002, 0]);
    assert.equal(await shards(), shardsBefore, 'no shard made for the weeks of the refused points');
    // Within the default (LIMITS.pointMaxAgeDays, 10 years): the seed's example of 2024 is taken.
    assert.equal(await code(new WriteBatcher(sink(), 5000).write([{ measurement: 'readings', tags: { device: 'far-back' }, fields: { t: -1 }, time: Date.parse('2024-01-01T12:00:00Z') }])), 'ok');
  });

  it('InfluxDB 1.x keeps an escaped backslash in a name as two backslashes: escaping them would store another name, hence the refusal', async () => {
    assert.equal(await rawWrite('esc,t=a\\\\b k\\\\x=1 1700000300000'), 204);
    assert.deepEqual(await influx.rows(DB, `SELECT * FROM esc`), [{ time: 1_700_000_300_000, t: 'a\\\\b', 'k\\\\x': 1 }]);
  });

  it("a user and password in INFLUXDB_URL: the distributor writes with them and the console's history reads with them; neither shows the password in a description or an error", async () => {
    const u = new URL(influx.url);
    u.username = influx.user;
    u.password = influx.password;
    const withCredentials = u.toString();
    const sink = new InfluxV1Sink({ url: withCredentials, database: DB, timeoutMs: 5000 });
    assert.ok(!sink.description.includes(influx.password));
    await sink.write([{ measurement: 'readings', tags: { device: 'pump-1' }, fields: { t: 21 }, time: Date.now() - 60_000 }]);
    const history = new InfluxQlHistory({ INFLUXDB_URL: withCredentials, INFLUXDB_DATABASE: DB, INFLUXDB_TIMEOUT_MS: 5000, TIMESERIES_LOCAL_PATH: '' });
    assert.ok(!history.description.includes(influx.password));
    const series = await history.series('pump-1', 't', Date.now() - 3_600_000, Date.now());
    assert.equal(series.length, 1, 'read with the credentials of the URL');
    assert.equal(series[0]?.[1], 21);
    // A wrong password: refused by InfluxDB, and the message names the server without either.
    u.password = 'not-the-password';
    const wrong = new InfluxQlHistory({ INFLUXDB_URL: u.toString(), INFLUXDB_DATABASE: DB, INFLUXDB_TIMEOUT_MS: 5000, TIMESERIES_LOCAL_PATH: '' });
    await assert.rejects(wrong.series('pump-1', 't', Date.now() - 3_600_000, Date.now()), (e: unknown) => e instanceof FieldStreamError && e.code === 'CONSOLE_HISTORY_FAILED' && !e.message.includes('not-the-password') && / 401/.test(e.message));
  });
});
