import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { Postgres } from '../../scripts/local-stack/databases.ts';
import { readingPoints } from '../../internal-network/distributor/points.ts';
import { PostgresSink } from '../../internal-network/distributor/sinks/postgres/sink.ts';
import { postgresConnection } from '../../internal-network/distributor/sinks/postgres/settings.ts';
import { parseEnvelope, UplinkEnvelopeSchema, type EnvelopeOf } from '../../shared/contract/envelope.ts';
import { DAY_MS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { firing, HEALTH_MESSAGES, HEALTH_TELLING, HOUR_MS, ruleGroups, ruleOn, storedHealth } from '../helpers/grafana-rules.ts';
import { tempDir } from '../helpers/pki.ts';
import { storedPresences } from '../helpers/stored-presences.ts';

/**
 * Grafana's per-device alert rules for a site whose distributor writes to PostgreSQL only: the twin
 * of each InfluxDB rule (test/unit/monitoring-device-alerts.test.ts), on the tables the PostgreSQL
 * sink writes. Grafana cannot run here; each rule's SQL runs on a real PostgreSQL 15 holding what
 * the distributor's own sink wrote, as the read-only role Grafana is given (docs/monitoring.md),
 * and the rule's own reduce and threshold are applied to the answer. The SQL has no Grafana macro
 * (nothing to expand): it is sent as written.
 */
const OWNER = 'fieldstream';
const PASSWORD = 'pg-alerts-Rq7uV2nK';
const READER = 'grafana_reader';
const READER_PASSWORD = 'pg-reader-Hm4xT8cW';

/** readings as the distributor stores them: [device, taken this long ago (ms)], one message each. */
function storedReadings(readings: ReadonlyArray<[string, number]>) {
  const now = Date.now();
  return readings.flatMap(([deviceId, ago], i) => {
    const raw = { v: 1, deviceId, dataType: 'timeseries', gatewayId: 'gw-1', receivedAt: now, messages: [{ messageId: `r.${i}`, payload: { flow: 3.5 + i, timestamp: new Date(now - ago).toISOString() } }] };
    return readingPoints(parseEnvelope(UplinkEnvelopeSchema, Buffer.from(JSON.stringify(raw))) as EnvelopeOf<'timeseries'>);
  });
}

describe("monitoring: Grafana's per-device alert rules on a real PostgreSQL holding what the PostgreSQL sink stores", () => {
  const tmp = tempDir('pg-device-alerts');
  let db: Postgres;
  let sink: PostgresSink;
  let reader: pg.Client;

  before(async () => {
    db = await Postgres.start(join(tmp.dir, 'pg'));
    await db.createUser(OWNER, PASSWORD);
    sink = new PostgresSink(
      postgresConnection({ POSTGRES_URL: `postgres://${OWNER}:${PASSWORD}@127.0.0.1:${db.port}/${OWNER}`, POSTGRES_SSL: 'disable', POSTGRES_SCHEMA: 'fieldstream', POSTGRES_POOL_SIZE: 2, POSTGRES_TIMEOUT_MS: 5000 }),
      createLogger('test', 'silent'),
    );
    const now = Date.now();
    const ago = (days: number) => now - days * DAY_MS;
    const presences = await storedPresences(join(tmp.dir, 'presences'), [
      // connected for long, its daily reminder 20 hours ago says 20 days left
      ['meter-1', { state: 'online', at: ago(40), certNotAfter: now + 20.5 * DAY_MS }],
      ['meter-1', { state: 'online', at: now - 20 * HOUR_MS, certNotAfter: now + 20.5 * DAY_MS, since: ago(40) }],
      // connected, a year left
      ['meter-2', { state: 'online', at: ago(2), certNotAfter: now + 365.5 * DAY_MS }],
      // gone 10 days ago with 35 days left then, 25 now: told, as of now (InfluxDB tells the days as stored)
      ['meter-3', { state: 'online', at: ago(11), certNotAfter: now + 25.5 * DAY_MS }],
      ['meter-3', { state: 'offline', at: ago(10) }],
      // renewed: its last connection carries the new certificate
      ['meter-4', { state: 'online', at: ago(3), certNotAfter: now + 5.5 * DAY_MS }],
      ['meter-4', { state: 'offline', at: ago(2) }],
      ['meter-4', { state: 'online', at: ago(1), certNotAfter: now + 700.5 * DAY_MS }],
      // a device with a token: no certificate
      ['token-5', { state: 'online', at: ago(1) }],
      ['meter-5', { state: 'online', at: ago(2) }],
      // just over and just under 30 whole days left
      ['meter-6', { state: 'online', at: ago(1), certNotAfter: now + 30 * DAY_MS + HOUR_MS }],
      ['meter-7', { state: 'online', at: ago(1), certNotAfter: now + 30 * DAY_MS - HOUR_MS }],
      // expired
      ['meter-8', { state: 'online', at: ago(1), certNotAfter: now - 2 * HOUR_MS }],
      // last seen 31 days ago, its certificate since expired: out of the query's 30 days
      ['meter-9', { state: 'online', at: ago(31), certNotAfter: now - DAY_MS }],
      // devices that only send readings (below) are known by their presence too
      ...(['pump-1', 'pump-2', 'pump-3', 'pump-4', 'pump-5', 'pump-6'] as const).map((d) => [d, { state: 'online', at: ago(1) }] as [string, { state: 'online'; at: number }]),
    ]);
    const readings = storedReadings([
      // sending: its last reading a minute ago
      ['pump-1', 30 * 60_000],
      ['pump-1', 60_000],
      // a minute under the threshold, and a minute over it (the setup before the query takes seconds)
      ['pump-2', 14 * 60_000],
      ['pump-3', 16 * 60_000],
      // silent for 20 minutes, after sending for long
      ['pump-4', 3 * HOUR_MS],
      ['pump-4', 20 * 60_000],
      // silent for 25 hours: out of the query, its alert resolved
      ['pump-5', 25 * HOUR_MS],
      // pump-6 never sent a reading: not watched
    ]);
    // The health messages of the InfluxDB test, to the same devices' presence: the sink writes them all.
    const health = storedHealth(HEALTH_MESSAGES);
    await sink.write([...presences, ...readings, ...health]);
    // Grafana's role, as docs/monitoring.md makes it: it may only read.
    await db.psql(`CREATE ROLE ${READER} LOGIN PASSWORD '${READER_PASSWORD}'`, OWNER);
    await db.psql(`GRANT USAGE ON SCHEMA fieldstream TO ${READER}; GRANT SELECT ON ALL TABLES IN SCHEMA fieldstream TO ${READER}`, OWNER);
    reader = new pg.Client({ host: '127.0.0.1', port: db.port, user: READER, password: READER_PASSWORD, database: OWNER });
    await reader.connect();
  });
  after(async () => {
    await reader?.end().catch(() => undefined);
    await sink?.close();
    await db?.stop();
    tmp.cleanup();
  });

  /**
   * The rule on PostgreSQL, and what its SQL answers now: a table of one string column (the device,
   * which Grafana makes the label `device`) and one numeric column, one row per device, as Grafana's
   * alerting on numeric data needs (format table).
   */
  async function ruleAnswer(title: string) {
    const { rule, model } = ruleOn(title, 'postgres');
    assert.equal(model.format, 'table', `${title}: numeric data, a row per device`);
    const answer = await reader.query(model.rawSql as string);
    const names = answer.fields.map((f) => f.name);
    assert.equal(names.length, 2, JSON.stringify(names));
    assert.equal(names[0], 'device');
    const rows = answer.rows.map((r: Record<string, unknown>) => [String(r.device), Number(r[names[1] as string])] as const);
    for (const [d, v] of rows) assert.ok(Number.isFinite(v), `${title}: ${d} has a number, never null`);
    const devices = rows.map(([d]) => d);
    assert.equal(new Set(devices).size, devices.length, JSON.stringify(devices));
    return { rule, rows, devices: [...devices].sort() };
  }

  it('each InfluxDB rule has its PostgreSQL twin, of the same name, in a group of its own, paused as the site chooses', () => {
    const groups = ruleGroups();
    const on = (uid: string) => groups.filter((g) => g.rules.every((r) => r.data.some((q) => q.datasourceUid === uid)));
    const [influx, postgres] = [on('influxdb'), on('postgres')];
    assert.equal(influx.length, 1);
    assert.equal(postgres.length, 1);
    assert.deepEqual(postgres[0]?.rules.map((r) => r.title), influx[0]?.rules.map((r) => r.title));
    // Grafana keeps a title once per folder.
    assert.notEqual(postgres[0]?.folder, influx[0]?.folder);
    assert.deepEqual(influx[0]?.rules.map((r) => r.isPaused), influx[0]?.rules.map(() => '${FIELDSTREAM_INFLUXDB_ALERTS_PAUSED}'));
    assert.deepEqual(postgres[0]?.rules.map((r) => r.isPaused), postgres[0]?.rules.map(() => '${FIELDSTREAM_POSTGRES_ALERTS_PAUSED}'));
    for (const r of postgres[0]?.rules ?? []) {
      const twin = influx[0]?.rules.find((i) => i.title === r.title);
      assert.deepEqual(r.labels, twin?.labels, r.title);
      assert.deepEqual(r.data.filter((q) => q.datasourceUid === '__expr__'), twin?.data.filter((q) => q.datasourceUid === '__expr__'), `${r.title}: the same reduce and threshold`);
    }
  });

  it('FieldStreamDeviceSilent fires for each device that sent a reading within the last 24 hours but none for 15 minutes, and for no other', async () => {
    const { rule, rows, devices } = await ruleAnswer('FieldStreamDeviceSilent');
    assert.deepEqual(devices, ['pump-1', 'pump-2', 'pump-3', 'pump-4']);
    assert.deepEqual(firing(rule, rows), ['pump-3', 'pump-4']);
  });

  it("FieldStreamDeviceCertificateExpiring fires for each device whose certificate has under 30 whole days left now, by its gateway's last word of the last 30 days, and for no other", async () => {
    const { rule, rows, devices } = await ruleAnswer('FieldStreamDeviceCertificateExpiring');
    assert.deepEqual(devices, ['meter-1', 'meter-2', 'meter-3', 'meter-4', 'meter-6', 'meter-7', 'meter-8']);
    assert.deepEqual(firing(rule, rows), ['meter-1', 'meter-3', 'meter-7', 'meter-8']);
    const days = Object.fromEntries(rows);
    assert.deepEqual([days['meter-1'], days['meter-3'], days['meter-6'], days['meter-7'], days['meter-8']], [20, 25, 30, 29, -1]);
  });

  it('FieldStreamDeviceBacklog fires for each device whose last health message says its oldest message not committed is over an hour old, and for no other', async () => {
    const { rule, rows, devices } = await ruleAnswer('FieldStreamDeviceBacklog');
    assert.deepEqual(devices, HEALTH_TELLING);
    assert.deepEqual(firing(rule, rows), ['meter-1', 'meter-5', 'meter-7']);
  });

  it('FieldStreamDeviceDiskLow fires for each device whose last health message says under 64 MiB are free on its data folder, and for no other', async () => {
    const { rule, rows, devices } = await ruleAnswer('FieldStreamDeviceDiskLow');
    assert.deepEqual(devices, HEALTH_TELLING);
    assert.deepEqual(firing(rule, rows), ['meter-2', 'meter-5']);
  });
});
