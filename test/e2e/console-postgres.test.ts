import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { loadConsoleConfig } from '../../internal-network/console/config.ts';
import type { OperatorConsole } from '../../internal-network/console/console.ts';
import { loadDistributorConfig } from '../../internal-network/distributor/config.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { LocalPointStore } from '../../internal-network/distributor/sinks/local-store.ts';
import { selectDistributorSink } from '../../internal-network/distributor/sinks/select.ts';
import type { HistoryReader, Series } from '../../internal-network/console/history/history.ts';
import { InfluxQlHistory, selectHistory } from '../../internal-network/console/history/influxql.ts';
import { LocalHistory } from '../../internal-network/console/history/local.ts';
import { PostgresHistory } from '../../internal-network/console/history/postgres.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { CONSOLE } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { extraConsole } from '../helpers/embedded.ts';
import { eventually, startBothStores, type BothStores } from '../helpers/pg-pipeline.ts';
import { tempDir } from '../helpers/pki.ts';

const PASSWORD = 'pg-console-Hq7vR2mZ';
const TOKEN = 'console-test-token-0123456789abcdef';
const BASE = Date.UTC(2026, 0, 1, 0, 0, 0);
const STEP_MS = 90_000;
const READINGS = 60;
const temperature = (k: number) => 20 + (k % 8) * 0.25; // quarters: sums and means are exact in binary

const notLocal = (): HistoryReader => {
  throw new Error('the local store was chosen');
};

/**
 * The console's history from PostgreSQL answers as from InfluxDB: the same readings, written
 * through the real pipeline by one distributor into a real InfluxDB 1.x and a real PostgreSQL 15
 * at once, read through each source as the console's settings select it (docs/console.md).
 */
