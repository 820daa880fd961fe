/**
 * Benchmark of writing readings to PostgreSQL (npm run bench:postgres), against a real PostgreSQL 15
 * started here in a temporary folder (scripts/local-stack/databases.ts), over TCP with a password
 * as the distributor connects. Every method writes the same batches into a table keyed as the
 * sink's (device, time, message_key) and must leave a batch written twice as one copy:
 *   1. INSERT … SELECT FROM json_to_recordset($1::json) … ON CONFLICT (primary key) DO NOTHING, one JSON
 *      parameter per batch;
 *   2. INSERT … SELECT FROM unnest($1::text[], $2::bigint[], …) … ON CONFLICT (primary key) DO NOTHING (arrays);
 *   3. multi-row INSERT … VALUES (…), (…) … ON CONFLICT (primary key) DO NOTHING (at most 65,535 parameters);
 *   4. COPY into a temporary staging table, then INSERT … SELECT … ON CONFLICT (primary key) DO NOTHING, in one
 *      transaction (COPY itself cannot skip duplicates): the sink's way, as the fastest here
 *      (internal-network/distributor/sinks/postgres/rows.ts);
 * each for two layouts: a row per reading with its fields as JSONB, and a narrow row per field
 * (value_double / value_text / value_bool columns). Then two typical queries on each layout: the
 * latest reading of every device, and the hourly average of one field of one device over a day.
 * Writes bench/results/postgres-write.json and .md (not kept in git; docs/postgres.md quotes the
 * figures). `--quick` runs a small set and writes nothing.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { Postgres } from '../scripts/local-stack/databases.ts';
import { tempDir } from '../test/helpers/pki.ts';

const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false } } });
const quick = values.quick;
const DEVICES = quick ? 10 : 100;
const READINGS_PER_DEVICE = quick ? 200 : 5_000;
const BATCH = 5000; // DISTRIBUTOR_BATCH_MAX_POINTS' default
const HOUR_MS = 3_600_000;
const START = Date.parse('2026-01-01T00:00:00Z');

interface Reading {
  device: string;
  time: number;
  key: string;
  fields: { temperature: number; humidity: number; door: boolean; mode: string };
}

/** A reading a minute per device, four fields of three types. */
function readings(): Reading[] {
  const out: Reading[] = [];
  for (let i = 0; i < READINGS_PER_DEVICE; i++) {
    for (let d = 0; d < DEVICES; d++) {
      out.push({
        device: `dev-${d}`,
        time: START + i * 60_000,
        key: `s:boot${d}:${i}`,
        fields: { temperature: 20 + Math.sin(i / 60) * 5 + d / 100, humidity: 40 + (i % 30), door: i % 7 === 0, mode: i % 2 ? 'auto' : 'manual' },
      });
    }
  }
  return out;
}

type Layout = 'jsonb' | 'narrow';
type Method = 'json_to_recordset' | 'unnest' | 'values' | 'copy';

const TABLE: Record<Layout, string> = {
  jsonb: 'CREATE TABLE t (device text NOT NULL, time timestamptz NOT NULL, message_key text NOT NULL, fields jsonb NOT NULL, PRIMARY KEY (device, time, message_key))',
  narrow:
    'CREATE TABLE t (device text NOT NULL, time timestamptz NOT NULL, message_key text NOT NULL, field text NOT NULL, value_double double precision, value_text text, value_bool boolean, PRIMARY KEY (device, time, message_key, field))',
};
/** The conflict each INSERT skips: a copy, by the table's primary key (as the sink's INSERTs name it). */
const CONFLICT: Record<Layout, string> = { jsonb: 'ON CONFLICT (device, time, message_key) DO NOTHING', narrow: 'ON CONFLICT (device, time, message_key, field) DO NOTHING' };
const TS = (x: string) => `'epoch'::timestamptz + ${x} * interval '1 millisecond'`;

/** Narrow rows of a reading: one per field, its value in the column of its type. */
function narrow(r: Reading): Array<[string, number, string, string, number | null, string | null, boolean | null]> {
  return Object.entries(r.fields).map(([f, v]) => [r.device, r.time, r.key, f, typeof v === 'number' ? v : null, typeof v === 'string' ? v : null, typeof v === 'boolean' ? v : null]);
}

