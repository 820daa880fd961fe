import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Postgres } from '../../scripts/local-stack/databases.ts';
import { tempDir } from '../helpers/pki.ts';
import { captureLogs } from '../helpers/gateway-fixture.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { POINT_KEY, RESPONSE_COMMAND_FIELD, type StoredPoint } from '../../internal-network/distributor/points.ts';
import { PostgresSink } from '../../internal-network/distributor/sinks/postgres/sink.ts';
import { postgresConnection } from '../../internal-network/distributor/sinks/postgres/settings.ts';
import { DistributorMetrics } from '../../internal-network/distributor/metrics.ts';
import { ServiceMetrics } from '../../shared/metrics/registry.ts';
import { parseExposition } from '../helpers/exposition.ts';

const PASSWORD = 'pg-split-Rt7wQ2';
/** milliseconds: the server's statement timeout in these tests (POSTGRES_TIMEOUT_MS) */
const TIMEOUT_MS = 400;

/** about 200 bytes more in each reading's row, so that the size the sink keeps stays above LIMITS.postgresTransactionMinBytes */
const PAD = 'x'.repeat(200);

const reading = (device: string, key: string, i: number): StoredPoint => ({ measurement: 'readings', tags: { device }, fields: { v: i, pad: PAD }, time: 1_767_225_600_000 + i, [POINT_KEY]: key });
const event = (device: string, key: string, i: number): StoredPoint => ({
  measurement: 'events',
  tags: { device, event_type: 'door', severity: 'info' },
  fields: { message: `open ${i}` },
  time: 1_767_225_600_000 + i,
  [POINT_KEY]: key,
});

/**
 * The PostgreSQL sink on a real PostgreSQL 15 whose writes take time in proportion to their rows:
 * a statement-level trigger with a transition table sleeps for each row an INSERT wrote, as many
 * indexes, a heavy trigger or a slow disk would. A transaction of the whole batch is always past
 * POSTGRES_TIMEOUT_MS (SQLSTATE 57014); smaller ones are not.
 */