describe('console history from PostgreSQL', () => {
  let s: BothStores;
  let fromInflux: HistoryReader;
  let fromPostgres: HistoryReader;

  before(async () => {
    s = await startBothStores('conpg', ['meter-1', 'meter-2'], PASSWORD);
    const one = await s.connect('meter-1');
    for (let k = 0; k < READINGS; k++) await s.send(one, 'meter-1', 'timeseries', { temperature: temperature(k), level: k, door: k % 2 === 0, mode: k % 3 === 0 ? 'auto' : 'manual', timestamp: BASE + k * STEP_MS });
    const two = await s.connect('meter-2');
    for (let k = 0; k < 5; k++) await s.send(two, 'meter-2', 'timeseries', { temperature: 100 + k, timestamp: BASE + k * STEP_MS });
    await eventually(async () => ((await s.pgCount('readings')) === READINGS + 5 ? true : undefined), 20_000, 'every reading in PostgreSQL');
    await eventually(async () => ((await s.influx.rows(s.influxDatabase, 'SELECT count(temperature) FROM readings'))[0]?.count === READINGS + 5 ? true : undefined), 20_000, 'every reading in InfluxDB');
    const common = { COMMAND_API_TOKEN: TOKEN };
    fromInflux = selectHistory(loadConsoleConfig({ ...common, ...s.influxEnv }), notLocal);
    // Both configured, as beside a distributor that writes both: PostgreSQL is read.
    fromPostgres = selectHistory(loadConsoleConfig({ ...common, ...s.influxEnv, ...s.postgresEnv }), notLocal);
  });
  after(async () => {
    await (fromPostgres as PostgresHistory | undefined)?.close?.();
    await s?.stop();
  });

  it('is chosen when POSTGRES_URL is set, and says where it reads without the password', () => {
    assert.ok(fromPostgres instanceof PostgresHistory);
    assert.match(fromPostgres.description, /^PostgreSQL fieldstream@127\.0\.0\.1:\d+\/fieldstream schema fieldstream$/);
    assert.match(fromInflux.description, /^InfluxDB /);
  });

  it('answers every window, field and device as InfluxDB does', async () => {
    const windows: Array<[number, number]> = [
      [BASE - 1000, BASE + READINGS * STEP_MS], // 2.7 s buckets: one reading each
      [BASE + 123_457, BASE + 2_000_003], // a window on no boundary: the first bucket starts before it
      [BASE - 3 * 86_400_000, BASE + 4 * 86_400_000], // about 5 min buckets: several readings each
      [BASE - 86_400_000, BASE + 30 * 86_400_000], // the longest window the console allows
      [BASE + 10 * STEP_MS, BASE + 10 * STEP_MS], // one instant: both ends inclusive
    ];
    let compared = 0;
    for (const [from, to] of windows) {
      for (const [device, field] of [['meter-1', 'temperature'], ['meter-1', 'level'], ['meter-2', 'temperature'], ['meter-1', 'nothing'], ['meter-3', 'temperature']] as const) {
        const [a, b] = await Promise.all([fromInflux.series(device, field, from, to), fromPostgres.series(device, field, from, to)]);
        assert.deepEqual(b, a, `${device} ${field} [${from}, ${to}]`);
        compared += a.length;
      }
    }
    assert.ok(compared > 200, `${compared} points compared`);
  });

  it('averages per bucket aligned on the epoch, as InfluxQL GROUP BY time() does', async () => {
    const from = BASE - 3 * 86_400_000;
    const to = BASE + 4 * 86_400_000;
    const size = Math.ceil((to - from + 1) / 2000);
    const buckets = new Map<number, number[]>();
    for (let k = 0; k < READINGS; k++) {
      const t = BASE + k * STEP_MS;
      const b = Math.floor(t / size) * size;
      buckets.set(b, [...(buckets.get(b) ?? []), temperature(k)]);
    }
    const expected: Series = [...buckets].map(([t, vs]) => [t, vs.reduce((x, y) => x + y, 0) / vs.length]);
    assert.ok(expected.length < READINGS, 'some buckets hold several readings');
    assert.deepEqual(await fromPostgres.series('meter-1', 'temperature', from, to), expected);
  });

  it('averages values near the largest double without failing: a device cannot break its history with them', async () => {
    // Two readings of 1e308 in one bucket: their float8 sum overflows, which avg(float8) refuses
    // (SQLSTATE 22003); JSON and the contract allow any finite number.
    const two = await s.connect('meter-2');
    const at = BASE + 7 * 86_400_000;
    await s.send(two, 'meter-2', 'timeseries', { huge: 1e308, timestamp: at });
    await s.send(two, 'meter-2', 'timeseries', { huge: 1.7e308, timestamp: at + 1000 });
    await eventually(async () => ((await s.pgCount('readings', "device = 'meter-2' AND fields ? 'huge'")) === 2 ? true : undefined), 20_000, 'both huge readings in PostgreSQL');
    const series = await fromPostgres.series('meter-2', 'huge', at - 86_400_000, at + 86_400_000);
    assert.equal(series.length, 1, JSON.stringify(series));
    assert.equal(series[0]?.[1], 1.35e308);
  });

  it('answers nothing before the distributor has made its tables, and a coded error without the password when it cannot log in', async () => {
    const empty = selectHistory(loadConsoleConfig({ COMMAND_API_TOKEN: TOKEN, ...s.postgresEnv, POSTGRES_SCHEMA: 'not_made_yet' }), notLocal) as PostgresHistory;
    try {
      assert.deepEqual(await empty.series('meter-1', 'temperature', BASE, BASE + 86_400_000), []);
    } finally {
      await empty.close();
    }
    const wrong = 'wrong-Kx4pL8sT';
    const refused = selectHistory(loadConsoleConfig({ COMMAND_API_TOKEN: TOKEN, ...s.postgresEnv, POSTGRES_URL: s.postgresEnv.POSTGRES_URL?.replace(encodeURIComponent(PASSWORD), wrong) }), notLocal) as PostgresHistory;
    try {
      const err = await refused.series('meter-1', 'temperature', BASE, BASE + 86_400_000).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err instanceof FieldStreamError, String(err));
      assert.equal(err.code, 'CONSOLE_HISTORY_FAILED');
      assert.match(err.message, /password authentication failed/);
      assert.ok(!err.message.includes(wrong) && !err.message.includes(PASSWORD));
    } finally {
      await refused.close();
    }
  });
});

/**
 * The console learns presences from the stored feed, which is not retained, and a gateway publishes
 * a device's presence when it connects and then once a day: after a restart the console reads each
 * device's and gateway's last presence back from the store it reads history from (docs/console.md),
 * and a device connected and sending data shows its gateway at once, not a day later.
 */