async function writeBatch(client: pg.PoolClient, layout: Layout, method: Method, batch: Reading[]): Promise<void> {
  const rows: unknown[][] = layout === 'jsonb' ? batch.map((r) => [r.device, r.time, r.key, r.fields]) : batch.flatMap(narrow);
  const cols = layout === 'jsonb' ? ['device', 'time', 'message_key', 'fields'] : ['device', 'time', 'message_key', 'field', 'value_double', 'value_text', 'value_bool'];
  const types = layout === 'jsonb' ? ['text', 'bigint', 'text', 'jsonb'] : ['text', 'bigint', 'text', 'text', 'double precision', 'text', 'boolean'];
  const select = (p: string) => cols.map((c, i) => (c === 'time' ? TS(`${p}.c${i}`) : `${p}.c${i}`)).join(', ');
  switch (method) {
    case 'json_to_recordset': {
      const json = JSON.stringify(rows.map((row) => Object.fromEntries(row.map((v, i) => [`c${i}`, v]))));
      await client.query(`INSERT INTO t (${cols.join(', ')}) SELECT ${select('r')} FROM json_to_recordset($1::json) AS r(${types.map((t, i) => `c${i} ${t}`).join(', ')}) ${CONFLICT[layout]}`, [json]);
      return;
    }
    case 'unnest': {
      const arrays = cols.map((_, i) => rows.map((row) => (types[i] === 'jsonb' ? JSON.stringify(row[i]) : row[i])));
      await client.query(`INSERT INTO t (${cols.join(', ')}) SELECT ${select('u')} FROM unnest(${types.map((t, i) => `$${i + 1}::${t}[]`).join(', ')}) AS u(${cols.map((_, i) => `c${i}`).join(', ')}) ${CONFLICT[layout]}`, arrays);
      return;
    }
    case 'values': {
      const per = Math.floor(65_535 / cols.length);
      for (let at = 0; at < rows.length; at += per) {
        const part = rows.slice(at, at + per);
        const params: unknown[] = [];
        const tuples = part.map((row) => `(${row.map((v, i) => {
          params.push(types[i] === 'jsonb' ? JSON.stringify(v) : v);
          return cols[i] === 'time' ? TS(`$${params.length}::bigint`) : `$${params.length}::${types[i]}`;
        }).join(', ')})`);
        await client.query(`INSERT INTO t (${cols.join(', ')}) VALUES ${tuples.join(', ')} ${CONFLICT[layout]}`, params);
      }
      return;
    }
    case 'copy': {
      await client.query('BEGIN');
      await client.query(`CREATE TEMP TABLE IF NOT EXISTS s_${layout} (${cols.map((c, i) => `c${i} ${types[i]}`).join(', ')}) ON COMMIT DELETE ROWS`);
      // COPY's text format: tab-separated, \N for NULL, backslash escapes (PostgreSQL docs, COPY).
      const esc = (v: unknown) => (v === null ? '\\N' : (typeof v === 'object' ? JSON.stringify(v) : String(v)).replace(/\\/g, '\\\\').replace(/\t/g, '\\t').replace(/\n/g, '\\n').replace(/\r/g, '\\r'));
      const text = rows.map((row) => row.map(esc).join('\t')).join('\n') + '\n';
      await pipeline(Readable.from([text]), client.query(copyFrom(`COPY s_${layout} FROM STDIN`)));
      await client.query(`INSERT INTO t (${cols.join(', ')}) SELECT ${select('s')} FROM s_${layout} AS s ${CONFLICT[layout]}`);
      await client.query('COMMIT');
      return;
    }
  }
}

const QUERIES: Record<Layout, { latest: string; hourly: string }> = {
  jsonb: {
    latest: 'SELECT DISTINCT ON (device) device, time, fields FROM t ORDER BY device, time DESC',
    hourly: "SELECT date_trunc('hour', time) AS hour, avg((fields->>'temperature')::float8) FROM t WHERE device = $1 AND time >= $2 AND time < $3 GROUP BY 1 ORDER BY 1",
  },
  narrow: {
    latest: 'SELECT DISTINCT ON (device, field) device, field, time, value_double, value_text, value_bool FROM t ORDER BY device, field, time DESC',
    hourly: "SELECT date_trunc('hour', time) AS hour, avg(value_double) FROM t WHERE device = $1 AND field = 'temperature' AND time >= $2 AND time < $3 GROUP BY 1 ORDER BY 1",
  },
};