describe('the PostgreSQL sink when a transaction is always past its statement timeout', () => {
  const work = tempDir('pgsplit');
  let db: Postgres;
  const sinks: PostgresSink[] = [];
  const sink = (user: string, log = captureLogs(), metrics?: DistributorMetrics, timeoutMs = TIMEOUT_MS) => {
    const s = new PostgresSink(
      postgresConnection({ POSTGRES_URL: `postgres://${user}:${PASSWORD}@127.0.0.1:${db.port}/${user}`, POSTGRES_SSL: 'disable', POSTGRES_SCHEMA: 'fieldstream', POSTGRES_POOL_SIZE: 2, POSTGRES_TIMEOUT_MS: timeoutMs }),
      log.logger,
      metrics && { statementTimeouts: metrics.postgresStatementTimeouts, transactionMaxBytes: metrics.postgresTransactionMaxBytes },
    );
    sinks.push(s);
    return { sink: s, lines: log.lines };
  };
  /** Each INSERT into `table` of `user`'s database sleeps `perRowS` seconds for every row it wrote. */
  const slow = (user: string, table: string, perRowS: number) =>
    db.psql(
      `CREATE OR REPLACE FUNCTION fieldstream.slow_${table}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep((SELECT count(*) FROM n) * ${perRowS}); RETURN NULL; END $$;
       CREATE OR REPLACE TRIGGER slow_${table} AFTER INSERT ON fieldstream.${table} REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION fieldstream.slow_${table}()`,
      user,
    );
  const rows = async (user: string, sql: string) => (await db.psql(sql, user)).trim();

  before(async () => {
    db = await Postgres.start(join(work.dir, 'pg'));
  });
  after(async () => {
    for (const s of sinks) await s.close().catch(() => undefined);
    await db?.stop();
    work.cleanup();
  });

  it('writes a batch whose one transaction always times out in smaller ones, every row once, and keeps the smaller size', async () => {
    await db.createUser('splitrole', PASSWORD);
    const metrics = new DistributorMetrics(new ServiceMetrics('distributor', { processMetrics: false, counting: true }));
    const { sink: s, lines } = sink('splitrole', captureLogs(), metrics);
    const scrape = async () => parseExposition(await metrics.metrics.registry.metrics());
    // The schema is made by a first write, before the tables are slowed down.
    await s.write([reading('warm', 'w:1', 0)]);
    // 15 ms a row: 160 rows take 2.4 s, six times the timeout; 40 take 0.6 s, 20 take 0.3 s.
    await slow('splitrole', 'readings', 0.015);
    await slow('splitrole', 'events', 0.015);
    const batch = Array.from({ length: 160 }, (_, i) => (i % 4 === 3 ? event(`d${i % 5}`, `e:${i}`, i) : reading(`d${i % 5}`, `r:${i}`, i)));
    // Retried whole at the same size, the write never succeeded: every attempt 57014.
    assert.equal((await scrape()).get('fieldstream_distributor_postgres_statement_timeouts_total{service="distributor"}'), 0);
    await s.write(batch);
    assert.equal(await rows('splitrole', "SELECT count(*) || '/' || count(DISTINCT message_key) FROM fieldstream.readings WHERE device <> 'warm'"), '120/120');
    assert.equal(await rows('splitrole', "SELECT count(*) || '/' || count(DISTINCT message_key) FROM fieldstream.events"), '40/40');
    assert.equal(await rows('splitrole', "SELECT sum((fields->>'v')::int) FROM fieldstream.readings WHERE device <> 'warm'"), String(batch.reduce((t, p, i) => t + (p.measurement === 'readings' ? i : 0), 0)));
    const shrunk = lines.filter((l) => l.code === 'DISTRIBUTOR_POSTGRES_TRANSACTION_SHRUNK');
    assert.equal(shrunk.length, 1, 'one line for the write that shrank the size');
    assert.ok(Number(shrunk[0]?.maxBytes) < LIMITS.postgresTransactionMaxBytes);
    const after1 = { ...s.stats };
    assert.ok(after1.timeouts >= 1);
    assert.ok(after1.transactionMaxBytes < LIMITS.postgresTransactionMaxBytes);
    assert.equal(after1.transactionMaxBytes, shrunk[0]?.maxBytes);
    const scraped = await scrape();
    assert.equal(scraped.get('fieldstream_distributor_postgres_transaction_max_bytes{service="distributor"}'), after1.transactionMaxBytes);
    assert.equal(scraped.get('fieldstream_distributor_postgres_statement_timeouts_total{service="distributor"}'), after1.timeouts);

    // The next batch starts at the smaller size: no timeout, nothing logged about it. Its rows are
    // of about 1 KB: the size kept (at most half of the 40 readings of 250 bytes that took 0.6 s, so
    // at most 4.9 KB) holds four of them, 60 ms of the trigger's sleep, far within the timeout on a
    // loaded machine; the batch in one transaction (the size not kept) takes 0.6 s, past it. Rows of
    // 250 bytes filled it with 16 (0.24 s): a stall of 0.16 s timed one out.
    const BIG = 'x'.repeat(1000);
    const next = Array.from({ length: 40 }, (_, i): StoredPoint => ({ ...reading('n', `n:${i}`, i), fields: { v: i, pad: BIG } }));
    await s.write(next);
    assert.equal(s.stats.timeouts, after1.timeouts, 'the next write does not time out first');
    assert.equal(lines.filter((l) => l.code === 'DISTRIBUTOR_POSTGRES_TRANSACTION_SHRUNK').length, 1);
    assert.equal(await rows('splitrole', "SELECT count(*) FROM fieldstream.readings WHERE device = 'n'"), '40');

    // Written again (a retry): nothing added.
    await s.write(batch);
    assert.equal(await rows('splitrole', "SELECT count(*) FROM fieldstream.readings WHERE device <> 'warm'"), '160');
    assert.equal(await rows('splitrole', 'SELECT count(*) FROM fieldstream.events'), '40');
  });

  it('grows the size back after transactions that commit in time', async () => {
    await db.createUser('growrole', PASSWORD);
    const { sink: s } = sink('growrole');
    await s.write([reading('warm', 'w:1', 0)]);
    await slow('growrole', 'readings', 0.015);
    await s.write(Array.from({ length: 160 }, (_, i) => reading('g', `g:${i}`, i)));
    const small = s.stats.transactionMaxBytes;
    assert.ok(small < LIMITS.postgresTransactionMaxBytes);
    // The database is fast again.
    await db.psql('DROP TRIGGER slow_readings ON fieldstream.readings', 'growrole');
    const timeouts = s.stats.timeouts;
    let i = 1000;
    let writes = 0;
    for (; writes < 100 && s.stats.transactionMaxBytes < small * 4; writes++) {
      const before = s.stats.transactionMaxBytes;
      // A batch of somewhat less than the size in force (rows of about 250 bytes), one transaction
      // of more than half of it: each says something about that size.
      const batch: StoredPoint[] = [];
      for (let bytes = 0; bytes < before * 0.8; bytes += 250) batch.push(reading('g', `g:${i}`, i++));
      await s.write(batch);
      assert.ok(s.stats.transactionMaxBytes <= 2 * before, 'at most doubled by one write');
    }
    assert.ok(s.stats.transactionMaxBytes >= small * 4, `grown back from ${small} to ${s.stats.transactionMaxBytes}`);
    // Twice LIMITS.postgresTransactionGrowAfter transactions for two doublings, give or take the first.
    assert.ok(writes <= 2 * LIMITS.postgresTransactionGrowAfter + 1, `${writes} writes`);
    assert.equal(s.stats.timeouts, timeouts);
  });

  it('fails a write whose one row alone is past the timeout, retried, never refused, and takes it once the database is fast again', async () => {
    await db.createUser('rowrole', PASSWORD);
    const { sink: s, lines } = sink('rowrole');
    await s.write([reading('warm', 'w:1', 0)]);
    // A second a row: even one row alone is past the timeout.
    await slow('rowrole', 'readings', 1);
    const batch = Array.from({ length: 8 }, (_, i) => reading('r', `r:${i}`, i));
    const err = await s.write(batch).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(isFieldStreamError(err, 'DISTRIBUTOR_WRITE_FAILED'), `a failure to retry, not a refusal: ${String(err)}`);
    assert.equal(err.details?.sqlstate, '57014');
    assert.equal(err.details?.rows, 1);
    assert.match(err.message, /one row alone/);
    assert.equal(s.stats.transactionMaxBytes > 0, true);
    assert.equal(lines.filter((l) => l.code === 'DISTRIBUTOR_POSTGRES_TRANSACTION_SHRUNK').length, 1);
    assert.equal(await rows('rowrole', "SELECT count(*) FROM fieldstream.readings WHERE device = 'r'"), '0');
    // The database is fast again: the retry of the same batch takes every row, once.
    await db.psql('DROP TRIGGER slow_readings ON fieldstream.readings', 'rowrole');
    await s.write(batch);
    assert.equal(await rows('rowrole', "SELECT count(*) || '/' || count(DISTINCT message_key) FROM fieldstream.readings WHERE device = 'r'"), '8/8');
  });

  it('writes a transaction of several tables whose INSERTs are each within the timeout, however long they take together', async () => {
    await db.createUser('tablesrole', PASSWORD);
    // 1 s: each INSERT below takes 0.6 s, well within it; the four of them, in one query with the
    // COMMIT, take 2.4 s, past twice it (the client's bound for a query of one statement).
    const { sink: s } = sink('tablesrole', captureLogs(), undefined, 1000);
    await s.write([reading('warm', 'w:1', 0)]);
    const tables = ['readings', 'device_health', 'events', 'command_responses'];
    for (const t of tables) await slow('tablesrole', t, 0.6);
    const t0 = 1_767_225_600_000;
    const batch: StoredPoint[] = [
      reading('m', 'm:1', 1),
      { measurement: 'device_health', tags: { device: 'm' }, fields: { battery: 80 }, time: t0 + 2, [POINT_KEY]: 'm:2' },
      event('m', 'm:3', 3),
      { measurement: 'command_responses', tags: { device: 'm', status: 'ok' }, fields: { [RESPONSE_COMMAND_FIELD]: 'c-1', result: 'done' }, time: t0 + 4, [POINT_KEY]: 'm:4' },
    ];
    // Before, the client gave the query up at twice POSTGRES_TIMEOUT_MS (no SQLSTATE: never halved),
    // and the transaction was retried whole at the same size for ever.
    await s.write(batch);
    for (const t of tables) assert.equal(await rows('tablesrole', `SELECT count(*) FROM fieldstream.${t} WHERE device = 'm'`), '1', t);
    assert.equal(s.stats.timeouts, 0);
  });
});
