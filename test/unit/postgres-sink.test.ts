import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { parseConfig } from '../../shared/config.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { POINT_KEY, readingPoints, uplinkKey, type StoredPoint } from '../../internal-network/distributor/points.ts';
import fc from 'fast-check';
import { copyField, copyRows, copyText } from '../../internal-network/distributor/sinks/postgres/copy.ts';
import { fallbackKey, halves, tableStatements, TABLES, toTableBatches, toTransactions, transactionBytes, type TableStatements } from '../../internal-network/distributor/sinks/postgres/rows.ts';
import { MIGRATIONS, SCHEMA_VERSION } from '../../internal-network/distributor/sinks/postgres/schema.ts';
import { checkPostgresSettings, clientTimeoutMs, poolConfig, postgresConnection, postgresEnabled, postgresSettings } from '../../internal-network/distributor/sinks/postgres/settings.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { isRejection } from '../../internal-network/distributor/sinks/postgres/sink.ts';
import { parseEnvelope, UplinkEnvelopeSchema, type EnvelopeOf } from '../../shared/contract/envelope.ts';
import { inTempDir } from '../helpers/pki.ts';

const Settings = z.object(postgresSettings()).superRefine(checkPostgresSettings);
const settings = (env: Record<string, string>) => parseConfig(Settings, env);