describe('a console started after its devices connected', () => {
  let s: BothStores;
  let gateway: string;
  const local = tempDir('console-restart-local');
  const consoles: OperatorConsole[] = [];
  const start = async (name: string, env: Record<string, string>) => {
    const c = await extraConsole(s.fx, `console-${name}`, { COMMAND_API_TOKEN: TOKEN, CONSOLE_STATE_DIR: 'off', TIMESERIES_LOCAL_PATH: local.dir, ...env });
    consoles.push(c);
    return c;
  };
  const stores = () => ({ InfluxDB: s.influxEnv, PostgreSQL: { ...s.influxEnv, ...s.postgresEnv }, 'the local store': {} });
  /** `points` written as the distributor writes them, into InfluxDB and PostgreSQL (its sinks) and the local store */
  const storeEverywhere = async (points: StoredPoint[]) => {
    const sink = selectDistributorSink(loadDistributorConfig({ ...s.influxEnv, ...s.postgresEnv }), createLogger('test', 'silent'));
    await sink.write(points);
    await sink.close();
    const localSink = new LocalPointStore(local.dir);
    await localSink.write(points);
    await localSink.close();
  };

  before(async () => {
    s = await startBothStores('conrestart', ['meter-1', 'meter-2', 'meter-3', 'meter-4', 'meter-5'], PASSWORD);
    const one = await s.connect('meter-1');
    await s.send(one, 'meter-1', 'timeseries', { temperature: 21 });
    await eventually(async () => ((await s.pgCount('device_status', "device = 'meter-1'")) >= 1 ? true : undefined), 20_000, "meter-1's presence in PostgreSQL");
    await eventually(async () => ((await s.influx.rows(s.influxDatabase, `SELECT count("state") FROM device_status WHERE "device" = 'meter-1'`))[0]?.count ? true : undefined), 20_000, "meter-1's presence in InfluxDB");
    const r = await s.admin.query("SELECT gateway FROM fieldstream.device_status WHERE device = 'meter-1' LIMIT 1");
    gateway = String(r.rows[0]?.gateway);
    // The local store gets what the distributor would have written there.
    const sink = new LocalPointStore(local.dir);
    const inDb = (await s.admin.query("SELECT device, gateway, state, (extract(epoch FROM time) * 1000)::bigint AS t FROM fieldstream.device_status WHERE device = 'meter-1'")).rows as Array<{ device: string; gateway: string; state: string; t: string }>;
    await sink.write(inDb.map((x) => ({ measurement: 'device_status', tags: { device: x.device, gateway: x.gateway }, fields: { state: x.state }, time: Number(x.t) })));
    await sink.close();
  });
  after(async () => {
    for (const c of consoles) await c.close();
    await s?.stop();
    local.cleanup();
  });

  it("knows at once the gateway of a device connected before it started, from every store it reads", async () => {
    assert.notEqual(gateway, 'undefined');
    for (const [name, env] of Object.entries(stores())) {
      const c = await start(`first-${name.replace(/\W/g, '')}`, env);
      const row = c.fleet.detail('meter-1')?.row;
      assert.equal(row?.gateway, gateway, name);
      assert.equal(row?.state, 'online', name);
      assert.equal(c.fleet.detail('meter-2')?.row.state, 'unknown', name);
      await c.close();
      consoles.pop();
    }
  });

  it('takes no device as online through a gateway gone or restarted since its presence, nor from a presence older than the window', async () => {
    const now = Date.now();
    const presence = (device: string, gw: string, time: number): StoredPoint => ({ measurement: 'device_status', tags: { device, gateway: gw }, fields: { state: 'online' }, time });
    const points: StoredPoint[] = [
      // gone: its will after the device's presence
      presence('meter-2', 'gw-gone', now - 60_000),
      { measurement: 'gateway_status', tags: { gateway: 'gw-gone' }, fields: { state: 'offline', since: now - 3_600_000 }, time: now - 30_000 },
      // restarted after the device's presence (killed whole: no will), the device not back since
      presence('meter-3', 'gw-restarted', now - 60_000),
      { measurement: 'gateway_status', tags: { gateway: 'gw-restarted' }, fields: { state: 'online', since: now - 40_000 }, time: now - 30_000 },
      // up since before the presence, which is the newest of the device's: online through it
      { measurement: 'gateway_status', tags: { gateway: 'gw-up' }, fields: { state: 'online', since: now - 3_600_000 }, time: now - 3_500_000 },
      presence('meter-4', 'gw-gone', now - 120_000),
      presence('meter-4', 'gw-up', now - 20_000),
      // older than the window: the device had a reminder since if it were still connected
      presence('meter-5', 'gw-up', now - CONSOLE.lastPresenceWindowMs - 60_000),
    ];
    await storeEverywhere(points);
    for (const [name, env] of Object.entries(stores())) {
      const c = await start(`second-${name.replace(/\W/g, '')}`, env);
      const row = (id: string) => c.fleet.detail(id)?.row;
      assert.equal(row('meter-2')?.state, 'offline', name);
      assert.equal(row('meter-3')?.state, 'offline', name);
      assert.deepEqual([row('meter-4')?.state, row('meter-4')?.gateway], ['online', 'gw-up'], name);
      assert.deepEqual([row('meter-5')?.state, row('meter-5')?.gateway], ['unknown', null], name);
      await c.close();
      consoles.pop();
    }
  });

  it("reads the registered devices' presences first, however many pairs of other ids the store holds", async () => {
    // More pairs in the window than the bound (lowered to 4 here), of ids sorting before the
    // registered one's, and the registered devices' pairs of the tests above written before its own.
    const now = Date.now();
    const points: StoredPoint[] = [];
    for (let k = 0; k < 12; k++) points.push({ measurement: 'device_status', tags: { device: `aa-invented-${k}`, gateway: 'gw-dmz' }, fields: { state: 'online' }, time: now - 5_000 });
    // A device that moved between DMZ servers: a pair for each.
    points.push({ measurement: 'device_status', tags: { device: 'meter-5', gateway: 'gw-left' }, fields: { state: 'offline' }, time: now - 8_000 });
    points.push({ measurement: 'device_status', tags: { device: 'meter-5', gateway: 'gw-real' }, fields: { state: 'online' }, time: now - 10_000 });
    await storeEverywhere(points);
    const postgres = selectHistory(loadConsoleConfig({ COMMAND_API_TOKEN: TOKEN, ...s.postgresEnv }), notLocal) as PostgresHistory;
    const readers = { InfluxDB: selectHistory(loadConsoleConfig({ COMMAND_API_TOKEN: TOKEN, ...s.influxEnv }), notLocal) as InfluxQlHistory, PostgreSQL: postgres, 'the local store': new LocalHistory(local.dir) };
    try {
      // Registered devices silent in the window listed before it: InfluxDB is asked by a few ids at a time.
      const known = new Set([...Array.from({ length: 2 * CONSOLE.lastPresenceIdsPerQuery }, (_, k) => `silent-${k}`), 'meter-5']);
      for (const [name, reader] of Object.entries(readers)) {
        const read = await reader.lastPresences(now - CONSOLE.lastPresenceWindowMs, known, 4);
        assert.equal(read.devices.length, 4, `${name}: the bound`);
        const theirs = read.devices.filter((p) => p.tags.device === 'meter-5').map((p) => [p.tags.gateway, p.fields.state, p.time]);
        assert.deepEqual(
          theirs.sort(),
          [
            ['gw-left', 'offline', now - 8_000],
            ['gw-real', 'online', now - 10_000],
          ],
          `${name}: every pair of the registered device`,
        );
      }
    } finally {
      await postgres.close();
    }
  });

  it("gives its history's PostgreSQL connections back as it closes", async () => {
    // The console's connections, by the application name its pool gives them. Left open by the pool,
    // each stayed until it idled out (10 s).
    const held = async () => Number((await s.admin.query("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'fieldstream-console'")).rows[0]?.n);
    await eventually(async () => ((await held()) === 0 ? true : undefined), 15_000, 'no connection of an earlier console');
    const c = await start('closing', { ...s.influxEnv, ...s.postgresEnv });
    assert.ok((await held()) >= 1, 'the console reads through a connection of its own');
    await c.close();
    consoles.pop();
    await eventually(async () => ((await held()) === 0 ? true : undefined), 3_000, 'its connections closed with it');
  });

  it('starts when the store cannot be read, with CONSOLE_PRESENCES_NOT_LOADED logged', async () => {
    const closed = { INFLUXDB_URL: 'http://127.0.0.1:1', INFLUXDB_DATABASE: 'none' };
    for (const [name, env] of Object.entries({ InfluxDB: closed, PostgreSQL: { ...closed, POSTGRES_URL: 'postgres://u:p@127.0.0.1:1/none', POSTGRES_TIMEOUT_MS: '2000' } })) {
      const before = s.fx.logs.lines.length;
      const c = await start(`down-${name}`, env);
      assert.equal(c.fleet.detail('meter-1')?.row.gateway, null, name);
      const line = s.fx.logs.lines.slice(before).find((l) => l.code === 'CONSOLE_PRESENCES_NOT_LOADED');
      assert.ok(line, `${name}: ${JSON.stringify(s.fx.logs.lines.slice(before).map((l) => l.msg))}`);
      assert.equal(line.level, 40, 'a warning');
      await c.close();
      consoles.pop();
    }
  });
});
