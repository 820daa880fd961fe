import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import pg from 'pg';
import { InfluxV1, PgBouncer, Postgres } from '../../scripts/local-stack/databases.ts';
import { distributorLike, startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';
import { TcpRelay } from '../helpers/tcp-relay.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';
import { createLogger } from '../../shared/logger.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { POINT_KEY, type StoredPoint } from '../../internal-network/distributor/points.ts';
import { migrate, MIGRATIONS } from '../../internal-network/distributor/sinks/postgres/schema.ts';
import { poolConfig } from '../../internal-network/shared/postgres-settings.ts';
import { PostgresSink } from '../../internal-network/distributor/sinks/postgres/sink.ts';
import { PostgresHistory } from '../../internal-network/console/history/postgres.ts';
import { PostgresResponses } from '../../internal-network/command-api/stored-responses.ts';
import { postgresConnection, type PostgresSettings } from '../../internal-network/distributor/sinks/postgres/settings.ts';
import { createCertificateAuthority, issueCertificate } from '../../pki/certificates.ts';
import type { Distributor } from '../../internal-network/distributor/distributor.ts';

const USER = 'fieldstream';
const PASSWORD = 'pg-secret-Ab3dE9xQ';
const INFLUX_DB = 'pgboth';
const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof FieldStreamError ? e.code : String(e)));
const reading = (device: string, key: string, fields: StoredPoint['fields'], time: number): StoredPoint => ({ measurement: 'readings', tags: { device }, fields, time, [POINT_KEY]: key });

/**
 * The PostgreSQL sink against a real PostgreSQL 15 (password authentication over TCP, as deployed;
 * TimescaleDB is not packaged here, so this is the plain-table path), first on its own, then in the
 * distributor beside a real InfluxDB 1.x, devices sending through the real gateway.
 */