describe('PostgreSQL settings', () => {
  it('is off without POSTGRES_URL or PGHOST', () => {
    assert.equal(postgresEnabled(settings({})), false);
    assert.equal(postgresEnabled(settings({ PGHOST: 'db' })), true);
  });

  it('takes the URL first, the PG* variables for what it leaves out, and never puts the password in the description', () => {
    const c = postgresConnection(settings({ POSTGRES_URL: 'postgres://fs:s%40cret@db.example:6543/tsdb', PGUSER: 'other', PGDATABASE: 'other' }));
    assert.deepEqual([c.host, c.port, c.user, c.password, c.database], ['db.example', 6543, 'fs', 's@cret', 'tsdb']);
    assert.ok(!c.description.includes('cret'), c.description);
    const d = postgresConnection(settings({ PGHOST: '10.0.0.5', PGPORT: '5433', PGUSER: 'u', PGDATABASE: 'd', PGPASSWORD: 'p' }));
    assert.deepEqual([d.host, d.port, d.user, d.password, d.database, d.schema, d.poolSize], ['10.0.0.5', 5433, 'u', 'p', 'd', 'fieldstream', 4]);
  });

  it('reads PGPASSWORD_FILE without its final newline, and names the setting when it cannot', () => {
    inTempDir('pgset', (dir) => {
      writeFileSync(join(dir, 'pw'), 'from-file\n');
      assert.equal(postgresConnection(settings({ PGHOST: 'h', PGPASSWORD_FILE: join(dir, 'pw') })).password, 'from-file');
      assert.throws(
        () => postgresConnection(settings({ PGHOST: 'h', PGPASSWORD_FILE: join(dir, 'missing') })),
        (e: unknown) => e instanceof FieldStreamError && e.code === 'CONFIG_FILE_UNREADABLE' && e.message.includes('PGPASSWORD_FILE'),
      );
    });
  });

  it('maps the TLS modes as libpq does', () => {
    assert.equal(postgresConnection(settings({ PGHOST: 'db' })).ssl, false);
    const req = postgresConnection(settings({ PGHOST: 'db', POSTGRES_SSL: 'require' })).ssl;
    assert.ok(req && req.rejectUnauthorized === false);
    const full = postgresConnection(settings({ PGHOST: 'db.example', POSTGRES_SSL: 'verify-full' })).ssl;
    assert.ok(full && full.rejectUnauthorized === true && full.servername === 'db.example' && full.checkServerIdentity === undefined);
    const ca = postgresConnection(settings({ PGHOST: '10.1.1.1', POSTGRES_SSL: 'verify-ca' })).ssl;
    assert.ok(ca && ca.rejectUnauthorized === true && ca.servername === undefined && typeof ca.checkServerIdentity === 'function');
  });

  it('refuses contradictions: URL parameters, a password twice, a certificate without its key, an odd schema name', () => {
    const problems = (env: Record<string, string>) => {
      try {
        settings(env);
        return [];
      } catch (e) {
        return (e as FieldStreamError).details?.variables;
      }
    };
    assert.deepEqual(problems({ POSTGRES_URL: 'postgres://h/db?sslmode=require' }), ['POSTGRES_URL']);
    assert.deepEqual(problems({ PGPASSWORD: 'a', PGPASSWORD_FILE: '/x' }), ['PGPASSWORD_FILE']);
    assert.deepEqual(problems({ POSTGRES_SSL_CERT_FILE: '/c' }), ['POSTGRES_SSL_KEY_FILE']);
    assert.deepEqual(problems({ POSTGRES_SCHEMA: 'Field"Stream' }), ['POSTGRES_SCHEMA']);
    // Names PostgreSQL refuses unquoted (SQLSTATE 42601) or keeps for itself (42939): every statement
    // would fail, retried for ever. Key words it allows as names stay allowed.
    for (const name of ['user', 'order', 'table', 'default', 'system_user', 'pg_data']) assert.deepEqual(problems({ POSTGRES_SCHEMA: name }), ['POSTGRES_SCHEMA'], name);
    for (const name of ['int', 'between', 'data', 'fieldstream_2']) assert.deepEqual(problems({ POSTGRES_SCHEMA: name }), [], name);
    assert.deepEqual(problems({ POSTGRES_URL: 'mysql://h/db' }), ['POSTGRES_URL']);
  });

  it("refuses libpq's list of hosts (PGHOST=a,b; the URL's host=a,b), which node-postgres would look up as one name and never reach", () => {
    const problems = (env: Record<string, string>) => {
      try {
        settings(env);
        return [];
      } catch (e) {
        return (e as FieldStreamError).details?.variables;
      }
    };
    assert.deepEqual(problems({ PGHOST: 'pg1.example,pg2.example' }), ['PGHOST']);
    assert.deepEqual(problems({ PGHOST: '/run/postgresql,/tmp' }), ['PGHOST']);
    assert.deepEqual(problems({ POSTGRES_URL: 'postgres://u@pg1,pg2/db' }), ['POSTGRES_URL']);
    assert.deepEqual(problems({ POSTGRES_URL: 'postgres:///db?host=/run/a,/run/b' }), ['POSTGRES_URL']);
    assert.deepEqual(problems({ PGHOST: 'pg.example' }), []);
    assert.deepEqual(problems({ POSTGRES_URL: 'postgres:///db?host=/run/postgresql' }), []);
  });

  it("refuses a POSTGRES_TIMEOUT_MS whose client timeout (twice it) a Node timer cannot hold: past 2^31 - 1 ms it fires at once", () => {
    const accepted = (ms: number) => {
      try {
        return postgresConnection(settings({ PGHOST: 'db', POSTGRES_TIMEOUT_MS: String(ms) })).timeoutMs === ms;
      } catch (e) {
        assert.ok(e instanceof FieldStreamError && e.code === 'CONFIG_INVALID' && (e.details?.variables as string[]).includes('POSTGRES_TIMEOUT_MS'), String(e));
        return false;
      }
    };
    // 2^30 ms (12.4 days): twice it is 2^31, one past what a timer holds.
    for (const ms of [2 ** 30, 2_000_000_000, 3_000_000_000]) assert.equal(accepted(ms), false, String(ms));
    assert.equal(accepted(TIMINGS.postgresTimeoutMaxMs), true);
    assert.equal(poolConfig(postgresConnection(settings({ PGHOST: 'db', POSTGRES_TIMEOUT_MS: String(TIMINGS.postgresTimeoutMaxMs) }))).query_timeout, 2 ** 31 - 2);
    // A query of several statements (a transaction's INSERTs and its COMMIT): one timeout more per statement, never past a timer's most.
    assert.equal(clientTimeoutMs(1000, 5), 6000);
    assert.equal(clientTimeoutMs(TIMINGS.postgresTimeoutMaxMs, 9), TIMINGS.timerMaxMs);
  });

  it('refuses a URL whose user, password or database is not valid percent-encoding, without showing it', () => {
    for (const url of ['postgres://fs:50%off@db/fs', 'postgres://f%zz:pw@db/fs', 'postgres://fs:pw@db/f%']) {
      assert.throws(
        () => settings({ POSTGRES_URL: url }),
        (e: unknown) => e instanceof FieldStreamError && e.code === 'CONFIG_INVALID' && /percent-encoding/.test(e.message) && !e.message.includes('50%off') && !e.message.includes('f%zz'),
        url,
      );
    }
    assert.equal(postgresConnection(settings({ POSTGRES_URL: 'postgres://fs:50%25off@db/fs' })).password, '50%off');
  });
});