async function timeQuery(pool: pg.Pool, sql: string, params: unknown[]): Promise<number> {
  await pool.query(sql, params); // warm
  const runs = 5;
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) await pool.query(sql, params);
  return (performance.now() - t0) / runs;
}

async function main(): Promise<void> {
  const work = tempDir('bench-pg');
  const db = await Postgres.start(join(work.dir, 'pg'));
  const password = 'bench-password';
  await db.createUser('bench', password);
  const pool = new pg.Pool({ host: db.host, port: db.port, user: 'bench', password, database: 'bench', max: 2 });
  const data = readings();
  const results: Array<Record<string, unknown>> = [];
  try {
    for (const layout of ['jsonb', 'narrow'] as const) {
      for (const method of ['json_to_recordset', 'unnest', 'values', 'copy'] as const) {
        await pool.query('DROP TABLE IF EXISTS t');
        await pool.query(TABLE[layout]);
        const client = await pool.connect();
        const t0 = performance.now();
        try {
          for (let at = 0; at < data.length; at += BATCH) await writeBatch(client, layout, method, data.slice(at, at + BATCH));
        } finally {
          client.release();
        }
        const seconds = (performance.now() - t0) / 1000;
        // Everything again: must write nothing.
        const again = await pool.connect();
        try {
          await writeBatch(again, layout, method, data.slice(0, BATCH));
        } finally {
          again.release();
        }
        const rowsIn = Number((await pool.query('SELECT count(*) AS n FROM t')).rows[0].n);
        const expected = layout === 'jsonb' ? data.length : data.length * 4;
        if (rowsIn !== expected) throw new Error(`${layout}/${method}: ${rowsIn} rows, expected ${expected}`);
        const size = Number((await pool.query("SELECT pg_total_relation_size('t') AS b")).rows[0].b);
        const entry: Record<string, unknown> = { layout, method, readings: data.length, seconds: Math.round(seconds * 1000) / 1000, readingsPerSecond: Math.round(data.length / seconds), megabytes: Math.round(size / 104857.6) / 10 };
        if (method === 'json_to_recordset') {
          await pool.query('VACUUM ANALYZE t');
          const day = [START + HOUR_MS * 24, START + HOUR_MS * 48].map((ms) => new Date(ms));
          entry.latestPerDeviceMs = Math.round((await timeQuery(pool, QUERIES[layout].latest, [])) * 100) / 100;
          entry.hourlyAverageMs = Math.round((await timeQuery(pool, QUERIES[layout].hourly, ['dev-1', ...day])) * 100) / 100;
        }
        results.push(entry);
        process.stdout.write(`${JSON.stringify(entry)}\n`);
      }
    }
  } finally {
    await pool.end();
    await db.stop();
    work.cleanup();
  }
  if (quick) return;
  const dir = join(import.meta.dirname, 'results');
  mkdirSync(dir, { recursive: true });
  const meta = { cpus: cpus().length, cpu: cpus()[0]?.model, devices: DEVICES, readingsPerDevice: READINGS_PER_DEVICE, batch: BATCH, at: new Date().toISOString() };
  writeFileSync(join(dir, 'postgres-write.json'), JSON.stringify({ meta, results }, null, 2));
  const md = [
    `PostgreSQL 15, ${meta.cpus} × ${meta.cpu}; ${data.length} readings (${DEVICES} devices, 4 fields each), batches of ${BATCH}`,
    '',
    '| layout | method | readings/s | MB | latest per device (ms) | hourly average (ms) |',
    '|---|---|---:|---:|---:|---:|',
    ...results.map((r) => `| ${r.layout} | ${r.method} | ${r.readingsPerSecond} | ${r.megabytes} | ${r.latestPerDeviceMs ?? ''} | ${r.hourlyAverageMs ?? ''} |`),
  ].join('\n');
  writeFileSync(join(dir, 'postgres-write.md'), md + '\n');
  process.stdout.write(md + '\n');
}

main().catch((err: Error) => {
  process.stderr.write(`bench failed: ${err.message}\n`);
  process.exit(1);
});