describe('the PostgreSQL sink', () => {
  const work = tempDir('pgsink');
  let db: Postgres;
  let admin: pg.Client;
  const quiet = createLogger('test', 'silent');
  const settings = (over: Partial<PostgresSettings> = {}): PostgresSettings => ({
    POSTGRES_URL: `postgres://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${db.port}/${USER}`,
    POSTGRES_SSL: 'disable',
    POSTGRES_SCHEMA: 'fieldstream',
    POSTGRES_POOL_SIZE: 2,
    POSTGRES_TIMEOUT_MS: 3000,
    ...over,
  });
  const sinks: PostgresSink[] = [];
  const sink = (over: Partial<PostgresSettings> = {}) => {
    const s = new PostgresSink(postgresConnection(settings(over)), quiet);
    sinks.push(s);
    return s;
  };
  /** The tests' own connection, as the superuser over the socket; it dies with each stop of the server. */
  const connectAdmin = async () => {
    const c = new pg.Client({ host: db.dir, port: db.port, user: db.superuser, database: USER });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  };
  const rows = async (sql: string, params: unknown[] = []) => (await admin.query(sql, params)).rows as Record<string, unknown>[];
  const count = async (table: string, where = 'true', params: unknown[] = []) => Number((await rows(`SELECT count(*) AS n FROM fieldstream.${table} WHERE ${where}`, params))[0]?.n);

  const ca = createCertificateAuthority('FieldStream test database CA', 2);
  const server = issueCertificate(ca, { commonName: 'localhost', organizationalUnit: 'services', role: 'server', subjectAltNames: ['localhost'], validityDays: 2 });
  const caFile = join(work.dir, 'db-ca.crt');
  before(async () => {
    writeFileSync(caFile, ca.certPem);
    db = await Postgres.start(join(work.dir, 'pg'), { tls: { certPem: server.certPem, keyPem: server.keyPem } });
    await db.createUser(USER, PASSWORD);
    admin = await connectAdmin();
  });
  after(async () => {
    for (const s of sinks) await s.close().catch(() => undefined);
    await admin?.end().catch(() => undefined);
    await db?.stop();
    work.cleanup();
  });

  it('makes its schema once, even with two distributors starting at once, as plain tables without TimescaleDB', async () => {
    const [a, b] = [sink(), sink()];
    assert.deepEqual(await Promise.all([code(a.write([reading('m1', 's:e:1', { v: 1 }, 1)])), code(b.write([reading('m1', 's:e:2', { v: 2 }, 2)]))]), ['ok', 'ok']);
    assert.deepEqual(await rows('SELECT version FROM fieldstream.schema_migrations ORDER BY version'), [{ version: 1 }, { version: 2 }, { version: 3 }]);
    const tables = await rows("SELECT relname, relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = 'fieldstream' AND relkind IN ('r', 'p') ORDER BY relname");
    assert.deepEqual(
      tables.map((t) => t.relname),
      ['command_responses', 'device_health', 'device_status', 'events', 'files', 'gateway_status', 'readings', 'schema_migrations', 'security_events'],
    );
    // A third start finds nothing to do.
    await sink().write([reading('m1', 's:e:3', { v: 3 }, 3)]);
    assert.equal(await count('readings', "device = 'm1'"), 3);
  });

  it('brings a schema of version 1 to version 2: device_status gains since, the rows it held kept', async () => {
    const v1 = MIGRATIONS[0];
    assert.ok(v1);
    // As a distributor of the version before left it: made by its role, which owns the tables.
    await admin.query(`SET ROLE ${USER}`);
    try {
      await admin.query('CREATE SCHEMA v1only');
      for (const sql of v1.statements({ schema: 'v1only', timescale: false })) await admin.query(sql);
      await admin.query(`CREATE TABLE v1only.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
      await admin.query(`INSERT INTO v1only.schema_migrations (version, name) VALUES (1, $1)`, [v1.name]);
      await admin.query(`INSERT INTO v1only.device_status (device, time, message_key, gateway, state) VALUES ('old', now(), 'k', 'gw-1', 'online')`);
    } finally {
      await admin.query('RESET ROLE');
    }
    const s = sink({ POSTGRES_SCHEMA: 'v1only' });
    const reminder: StoredPoint = { measurement: 'device_status', tags: { device: 'old', gateway: 'gw-1', republished: 'true' }, fields: { state: 'online', since: 1_000 }, time: 2_000, [POINT_KEY]: 'gw-1:2000:online' };
    assert.equal(await code(s.write([reminder])), 'ok');
    assert.deepEqual(await rows('SELECT version FROM v1only.schema_migrations ORDER BY version'), [{ version: 1 }, { version: 2 }, { version: 3 }]);
    assert.deepEqual(await rows("SELECT message_key, (extract(epoch FROM since) * 1000)::bigint AS since FROM v1only.device_status WHERE device = 'old' ORDER BY time"), [
      { message_key: 'gw-1:2000:online', since: '1000' },
      { message_key: 'k', since: null },
    ]);
  });

  it('keeps numbers, strings and booleans as they came, and timestamps to the millisecond', async () => {
    const s = sink();
    await s.write([reading('t1', 's:e:1', { temp: 21.5, count: 42, big: 9007199254740991, ok: true, label: 'a "quoted", ünïcode string' }, 1767225600123)]);
    const [r] = await rows(
      "SELECT fields, jsonb_typeof(fields->'temp') AS t, jsonb_typeof(fields->'ok') AS b, jsonb_typeof(fields->'label') AS l, (extract(epoch FROM time) * 1000)::bigint AS ms, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS iso FROM fieldstream.readings WHERE device = 't1'",
    );
    assert.deepEqual(r?.fields, { temp: 21.5, count: 42, big: 9007199254740991, ok: true, label: 'a "quoted", ünïcode string' });
    assert.deepEqual([r?.t, r?.b, r?.l], ['number', 'boolean', 'string']);
    assert.equal(r?.ms, '1767225600123');
    assert.equal(r?.iso, '2026-01-01 00:00:00.123000');
  });

  it('reads back through COPY every string as it was sent, whatever tabs, newlines, backslashes or characters it holds', async () => {
    const s = sink();
    const awkward = fc.string({ unit: fc.oneof(fc.constantFrom('\\', '\t', '\n', '\r', '\\N', '\\.', '\\0', '.', '0', ' ', 'é', '€', '😀', '\u2028'), fc.string({ unit: 'binary', maxLength: 1 })) }).filter((x) => !x.includes('\0'));
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(awkward, awkward, awkward), { minLength: 1, maxLength: 8 }), async (values) => {
        const device = `copy-${++run}`;
        // Text columns (event_type, message) and a JSONB one (extra), each with the awkward strings.
        await s.write(values.map(([type, message, extra], i): StoredPoint => ({ measurement: 'events', tags: { device, event_type: type }, fields: { message, extra }, time: 1000 + i, [POINT_KEY]: `k${i}\t${type}` })));
        const back = await rows('SELECT message_key, event_type, message, extra FROM fieldstream.events WHERE device = $1 ORDER BY time', [device]);
        assert.deepEqual(back, values.map(([type, message, extra], i) => ({ message_key: `k${i}\t${type}`, event_type: type, message, extra: { extra } })));
      }),
      { numRuns: 30 },
    );
    await admin.query("DELETE FROM fieldstream.events WHERE device LIKE 'copy-%'"); // the next test counts every event
  });

  it('writes nothing for a batch delivered again, and each kind of point into its table', async () => {
    const s = sink();
    const batch: StoredPoint[] = [
      reading('r1', 's:e:10', { v: 1 }, 1000),
      reading('r1', 's:e:11', { v: 2 }, 1001),
      { measurement: 'events', tags: { device: 'r1', event_type: 'door_open', severity: 'warning' }, fields: { message: 'open', floor: 3 }, time: 1002, [POINT_KEY]: 's:e:12' },
      { measurement: 'command_responses', tags: { device: 'r1', status: 'ok' }, fields: { cmd_id: 'c-1', result: '{"x":1}' }, time: 1003, [POINT_KEY]: 's:e:13' },
      { measurement: 'device_status', tags: { device: 'r1', gateway: 'gw-1' }, fields: { state: 'online', cert_not_after: 1800000000000, cert_days_left: 12.5 }, time: 1004, [POINT_KEY]: 'gw-1:1004:online' },
      { measurement: 'gateway_status', tags: { gateway: 'gw-1' }, fields: { state: 'online', since: 900 }, time: 2000, [POINT_KEY]: '900:online:2000' },
      { measurement: 'security_events', tags: { device: 'r1', reason: 'GATEWAY_RATE_LIMITED', source: 'gateway' }, fields: { count: 7, gateway: 'gw-1', from: 500, detail: '7 refused' }, time: 1005, [POINT_KEY]: 'g:gw-1:500:1005:GATEWAY_RATE_LIMITED' },
    ];
    await s.write(batch);
    const before = { r: await count('readings', "device = 'r1'"), e: await count('events'), c: await count('command_responses'), d: await count('device_status'), g: await count('gateway_status'), x: await count('security_events') };
    assert.deepEqual(before, { r: 2, e: 1, c: 1, d: 1, g: 1, x: 1 });
    // The column command_id from the point's field cmd_id (no longer a tag: points.ts responsePoints).
    assert.deepEqual(await rows("SELECT command_id, status, result FROM fieldstream.command_responses WHERE device = 'r1'"), [{ command_id: 'c-1', status: 'ok', result: '{"x":1}' }]);
    // A retry: the same batch, the gateway's presence with the same arrival (its key) included.
    await s.write(batch);
    await s.write(batch.slice(0, 2));
    assert.deepEqual({ r: await count('readings', "device = 'r1'"), e: await count('events'), c: await count('command_responses'), d: await count('device_status'), g: await count('gateway_status'), x: await count('security_events') }, before);
    const [e] = await rows('SELECT event_type, severity, message, extra FROM fieldstream.events');
    assert.deepEqual(e, { event_type: 'door_open', severity: 'warning', message: 'open', extra: { floor: 3 } });
    const [st] = await rows("SELECT (extract(epoch FROM cert_not_after) * 1000)::bigint AS ms, cert_days_left FROM fieldstream.device_status");
    assert.deepEqual(st, { ms: '1800000000000', cert_days_left: 12.5 });
    const [sec] = await rows('SELECT reason, source, gateway, count, (extract(epoch FROM from_time) * 1000)::bigint AS from_ms FROM fieldstream.security_events');
    assert.deepEqual(sec, { reason: 'GATEWAY_RATE_LIMITED', source: 'gateway', gateway: 'gw-1', count: 7, from_ms: '500' });
  });

  it('writes a batch of large messages in transactions of at most LIMITS.postgresTransactionMaxBytes of COPY text (a row over it alone), every row kept', async () => {
    // Messages of the broker's largest packet, one from each consumer, gathered into one batch:
    // backslashes, escaped once in JSON and again for COPY, made one table's COPY text of the batch
    // longer than a JavaScript string can be ("Invalid string length", about 512 MiB), a failure
    // retried for ever while every message behind it waited. 34 readings of 128 fields of 32 Ki
    // backslashes: 16.8 MB of COPY text each, 571 MB in all.
    const backslashes = '\\'.repeat(32 * 1024);
    const fields = Object.fromEntries(Array.from({ length: 128 }, (_, f) => [`s${f}`, backslashes]));
    const s = sink({ POSTGRES_SCHEMA: 'largebatch', POSTGRES_TIMEOUT_MS: 60_000 });
    const n = 34;
    assert.equal(await code(s.write(Array.from({ length: n }, (_, i) => reading('lb', `s:e:${i}`, fields, 1_700_000_000_000 + i)))), 'ok');
    // Each row is over the bound by itself: a transaction of its own.
    assert.equal(s.stats.transactions, n);
    const stored = await rows(`SELECT count(*) AS n, min(length(fields->>'s7')) AS shortest FROM largebatch.readings WHERE device = 'lb'`);
    assert.deepEqual(stored, [{ n: String(n), shortest: 32 * 1024 }]);
  });

  it("keeps every gateway presence, so that its latest row is the gateway's state whatever the batches and their order", async () => {
    const s = sink();
    /** A gateway presence as the distributor makes it (message-handler.ts): `since` the process's start, keyed by its arrival. */
    const presence = (gateway: string, state: 'online' | 'offline', since: number, arrived: number): StoredPoint => ({
      measurement: 'gateway_status',
      tags: { gateway },
      fields: { state, since },
      time: arrived,
      [POINT_KEY]: `${since}:${state}:${arrived}`,
    });
    const history = async (gateway: string) =>
      (await rows('SELECT state, (extract(epoch FROM time) * 1000)::bigint AS ms FROM fieldstream.gateway_status WHERE gateway = $1 ORDER BY time', [gateway])).map((r) => `${r.state}@${r.ms}`);
    const now = async (gateway: string) => (await rows('SELECT state FROM fieldstream.gateway_status WHERE gateway = $1 ORDER BY time DESC LIMIT 1', [gateway]))[0]?.state;
    const S = 1_700_000_000_000;

    // Its connection lost, then a flap (connected and lost again) joined into one batch by the
    // batcher: the last `offline` is kept, though the table's latest row already said `offline`.
    await s.write([presence('gw-flap', 'online', S, S + 1000)]);
    await s.write([presence('gw-flap', 'offline', S, S + 2000)]);
    await s.write([presence('gw-flap', 'online', S, S + 3000), presence('gw-flap', 'offline', S, S + 3005)]);
    assert.equal(await now('gw-flap'), 'offline');
    assert.deepEqual(await history('gw-flap'), [`online@${S + 1000}`, `offline@${S + 2000}`, `online@${S + 3000}`, `offline@${S + 3005}`]);

    // The same flap written out of order (two consumers, or the first write retried after the second):
    // the `offline` is kept, and the older `online` written after it does not become the state.
    await s.write([presence('gw-order', 'online', S, S + 1000)]);
    await s.write([presence('gw-order', 'offline', S, S + 2000)]);
    await s.write([presence('gw-order', 'offline', S, S + 3005)]);
    await s.write([presence('gw-order', 'online', S, S + 3000)]);
    assert.equal(await now('gw-order'), 'offline');
    assert.deepEqual(await history('gw-order'), [`online@${S + 1000}`, `offline@${S + 2000}`, `online@${S + 3000}`, `offline@${S + 3005}`]);

    // The same process connects again: its second `online` is the very same message as its first,
    // and is a row of its own (its arrival in the key); a retry of it writes nothing more.
    await s.write([presence('gw-order', 'online', S, S + 9000)]);
    await s.write([presence('gw-order', 'online', S, S + 9000)]);
    assert.equal(await now('gw-order'), 'online');
    assert.equal(await count('gateway_status', "gateway = 'gw-order'"), 5);

    // A device's presence has no such condition (each is a row, keyed by its gateway's time): the
    // same flap, in one batch and out of order, leaves it offline too.
    const device = (d: string, state: 'online' | 'offline', at: number): StoredPoint => ({ measurement: 'device_status', tags: { device: d, gateway: 'gw-1' }, fields: { state }, time: at, [POINT_KEY]: `gw-1:${at}:${state}` });
    const deviceNow = async (d: string) => (await rows('SELECT state FROM fieldstream.device_status WHERE device = $1 ORDER BY time DESC LIMIT 1', [d]))[0]?.state;
    await s.write([device('dev-flap', 'online', S + 1000)]);
    await s.write([device('dev-flap', 'offline', S + 2000)]);
    await s.write([device('dev-flap', 'online', S + 3000), device('dev-flap', 'offline', S + 3005)]);
    await s.write([device('dev-order', 'online', S + 1000)]);
    await s.write([device('dev-order', 'offline', S + 2000)]);
    await s.write([device('dev-order', 'offline', S + 3005)]);
    await s.write([device('dev-order', 'online', S + 3000)]);
    assert.deepEqual([await deviceNow('dev-flap'), await deviceNow('dev-order')], ['offline', 'offline']);
    assert.deepEqual([await count('device_status', "device = 'dev-flap'"), await count('device_status', "device = 'dev-order'")], [4, 4]);
    await admin.query("DELETE FROM fieldstream.device_status WHERE device LIKE 'dev-%'"); // later tests read device_status
  });

  it('refuses data PostgreSQL cannot hold (DISTRIBUTOR_WRITE_REJECTED), and retries when it is down or the password is wrong', async () => {
    const s = sink();
    // JSON and the contract allow U+0000 in a string; PostgreSQL's text cannot hold it (SQLSTATE 22P05).
    assert.equal(await code(s.write([reading('n1', 's:e:1', { label: 'a\u0000b' }, 1)])), 'DISTRIBUTOR_WRITE_REJECTED');
    assert.equal(await code(s.write([reading('n1', 's:e:2', { label: 'fine' }, 2)])), 'ok', 'the connection is usable after a refusal');
    // The same in a text column (SQLSTATE 22021), and a lone UTF-16 surrogate in either: refused by
    // the server, never stored changed (as U+FFFD, say).
    const event = (key: string, message: string, extra: string): StoredPoint => ({ measurement: 'events', tags: { device: 'n1', event_type: 'x' }, fields: { message, extra }, time: 5, [POINT_KEY]: key });
    assert.equal(await code(s.write([reading('n1', 's:e:20', { v: 1 }, 20), event('s:e:21', 'a\u00001', '')])), 'DISTRIBUTOR_WRITE_REJECTED');
    assert.equal(await code(s.write([event('s:e:22', 'lone \ud800 high', '')])), 'DISTRIBUTOR_WRITE_REJECTED');
    assert.equal(await code(s.write([event('s:e:23', '', 'lone \udc00 low')])), 'DISTRIBUTOR_WRITE_REJECTED');
    assert.equal(await count('events', "device = 'n1'"), 0);
    assert.equal(await count('readings', "device = 'n1' AND message_key = 's:e:20'"), 0, 'a batch is all or nothing');
    assert.equal(await code(sink({ POSTGRES_URL: `postgres://${USER}:wrong@127.0.0.1:${db.port}/${USER}` }).write([reading('n1', 's:e:3', { v: 1 }, 3)])), 'DISTRIBUTOR_WRITE_FAILED');
    await db.stop();
    try {
      assert.equal(await code(s.write([reading('n1', 's:e:4', { v: 1 }, 4)])), 'DISTRIBUTOR_WRITE_FAILED');
    } finally {
      await db.restart();
      await admin.end().catch(() => undefined);
      admin = await connectAdmin();
    }
    assert.equal(await code(s.write([reading('n1', 's:e:4', { v: 1 }, 4)])), 'ok', 'the pool reconnects');
    assert.equal(await count('readings', "device = 'n1'"), 2);
  });

  it('stays up when a connection in use is lost without a word from the server (a link cut, a backend killed): the write and the reads fail coded, the next ones succeed', async () => {
    // node-postgres emits 'error' on a client whose socket ends unexpectedly, and the pool listens
    // only while the client is idle in it: checked out, an unexpected end took the process down.
    const relay = new TcpRelay({ host: '127.0.0.1', port: db.port });
    await relay.start();
    const url = `postgres://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${relay.port}/${USER}`;
    const connection = postgresConnection(settings({ POSTGRES_URL: url, POSTGRES_SCHEMA: 'cutlink' }));
    const s = sink({ POSTGRES_URL: url, POSTGRES_SCHEMA: 'cutlink' });
    const history = new PostgresHistory(connection);
    const responses = new PostgresResponses(connection);
    /** `op` started with the server's answers held, then the link cut under it. */
    const cutUnder = async <T,>(op: () => Promise<T>) => {
      relay.hold('down');
      const pending = op().then(
        () => 'ok',
        (e: unknown) => (e instanceof FieldStreamError ? e.code : String(e)),
      );
      await eventually(() => (relay.held('down').length > 0 ? true : undefined), 5_000, 'an answer held');
      await relay.cut();
      const outcome = await pending;
      relay.release('down');
      await relay.restore();
      return outcome;
    };
    try {
      // Cut while the first write's connection is opened; then under a write's transaction.
      assert.equal(await cutUnder(() => s.write([reading('c1', 's:e:1', { v: 1 }, 1)])), 'DISTRIBUTOR_WRITE_FAILED');
      assert.equal(await code(s.write([reading('c1', 's:e:1', { v: 1 }, 1)])), 'ok');
      assert.equal(await cutUnder(() => s.write([reading('c1', 's:e:2', { v: 2 }, 2)])), 'DISTRIBUTOR_WRITE_FAILED');
      assert.equal(await code(s.write([reading('c1', 's:e:2', { v: 2 }, 2)])), 'ok');
      assert.deepEqual(await rows("SELECT message_key FROM cutlink.readings WHERE device = 'c1' ORDER BY message_key"), [{ message_key: 's:e:1' }, { message_key: 's:e:2' }]);
      const series = await history.series('c1', 'v', 0, 10);
      assert.ok(series.length > 0, 'the rows read');
      assert.equal(await cutUnder(() => history.series('c1', 'v', 0, 10)), 'CONSOLE_HISTORY_FAILED');
      assert.deepEqual(await history.series('c1', 'v', 0, 10), series);
      const lookUp = () => responses.find([{ commandId: 'c-1', deviceId: 'c1', signedOnly: true }]);
      assert.equal(await cutUnder(lookUp), 'API_RESPONSES_UNREADABLE');
      assert.deepEqual(await lookUp(), []);
    } finally {
      await history.close();
      await responses.close();
      await relay.close();
    }
  });

  it('makes its schema again when the database lost it under a running distributor, rather than retrying a missing table until a restart', async () => {
    const s = sink({ POSTGRES_SCHEMA: 'remade' });
    assert.equal(await code(s.write([reading('g1', 's:e:1', { v: 1 }, 1)])), 'ok');
    // As a database made again (a new data folder, a restore from before the first start) leaves it.
    await admin.query('DROP SCHEMA remade CASCADE');
    // The write that finds it gone fails (retried by its consumer); the next one makes it again.
    assert.equal(await code(s.write([reading('g1', 's:e:2', { v: 2 }, 2)])), 'DISTRIBUTOR_WRITE_FAILED');
    assert.equal(await code(s.write([reading('g1', 's:e:2', { v: 2 }, 2)])), 'ok');
    assert.deepEqual(await rows('SELECT version FROM remade.schema_migrations ORDER BY version'), [{ version: 1 }, { version: 2 }, { version: 3 }]);
    assert.deepEqual(await rows("SELECT message_key FROM remade.readings WHERE device = 'g1'"), [{ message_key: 's:e:2' }]);
  });

  it('makes a table again when that table alone was dropped, its schema and schema_migrations kept', async () => {
    const s = sink({ POSTGRES_SCHEMA: 'onegone' });
    assert.equal(await code(s.write([reading('g2', 's:e:1', { v: 1 }, 1)])), 'ok');
    // An operator's DROP TABLE (to empty it, or a restore of some tables only): schema_migrations
    // still says version 3, so migrating as at the first write finds nothing to do.
    await admin.query('DROP TABLE onegone.readings');
    assert.equal(await code(s.write([reading('g2', 's:e:2', { v: 2 }, 2)])), 'DISTRIBUTOR_WRITE_FAILED');
    assert.equal(await code(s.write([reading('g2', 's:e:2', { v: 2 }, 2)])), 'ok', 'the next attempt makes the table again');
    assert.deepEqual(await rows("SELECT message_key FROM onegone.readings WHERE device = 'g2'"), [{ message_key: 's:e:2' }]);
    // A table a later migration changed comes back in its latest shape.
    await admin.query('DROP TABLE onegone.device_status');
    const presence: StoredPoint = { measurement: 'device_status', tags: { device: 'g2', gateway: 'gw-1', republished: 'true' }, fields: { state: 'online', since: 1_000 }, time: 2_000, [POINT_KEY]: 'gw-1:2000:online' };
    assert.equal(await code(s.write([presence])), 'DISTRIBUTOR_WRITE_FAILED');
    assert.equal(await code(s.write([presence])), 'ok');
    assert.deepEqual(await rows("SELECT (extract(epoch FROM since) * 1000)::bigint AS since FROM onegone.device_status WHERE device = 'g2'"), [{ since: '1000' }]);
    assert.deepEqual(await rows('SELECT version FROM onegone.schema_migrations ORDER BY version'), [{ version: 1 }, { version: 2 }, { version: 3 }]);
  });

  it('writes through PgBouncer in transaction mode: its statement timeout set in each transaction, no advisory lock left on a pooled connection', async () => {
    // PgBouncer's defaults refuse a client sending statement_timeout at start-up (08P01), and give
    // each transaction whichever server connection is free, which it keeps open after the client leaves.
    const bouncer = await PgBouncer.start(db, USER, USER, PASSWORD);
    try {
      const through = (schema: string) => sink({ POSTGRES_URL: `postgres://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${bouncer.port}/${USER}`, POSTGRES_SCHEMA: schema, POSTGRES_TIMEOUT_MS: 1000 });
      const [a, b] = [through('pooled'), through('pooled')];
      assert.deepEqual(await Promise.all([code(a.write([reading('p1', 's:e:1', { v: 1 }, 1)])), code(b.write([reading('p1', 's:e:2', { v: 2 }, 2)]))]), ['ok', 'ok']);
      assert.deepEqual(await rows('SELECT version FROM pooled.schema_migrations ORDER BY version'), [{ version: 1 }, { version: 2 }, { version: 3 }]);
      assert.deepEqual(await rows("SELECT locktype, granted FROM pg_locks WHERE locktype = 'advisory'"), [], 'the migration lock went with its transaction');
      // The timeout holds all the same: a write waiting on a table locked by another transaction ends (57014).
      await admin.query('BEGIN');
      await admin.query('LOCK TABLE pooled.readings IN ACCESS EXCLUSIVE MODE');
      const started = Date.now();
      try {
        assert.equal(await code(a.write([reading('p1', 's:e:3', { v: 3 }, 3)])), 'DISTRIBUTOR_WRITE_FAILED');
        assert.ok(Date.now() - started < 1900, `ended by the statement timeout (1 s), not the client's (2 s): ${Date.now() - started} ms`);
      } finally {
        await admin.query('ROLLBACK');
      }
      assert.equal(await code(a.write([reading('p1', 's:e:3', { v: 3 }, 3)])), 'ok');
      assert.deepEqual(await rows("SELECT message_key FROM pooled.readings WHERE device = 'p1' ORDER BY message_key"), [{ message_key: 's:e:1' }, { message_key: 's:e:2' }, { message_key: 's:e:3' }]);
    } finally {
      await bouncer.stop();
    }
  });

  it('fails every write behind PgBouncer in statement mode, which allows no transaction, and docs/postgres.md says so', async () => {
    // Each write is a transaction (all or nothing), as is each migration: statement mode refuses both.
    const bouncer = await PgBouncer.start(db, USER, USER, PASSWORD, 'statement');
    try {
      const s = sink({ POSTGRES_URL: `postgres://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${bouncer.port}/${USER}`, POSTGRES_SCHEMA: 'statementmode' });
      const failed = await s.write([reading('b1', 's:e:1', { v: 1 }, 1)]).catch((e: unknown) => e);
      assert.ok(failed instanceof FieldStreamError && failed.code === 'DISTRIBUTOR_WRITE_FAILED' && /statement pooling mode/.test(failed.message), String(failed));
    } finally {
      await bouncer.stop();
    }
    const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'postgres.md'), 'utf8').replace(/\s+/g, ' ');
    assert.ok(!doc.includes('any `pool_mode`'), 'statement mode is not any pool_mode that works');
    assert.ok(/`pool_mode = statement`[^.]*refuses/.test(doc), 'the doc names statement mode as refusing the writes');
  });

  it("the console's history and the command API's responses read through PgBouncer too, each read under the statement timeout of its own transaction", async () => {
    const bouncer = await PgBouncer.start(db, USER, USER, PASSWORD);
    const url = `postgres://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${bouncer.port}/${USER}`;
    const connection = postgresConnection(settings({ POSTGRES_URL: url, POSTGRES_SCHEMA: 'pooledreads', POSTGRES_TIMEOUT_MS: 1000 }));
    const history = new PostgresHistory(connection);
    const responses = new PostgresResponses(connection);
    try {
      const t = Date.UTC(2026, 0, 1);
      assert.equal(await code(sink({ POSTGRES_URL: url, POSTGRES_SCHEMA: 'pooledreads' }).write([reading('r1', 's:e:1', { v: 4 }, t)])), 'ok');
      // Sent as a startup parameter, statement_timeout had PgBouncer refuse every connection (08P01).
      assert.deepEqual(await history.series('r1', 'v', t - 1000, t + 1000), [[t, 4]]);
      assert.deepEqual(await responses.find([{ commandId: 'c-1', deviceId: 'r1', signedOnly: true }]), []);
      // The timeout holds: a read waiting on a table locked by another transaction ends on the server (57014).
      await admin.query('BEGIN');
      await admin.query('LOCK TABLE pooledreads.readings IN ACCESS EXCLUSIVE MODE');
      const started = Date.now();
      try {
        const refused = await history.series('r1', 'v', t - 1000, t + 1000).catch((e: unknown) => e);
        assert.ok(refused instanceof FieldStreamError && refused.code === 'CONSOLE_HISTORY_FAILED' && /57014/.test(refused.message), String(refused));
        assert.ok(Date.now() - started < 1900, `ended by the statement timeout (1 s), not the client's (2 s): ${Date.now() - started} ms`);
      } finally {
        await admin.query('ROLLBACK');
      }
      // No setting and no transaction left on the pooled server connections: a session of the pool reads at once.
      assert.deepEqual(await history.series('r1', 'v', t - 1000, t + 1000), [[t, 4]]);
      assert.deepEqual(await rows("SELECT state FROM pg_stat_activity WHERE usename = $1 AND state LIKE 'idle in transaction%'", [USER]), []);
    } finally {
      await history.close();
      await responses.close();
      await bouncer.stop();
    }
  });

  it('gives up a read on a server that no longer answers after the client timeout (twice POSTGRES_TIMEOUT_MS), not twice that, and its connection is not used again', async () => {
    // The backend serving the console's connection is stopped (SIGSTOP): it answers nothing, and its
    // own statement timeout never fires. The client's read timeout ends the read; a ROLLBACK sent
    // then waited behind the read still running for a read timeout of its own before the
    // connection was dropped, so the page waited twice as long as the client timeout says.
    const timeoutMs = 1500;
    const history = new PostgresHistory(postgresConnection(settings({ POSTGRES_SCHEMA: 'stalledreads', POSTGRES_TIMEOUT_MS: timeoutMs })));
    let stopped: number | undefined;
    try {
      assert.deepEqual(await history.series('r1', 'v', 0, 1000), [], 'no table yet: an empty series, and an idle connection in the pool');
      const [backend] = await rows("SELECT pid FROM pg_stat_activity WHERE application_name = 'fieldstream-console' AND usename = $1", [USER]);
      stopped = Number(backend?.pid);
      process.kill(stopped, 'SIGSTOP');
      const started = Date.now();
      const refused = await history.series('r1', 'v', 0, 1000).catch((e: unknown) => e);
      const waitedMs = Date.now() - started;
      assert.ok(refused instanceof FieldStreamError && refused.code === 'CONSOLE_HISTORY_FAILED' && /read timeout/.test(refused.message), String(refused));
      assert.ok(waitedMs < 3 * timeoutMs, `given up at the client timeout (${2 * timeoutMs} ms), not twice it (${4 * timeoutMs} ms): ${waitedMs} ms`);
      process.kill(stopped, 'SIGCONT');
      stopped = undefined;
      // The next read takes a new connection, not the one whose read may still be running.
      assert.deepEqual(await history.series('r1', 'v', 0, 1000), []);
    } finally {
      if (stopped !== undefined) process.kill(stopped, 'SIGCONT');
      await history.close();
    }
  });

  it('gives up migrating on a server that no longer answers after the client timeout (twice POSTGRES_TIMEOUT_MS), not twice that', async () => {
    // The backend of the migrating connection is stopped (SIGSTOP): it answers nothing, and its own
    // statement timeout never fires. A ROLLBACK sent after the client's read timeout waited behind
    // the statement still running for a read timeout of its own, so a distributor's start against
    // a hung server waited twice as long as the client timeout says before it tried again.
    const timeoutMs = 1500;
    const pool = new pg.Pool(poolConfig(postgresConnection(settings({ POSTGRES_TIMEOUT_MS: timeoutMs }))));
    const client = await pool.connect();
    let stopped: number | undefined;
    try {
      const pid = Number((await client.query('SELECT pg_backend_pid() AS pid')).rows[0]?.pid);
      // Stopped once the migration's transaction has begun (its first statement answered): the
      // statement after it goes unanswered, inside the transaction.
      let statements = 0;
      const stalling = Object.assign(Object.create(client) as pg.PoolClient, {
        query: async (...args: Parameters<pg.PoolClient['query']>) => {
          const result = await (client.query as (...a: unknown[]) => Promise<unknown>)(...args);
          if (++statements === 1) process.kill((stopped = pid), 'SIGSTOP');
          return result;
        },
      });
      const started = Date.now();
      const failed = await migrate(stalling, 'stalledschema', quiet, timeoutMs).catch((e: unknown) => e);
      const waitedMs = Date.now() - started;
      assert.equal(statements, 1, 'stopped inside the transaction');
      assert.ok(failed instanceof Error && /timeout/.test(failed.message), String(failed));
      assert.ok(waitedMs < 3 * timeoutMs, `given up at the client timeout (${2 * timeoutMs} ms), not twice it (${4 * timeoutMs} ms): ${waitedMs} ms`);
    } finally {
      if (stopped !== undefined) process.kill(stopped, 'SIGCONT');
      client.release(true);
      await pool.end();
    }
    // Its transaction ended with the connection: nothing of it was made, and the next migration takes the lock at once.
    await eventually(async () => ((await rows("SELECT 1 FROM pg_namespace WHERE nspname = 'stalledschema'")).length === 0 && (await rows("SELECT 1 FROM pg_locks WHERE locktype = 'advisory'")).length === 0 ? true : undefined), 5_000, 'the stalled migration backed out');
    assert.equal(await code(sink({ POSTGRES_SCHEMA: 'stalledschema' }).write([reading('m1', 's:e:1', { v: 1 }, 1)])), 'ok');
  });

  it('connects over TLS as POSTGRES_SSL says: verify-full checks the server against the CA file and its name', async () => {
    const url = `postgres://${USER}:${encodeURIComponent(PASSWORD)}@localhost:${db.port}/${USER}`;
    const tlsSessions = async () => Number((await rows("SELECT count(*) AS n FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.usename = $1 AND a.application_name = 'fieldstream-distributor'", [USER]))[0]?.n);
    const plain = await tlsSessions();
    assert.equal(await code(sink({ POSTGRES_URL: url, POSTGRES_SSL: 'verify-full', POSTGRES_SSL_CA_FILE: caFile }).write([reading('tls1', 's:e:1', { v: 1 }, 1)])), 'ok');
    assert.ok((await tlsSessions()) > plain, 'the pooled connection is encrypted');
    assert.equal(await code(sink({ POSTGRES_URL: url, POSTGRES_SSL: 'require' }).write([reading('tls1', 's:e:2', { v: 2 }, 2)])), 'ok', 'require does not check the server');
    // Another CA: the server cannot be verified. The operator's to fix, so retried, never a dead letter.
    const foreign = join(work.dir, 'foreign-ca.crt');
    writeFileSync(foreign, createCertificateAuthority('someone else', 2).certPem);
    assert.equal(await code(sink({ POSTGRES_URL: url, POSTGRES_SSL: 'verify-full', POSTGRES_SSL_CA_FILE: foreign }).write([reading('tls1', 's:e:3', { v: 3 }, 3)])), 'DISTRIBUTOR_WRITE_FAILED');
    // The certificate names localhost, not 127.0.0.1: verify-full refuses the address, verify-ca takes it.
    const byAddress = `postgres://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${db.port}/${USER}`;
    const refused = await sink({ POSTGRES_URL: byAddress, POSTGRES_SSL: 'verify-full', POSTGRES_SSL_CA_FILE: caFile })
      .write([reading('tls1', 's:e:4', { v: 4 }, 4)])
      .catch((e: unknown) => e);
    assert.ok(refused instanceof FieldStreamError && refused.code === 'DISTRIBUTOR_WRITE_FAILED' && /altnames/.test(refused.message), String(refused));
    assert.equal(await code(sink({ POSTGRES_URL: byAddress, POSTGRES_SSL: 'verify-ca', POSTGRES_SSL_CA_FILE: caFile }).write([reading('tls1', 's:e:5', { v: 5 }, 5)])), 'ok');
    assert.equal(await count('readings', "device = 'tls1'"), 3);
  });

  describe('in the distributor, beside InfluxDB', () => {
    let fx: EmbeddedFixture;
    let influx: InfluxV1;
    let distributor: Distributor;
    let device: RawDevice;
    const env = () => ({
      POSTGRES_URL: `postgres://${USER}@127.0.0.1:${db.port}/${USER}`,
      PGPASSWORD_FILE: join(work.dir, 'pg-password'),
      POSTGRES_TIMEOUT_MS: '2000',
      INFLUXDB_URL: influx.url,
      INFLUXDB_DATABASE: INFLUX_DB,
      INFLUXDB_USERNAME: influx.user,
      INFLUXDB_PASSWORD: influx.password,
      DISTRIBUTOR_RETRY_MAX_MS: '300',
    });
    let sent = 0;
    const send = (fields: Record<string, unknown>, messageId = `m-${++sent}`, timestamp = 1767225600000 + sent) => {
      device.send(JSON.stringify({ deviceId: 'sensor-001', dataType: 'timeseries', messageId, payload: { ...fields, timestamp } }));
      return { messageId, timestamp };
    };
    // Frames settled by one envelope's PUBACK share one ack frame: ids are gathered until this one is named.
    const ackedIds = new Set<string>();
    const acked = async (messageId: string) => {
      while (!ackedIds.has(messageId)) {
        const f = await device.next();
        assert.equal(f.type, 'ack', JSON.stringify(f));
        if (f.type === 'ack') for (const id of f.messageIds) ackedIds.add(id);
      }
    };
    const pgReadings = () => rows("SELECT message_key, fields, (extract(epoch FROM time) * 1000)::bigint AS ms FROM fieldstream.readings WHERE device = 'sensor-001' ORDER BY time");
    const influxReadings = () => influx.rows(INFLUX_DB, `SELECT * FROM readings WHERE device = 'sensor-001'`);

    before(async () => {
      writeFileSync(join(work.dir, 'pg-password'), `${PASSWORD}\n`);
      influx = await InfluxV1.start(join(work.dir, 'influx'), INFLUX_DB);
      fx = await startEmbeddedFixture(['sensor-001']);
      await fx.pipeline.distributor.close();
      distributor = distributorLike(fx, env());
      await distributor.ready;
      device = await RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, 'sensor-001'));
    });
    after(async () => {
      device?.close();
      await distributor?.close();
      await fx?.stop();
      await influx?.process.stop();
    });

    it('stores every reading in both, once each, a message sent twice included', async () => {
      const first = send({ temp: 20.25, on: true, mode: 'auto', n: 7 });
      await acked(first.messageId);
      // The device sends it again (its ack was lost): same message id, same timestamp. Unsigned, so
      // no replay window stands in the way: only the message key keeps it to one row.
      device.send(JSON.stringify({ deviceId: 'sensor-001', dataType: 'timeseries', messageId: first.messageId, payload: { temp: 20.25, on: true, mode: 'auto', n: 7, timestamp: first.timestamp } }));
      await acked(first.messageId);
      const second = send({ temp: 20.5 });
      await acked(second.messageId);
      const pgRows = await eventually(async () => {
        const r = await pgReadings();
        return r.length >= 2 ? r : undefined;
      });
      assert.deepEqual(pgRows, [
        { message_key: `m:${first.messageId}`, fields: { temp: 20.25, on: true, mode: 'auto', n: 7 }, ms: String(first.timestamp) },
        { message_key: `m:${second.messageId}`, fields: { temp: 20.5 }, ms: String(second.timestamp) },
      ]);
      const inflx = await influxReadings();
      assert.deepEqual(
        inflx.map((r) => [r.time, r.temp]),
        [
          [first.timestamp, 20.25],
          [second.timestamp, 20.5],
        ],
      );
      assert.ok(distributor.stats().messages >= 3);
      // The device's presence went to PostgreSQL too.
      await eventually(async () => ((await count('device_status', "device = 'sensor-001' AND state = 'online'")) >= 1 ? true : undefined), 10_000, 'the presence row');
    });

    it('holds messages while PostgreSQL is down, and writes each once when it is back', async () => {
      await db.stop();
      const during = [send({ temp: 1 }), send({ temp: 2 }), send({ temp: 3 })];
      for (const m of during) await acked(m.messageId); // the broker has them
      await eventually(() => (distributor.stats().retries >= 2 ? true : undefined), 15_000, 'write retries');
      assert.ok(fx.logs.codes().includes('DISTRIBUTOR_WRITE_FAILED'));
      await db.restart();
      await admin.end().catch(() => undefined);
      admin = await connectAdmin();
      const stored = await eventually(async () => {
        const r = await pgReadings();
        return during.every((m) => r.some((x) => x.ms === String(m.timestamp))) ? r : undefined;
      }, 30_000, 'the held messages in PostgreSQL');
      assert.equal(new Set(stored.map((r) => r.message_key)).size, stored.length, 'no message twice');
      assert.deepEqual(
        stored.filter((r) => during.some((m) => r.ms === String(m.timestamp))).map((r) => (r.fields as { temp: number }).temp),
        [1, 2, 3],
      );
      const inflx = await influxReadings();
      for (const m of during) assert.ok(inflx.some((r) => r.time === m.timestamp), 'InfluxDB has it too');
    });

    it('keeps a message PostgreSQL refuses as a dead letter, and stores the ones after it', async () => {
      const bad = send({ label: 'nul \u0000 inside' });
      await acked(bad.messageId);
      const good = send({ temp: 99 });
      await acked(good.messageId);
      await eventually(async () => ((await pgReadings()).some((r) => r.ms === String(good.timestamp)) ? true : undefined), 15_000, 'the later message stored');
      assert.equal((await pgReadings()).filter((r) => r.ms === String(bad.timestamp)).length, 0);
      const dead = await eventually(() => {
        if (!existsSync(fx.data.deadLetters)) return undefined;
        const lines = readdirSync(fx.data.deadLetters).flatMap((f) => readFileSync(join(fx.data.deadLetters, f), 'utf8').split('\n').filter(Boolean));
        const found = lines.map((l) => JSON.parse(l) as { code: string; payloadBase64: string }).find((l) => Buffer.from(l.payloadBase64, 'base64').toString().includes(bad.messageId));
        return found;
      }, 10_000, 'the dead letter');
      assert.equal(dead.code, 'DISTRIBUTOR_WRITE_REJECTED');
    });

    it('never logs the password, also when PostgreSQL refuses it', async () => {
      const wrong = 'wrong-Zq8rT5pW';
      const failing = distributorLike(fx, { ...env(), PGPASSWORD_FILE: '', POSTGRES_URL: `postgres://${USER}:${wrong}@127.0.0.1:${db.port}/${USER}`, DISTRIBUTOR_CLIENT_ID: 'distributor-wrong-password', DISTRIBUTOR_STATE_DIR: join(work.dir, 'state-wrong') });
      try {
        await failing.ready;
        const m = send({ temp: 5 });
        await acked(m.messageId);
        await eventually(() => (fx.logs.lines.some((l) => l.code === 'DISTRIBUTOR_WRITE_FAILED' && String(l.msg).includes('password authentication failed')) ? true : undefined), 15_000, 'a refused login logged');
      } finally {
        await failing.close();
      }
      const text = fx.logs.lines.map((l) => JSON.stringify(l)).join('\n');
      assert.ok(text.includes('PostgreSQL fieldstream@127.0.0.1'), 'the connection is described in the log');
      assert.ok(!text.includes(PASSWORD), 'no password in the log');
      assert.ok(!text.includes(wrong), 'no wrong password in the log either');
    });

    it('stops within its close grace while a write to a frozen PostgreSQL is in flight, not after the client timeout', async () => {
      // Twice POSTGRES_TIMEOUT_MS (20 s) is when the client gives a frozen server up: far longer than a stop may take.
      const stopping = distributorLike(fx, { ...env(), POSTGRES_TIMEOUT_MS: '10000', DISTRIBUTOR_CLIENT_ID: 'distributor-pg-stop', DISTRIBUTOR_STATE_DIR: join(work.dir, 'state-pg-stop') });
      let closed = false;
      let frozen: number[] = [];
      try {
        await stopping.ready;
        const before = send({ temp: 7 });
        await acked(before.messageId);
        await eventually(() => (stopping.stats().messages >= 1 ? true : undefined), 15_000, 'a write through, the schema made');
        // Frozen as a hung server is: the backends serving the distributors answer nothing (nor
        // does their statement timeout fire), and no connection is taken (the postmaster).
        const backends = (await rows("SELECT pid FROM pg_stat_activity WHERE application_name = 'fieldstream-distributor'")).map((r) => Number(r.pid));
        assert.ok(backends.length > 0);
        for (const pid of backends) process.kill(pid, 'SIGSTOP');
        frozen = backends;
        await db.process.pause();
        const m = send({ temp: 8 });
        await acked(m.messageId);
        // Its write is in flight on a connection of the frozen server.
        await new Promise((r) => setTimeout(r, 1_000));
        const started = performance.now();
        await stopping.close();
        closed = true;
        const tookMs = performance.now() - started;
        // A bound on a hang, not a measure of speed: the grace is TIMINGS.closeGraceMs (2 s) for the
        // last counts and as much for the store's connections.
        assert.ok(tookMs < 10_000, `the stop took ${Math.round(tookMs)} ms`);
      } finally {
        for (const pid of frozen) process.kill(pid, 'SIGCONT');
        await db.process.resume();
        if (!closed) await stopping.close();
      }
    });
  });
});