describe('PostgreSQL rows', () => {
  const env = parseEnvelope(
    UplinkEnvelopeSchema,
    Buffer.from(JSON.stringify({ v: 1, deviceId: 'd1', dataType: 'timeseries', gatewayId: 'gw', receivedAt: 5, messages: [{ messageId: 'a.1', payload: { t: 1.5, ok: true } }, { messageId: 'a.2', payload: { t: 2 } }] })),
  ) as EnvelopeOf<'timeseries'>;

  it('gives each point the key of its message, out of every JSON form of the point', () => {
    const pts = readingPoints(env, [uplinkKey('a.1', { epoch: 'e', seq: 1 }), uplinkKey('a.2')]);
    assert.deepEqual(pts.map((p) => p[POINT_KEY]), ['s:e:1', 'm:a.2']);
    assert.equal(JSON.stringify(pts[0]), '{"measurement":"readings","tags":{"device":"d1"},"fields":{"t":1.5,"ok":true},"time":5}');
    assert.equal(readingPoints(env)[0]?.[POINT_KEY], undefined);
  });

  it('groups a batch per table, one COPY text each, with the key, the millisecond time and the fields kept as JSON', () => {
    const pts: StoredPoint[] = [
      ...readingPoints(env, ['s:e:1', 's:e:2']),
      { measurement: 'events', tags: { device: 'd1', event_type: 'door' }, fields: { message: 'm', floor: 2 }, time: 7, [POINT_KEY]: 's:e:3' },
    ];
    const statements = new Map<string, TableStatements>();
    const { batches, unknown } = toTableBatches('fs', pts, statements);
    assert.deepEqual(unknown, []);
    assert.deepEqual(
      batches.map((b) => [b.table, b.rows, b.text]),
      [
        ['readings', 2, 'd1\t5\ts:e:1\t{"t":1.5,"ok":true}\nd1\t5\ts:e:2\t{"t":2}\n'],
        ['events', 1, 'd1\t7\ts:e:3\tdoor\t\\N\tm\t{"floor":2}\n'],
      ],
    );
    assert.equal(statements.size, 2, 'statements are made once per table');
    assert.deepEqual(toTableBatches('fs', [{ measurement: 'nope', tags: {}, fields: {}, time: 1 }], statements).unknown, ['nope']);
  });

  it('splits a batch into transactions of at most the bound of COPY text, in UTF-8 bytes, a row over it alone, every row kept in order', () => {
    const statements = new Map<string, TableStatements>();
    // A reading's row 'd1\t5\ts:e:N\t{"t":N}\n' is 19 bytes: two fit in 50, not three.
    const r = (n: number, fields: StoredPoint['fields'] = { t: n }): StoredPoint => ({ measurement: 'readings', tags: { device: 'd1' }, fields, time: 5, [POINT_KEY]: `s:e:${n}` });
    const pts: StoredPoint[] = [
      // 31 characters but 39 bytes ('é' is 2 in UTF-8): a reading after it fits in characters, not in bytes.
      { measurement: 'events', tags: { device: 'd1', event_type: 'door' }, fields: { message: 'é'.repeat(8) }, time: 7, [POINT_KEY]: 's:e:0' },
      r(1),
      r(2),
      r(3, { t: 3, note: 'x'.repeat(100) }), // over the bound by itself
      r(4),
    ];
    const { transactions, unknown } = toTransactions('fs', pts, statements, 50);
    assert.deepEqual(unknown, []);
    assert.deepEqual(
      transactions.map((t) => t.map((b) => [b.table, b.rows])),
      [[['events', 1]], [['readings', 2]], [['readings', 1]], [['readings', 1]]],
    );
    for (const t of transactions) {
      const bytes = t.reduce((n, b) => n + Buffer.byteLength(b.text), 0);
      assert.ok(bytes <= 50 || t.reduce((n, b) => n + b.rows, 0) === 1, `${bytes} bytes`);
    }
    // Every row, in order, as one transaction without a bound (toTableBatches) has them.
    const whole = toTableBatches('fs', pts, statements).batches;
    assert.deepEqual(whole.map((b) => b.table), ['events', 'readings']);
    assert.equal(transactions.flat().filter((b) => b.table === 'events').map((b) => b.text).join(''), whole[0]?.text);
    assert.equal(transactions.flat().filter((b) => b.table === 'readings').map((b) => b.text).join(''), whole[1]?.text);
  });

  it("halves a transaction's rows across its tables (for one past the statement timeout), every row and its key in exactly one half, in order", () => {
    const statements = new Map<string, TableStatements>();
    // A newline inside a value is escaped in COPY text: it never cuts a row.
    const r = (n: number): StoredPoint => ({ measurement: 'readings', tags: { device: 'd1' }, fields: { t: n, s: 'a\nb' }, time: n, [POINT_KEY]: `s:e:${n}` });
    const e = (n: number): StoredPoint => ({ measurement: 'events', tags: { device: 'd1', event_type: 'door' }, fields: { message: `m${n}` }, time: n, [POINT_KEY]: `s:e:${n}` });
    const pts = [r(1), e(2), r(3), e(4), r(5), r(6), r(7)];
    const [whole] = toTransactions('fs', pts, statements).transactions;
    assert.deepEqual(whole?.map((b) => [b.table, b.rows]), [['readings', 5], ['events', 2]]);
    const [first, second] = halves(whole ?? []);
    // 7 rows: the first half has 4, all of readings; the second the last reading and both events.
    assert.deepEqual(first.map((b) => [b.table, b.rows]), [['readings', 4]]);
    assert.deepEqual(second.map((b) => [b.table, b.rows]), [['readings', 1], ['events', 2]]);
    assert.deepEqual(first[0]?.keys, [['d1', 'd1', 'd1', 'd1'], [1, 3, 5, 6], ['s:e:1', 's:e:3', 's:e:5', 's:e:6']]);
    assert.deepEqual(second[0]?.keys, [['d1'], [7], ['s:e:7']]);
    assert.equal((first[0]?.text ?? '') + (second[0]?.text ?? ''), whole?.[0]?.text);
    assert.equal(transactionBytes(first) + transactionBytes(second), transactionBytes(whole ?? []));
    // Down to one row: halving two rows of two tables gives a table each.
    const [a, b] = halves(second.slice(1));
    assert.deepEqual([a.map((x) => [x.table, x.rows, x.text]), b.map((x) => [x.table, x.rows, x.text])], [
      [['events', 1, 'd1\t2\ts:e:2\tdoor\t\\N\tm2\t{}\n']],
      [['events', 1, 'd1\t4\ts:e:4\tdoor\t\\N\tm4\t{}\n']],
    ]);
    const [one, none] = halves(halves(second)[1]);
    assert.equal(one.reduce((n, x) => n + x.rows, 0) + none.reduce((n, x) => n + x.rows, 0), 1);
  });

  it('copies into a temporary staging table, then inserts from it skipping only a row of the same primary key (a copy), times as exact milliseconds after the epoch', () => {
    assert.deepEqual(tableStatements('fs', TABLES.readings!), {
      stage: 'CREATE TEMP TABLE IF NOT EXISTS fieldstream_stage_readings_0a970fb1 (c0 text, c1 bigint, c2 text, c3 jsonb) ON COMMIT DELETE ROWS',
      copy: 'COPY pg_temp.fieldstream_stage_readings_0a970fb1 FROM STDIN',
      insert:
        "INSERT INTO fs.readings (device, time, message_key, fields) SELECT r.c0, 'epoch'::pg_catalog.timestamptz OPERATOR(pg_catalog.+) (r.c1 OPERATOR(pg_catalog.*) interval '1 millisecond'), r.c2, r.c3 FROM pg_temp.fieldstream_stage_readings_0a970fb1 AS r ON CONFLICT (device, time, message_key) DO NOTHING",
      verify:
        "SELECT pg_catalog.count(*)::int AS missing FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.int8[]), pg_catalog.unnest($3::pg_catalog.text[])) AS k(c0, c1, c2) WHERE NOT EXISTS (SELECT 1 FROM fs.readings AS x WHERE x.device OPERATOR(pg_catalog.=) k.c0 AND x.time OPERATOR(pg_catalog.=) ('epoch'::pg_catalog.timestamptz OPERATOR(pg_catalog.+) (k.c1 OPERATOR(pg_catalog.*) interval '1 millisecond')) AND x.message_key OPERATOR(pg_catalog.=) k.c2)",
    });
  });

  it("keeps each row's primary key beside its COPY text, one array per key column, for the look-up after an INSERT that wrote fewer rows than it was given", () => {
    const reading: StoredPoint = { measurement: 'readings', tags: { device: 'd1' }, fields: { v: 1 }, time: 1_000, [POINT_KEY]: 's:e:1' };
    const gateway: StoredPoint = { measurement: 'gateway_status', tags: { gateway: 'gw-1' }, fields: { state: 'online', since: 5 }, time: 2_000, [POINT_KEY]: 'g:1' };
    const { batches } = toTableBatches('fs', [reading, { ...reading, time: 1_001, [POINT_KEY]: 's:e:2' }, gateway], new Map());
    assert.deepEqual(
      batches.map((b) => [b.table, b.keys]),
      [
        ['readings', [['d1', 'd1'], [1_000, 1_001], ['s:e:1', 's:e:2']]],
        ['gateway_status', [['gw-1'], ['g:1']]],
      ],
    );
  });

  it("names a staging table after its columns: a table given a column (device_status.since, schema version 2) does not meet a pooled connection's staging table of the version before", () => {
    const before = { ...TABLES.device_status!, columns: TABLES.device_status!.columns.filter((c) => c.name !== 'since') };
    const [now, then] = [tableStatements('fs', TABLES.device_status!), tableStatements('fs', before)];
    assert.match(now.stage, /^CREATE TEMP TABLE IF NOT EXISTS fieldstream_stage_device_status_[0-9a-f]{8} \(.*, c7 bigint\) ON COMMIT DELETE ROWS$/);
    assert.notEqual(now.stage.split(' ')[6], then.stage.split(' ')[6]);
    assert.match(now.insert, /^INSERT INTO fs\.device_status \(device, time, message_key, gateway, state, cert_not_after, cert_days_left, since\) /);
  });

  it('writes every gateway presence, with no condition on what the table holds (its key has the arrival time)', () => {
    // A condition on the latest row sees the table as before the statement and cannot take back a
    // row it dropped before an older one arrives: a change of state would be lost (postgres-sink e2e).
    const { insert, stage } = tableStatements('fs', TABLES.gateway_status!);
    const staging = stage.split(' ')[6];
    assert.equal(
      insert,
      `INSERT INTO fs.gateway_status (gateway, time, message_key, state, since) SELECT r.c0, 'epoch'::pg_catalog.timestamptz OPERATOR(pg_catalog.+) (r.c1 OPERATOR(pg_catalog.*) interval '1 millisecond'), r.c2, r.c3, 'epoch'::pg_catalog.timestamptz OPERATOR(pg_catalog.+) (r.c4 OPERATOR(pg_catalog.*) interval '1 millisecond') FROM pg_temp.${staging} AS r ON CONFLICT (gateway, message_key) DO NOTHING`,
    );
    for (const spec of Object.values(TABLES)) assert.doesNotMatch(tableStatements('fs', spec).insert, / WHERE /, spec.table);
  });

  it('keys a point without one by its identity as InfluxDB sees it (measurement, tags, time)', () => {
    const p = { measurement: 'readings', tags: { b: '2', a: '1' }, fields: { v: 1 }, time: 9 };
    assert.equal(fallbackKey(p), fallbackKey({ ...p, tags: { a: '1', b: '2' }, fields: { v: 2 } }));
    assert.notEqual(fallbackKey(p), fallbackKey({ ...p, time: 10 }));
  });

  it('has a table for every measurement the distributor writes', async () => {
    const { MEASUREMENTS } = await import('../../internal-network/distributor/points.ts');
    for (const m of Object.values(MEASUREMENTS)) assert.ok(TABLES[m], m);
  });
});

/**
 * COPY's text format read back as the server reads it (PostgreSQL docs, COPY, "Text Format";
 * copyfromparse.c): rows split on newlines, fields on tabs, then the escapes undone; octal escapes
 * give bytes, so a field is decoded to bytes and then read as UTF-8 (fatal: bytes that are not
 * UTF-8 are refused, as the server refuses them).
 */
function readCopy(text: string): Array<Array<string | null>> {
  assert.ok(text.endsWith('\n'));
  return text.slice(0, -1).split('\n').map((line) =>
    line.split('\t').map((field) => {
      if (field === '\\N') return null;
      const bytes: number[] = [];
      for (let i = 0; i < field.length; i++) {
        const c = field[i]!;
        if (c !== '\\') {
          const cp = field.codePointAt(i)!;
          if (cp > 0xffff) i++;
          bytes.push(...Buffer.from(String.fromCodePoint(cp)));
          continue;
        }
        const n = field[++i]!;
        const octal = /^[0-7]{1,3}/.exec(field.slice(i))?.[0];
        if (octal) {
          bytes.push(parseInt(octal, 8) & 0xff);
          i += octal.length - 1;
        } else bytes.push(...Buffer.from(({ t: '\t', n: '\n', r: '\r', b: '\b', f: '\f', v: '\v' } as Record<string, string>)[n] ?? n));
      }
      const s = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(bytes));
      if (s.includes('\0')) throw new Error('NUL'); // the server refuses it too (SQLSTATE 22021)
      return s;
    }),
  );
}

describe('PostgreSQL COPY text', () => {
  const awkward = fc.string({ unit: fc.oneof(fc.constantFrom('\\', '\t', '\n', '\r', '\\N', '\\.', '.', 'N', '0', '7', ' ', 'é', '€', '😀', '\u2028'), fc.string({ unit: 'binary', maxLength: 1 })) });
  const storable = awkward.filter((s) => !s.includes('\0'));

  it('reads back every string as it was, whatever tabs, newlines, backslashes or characters it holds', () => {
    fc.assert(
      fc.property(fc.array(fc.array(fc.option(storable, { nil: null }), { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 5 }), (rows) => {
        const width = rows[0]!.length;
        const table = rows.map((r) => Array.from({ length: width }, (_, i) => r[i] ?? null));
        const text = copyRows(table);
        assert.equal(text.split('\n').length - 1, table.length, 'one line per row');
        assert.deepEqual(readCopy(text), table);
      }),
      { numRuns: 500 },
    );
  });

  it('leaves U+0000 and lone surrogates in a form the server refuses, never changed into something storable', () => {
    fc.assert(
      fc.property(storable, storable, fc.constantFrom('\0', '\ud800', '\udfff', '\udbff'), (a, b, bad) => {
        assert.throws(() => readCopy(`${copyText(a + bad + b)}\n`));
      }),
    );
    assert.equal(copyText('a\u00001'), 'a\\0001', 'a digit after U+0000 stays a digit');
    assert.equal(copyText('\ud83d\ude00'), '\ud83d\ude00', 'a surrogate pair is its character');
    assert.equal(copyText('\ud83d'), '\\355\\240\\275');
  });

  it('writes NULL, numbers, booleans and JSON as the columns read them', () => {
    assert.deepEqual([null, undefined, 1.5, -0, 9007199254740991, NaN, Infinity, true, false].map(copyField), ['\\N', '\\N', '1.5', '0', '9007199254740991', '\\N', '\\N', 't', 'f']);
    assert.equal(copyField({ s: 'tab\there', b: 'back\\slash' }), '{"s":"tab\\\\there","b":"back\\\\\\\\slash"}');
  });
});

describe('PostgreSQL schema', () => {
  it('is versioned, each migration numbered in order', () => {
    assert.deepEqual(MIGRATIONS.map((m) => m.version), Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1));
  });

  it('version 2 gives device_status the column since, safe to run again', () => {
    assert.deepEqual(MIGRATIONS[1]?.statements({ schema: 'fs', timescale: true }), ['ALTER TABLE fs.device_status ADD COLUMN IF NOT EXISTS since timestamptz']);
  });

  it('version 3 gives command_responses the column result_type, safe to run again', () => {
    assert.deepEqual(MIGRATIONS[2]?.statements({ schema: 'fs', timescale: false }), ['ALTER TABLE fs.command_responses ADD COLUMN IF NOT EXISTS result_type text']);
  });

  it('makes idempotent statements, and hypertables only where TimescaleDB is installed', () => {
    const plain = MIGRATIONS[0]!.statements({ schema: 'fs', timescale: false });
    const ts = MIGRATIONS[0]!.statements({ schema: 'fs', timescale: true });
    for (const s of plain) assert.match(s, /^CREATE (TABLE|INDEX) IF NOT EXISTS /);
    assert.ok(!plain.some((s) => s.includes('create_hypertable')));
    assert.deepEqual(
      ts.filter((s) => !plain.includes(s)),
      [
        "SELECT create_hypertable('fs.readings', 'time', if_not_exists => TRUE, migrate_data => TRUE)",
        "SELECT create_hypertable('fs.device_health', 'time', if_not_exists => TRUE, migrate_data => TRUE)",
      ],
    );
    // A hypertable's unique keys must hold its time column.
    for (const table of ['readings', 'device_health']) assert.match(plain.find((s) => s.includes(`fs.${table} (`))!, /PRIMARY KEY \(device, time, message_key\)/);
  });
});

describe('PostgreSQL refusals', () => {
  it('blames the data for SQLSTATE classes 22, 23 and 54 only', () => {
    for (const code of ['22P05', '22021', '23502', '54000']) assert.equal(isRejection({ code }), true, code);
    for (const code of ['08006', '28P01', '57P01', '57014', '53100', '40001', '42P01', 'ECONNREFUSED', undefined]) assert.equal(isRejection({ code }), false, String(code));
    assert.equal(isRejection(null), false);
  });
});
