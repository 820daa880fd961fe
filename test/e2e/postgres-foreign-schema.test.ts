import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Postgres } from '../../scripts/local-stack/databases.ts';
import { tempDir } from '../helpers/pki.ts';
import { createLogger } from '../../shared/logger.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { POINT_KEY, type StoredPoint } from '../../internal-network/distributor/points.ts';
import { PostgresSink } from '../../internal-network/distributor/sinks/postgres/sink.ts';
import { postgresConnection } from '../../internal-network/distributor/sinks/postgres/settings.ts';
import { TABLES } from '../../internal-network/distributor/sinks/postgres/rows.ts';

const USER = 'fieldstream';
const PASSWORD = 'pg-foreign-Qx81zT';
const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof FieldStreamError ? e.code : String(e)));

/**
 * The PostgreSQL sink against a real PostgreSQL 15 whose tables someone else changed after the
 * distributor made them: what a write was acknowledged for is in the table, or the write says it
 * was not (a dead letter), never a silent "done" for a row that is not there.
 */
describe('the PostgreSQL sink on a schema someone else changed', () => {
  const work = tempDir('pgforeign');
  let db: Postgres;
  const sinks: PostgresSink[] = [];
  const sink = (schema: string) => {
    const s = new PostgresSink(
      postgresConnection({
        POSTGRES_URL: `postgres://${USER}:${PASSWORD}@127.0.0.1:${db.port}/${USER}`,
        POSTGRES_SSL: 'disable',
        POSTGRES_SCHEMA: schema,
        POSTGRES_POOL_SIZE: 2,
        POSTGRES_TIMEOUT_MS: 3000,
      }),
      createLogger('test', 'silent'),
    );
    sinks.push(s);
    return s;
  };
  const count = async (sql: string) => Number(await db.psql(sql, USER));

  before(async () => {
    db = await Postgres.start(join(work.dir, 'pg'));
    await db.createUser(USER, PASSWORD);
  });
  after(async () => {
    for (const s of sinks) await s.close().catch(() => undefined);
    await db?.stop();
    work.cleanup();
  });

  it('never reports as written a message whose row a unique index added by someone else kept out: it is refused (a dead letter) instead', async () => {
    const s = sink('uniq');
    const reading = (key: string, v: number): StoredPoint => ({ measurement: 'readings', tags: { device: 'u1' }, fields: { v }, time: 1_000, [POINT_KEY]: key });
    assert.equal(await code(s.write([reading('s:e:1', 1)])), 'ok');
    // A DBA's index ("one reading per device and millisecond"): two messages of a device within
    // one millisecond are two rows to the distributor (their keys differ), one to this index.
    await db.psql('CREATE UNIQUE INDEX readings_one_per_ms ON uniq.readings (device, time)', USER);
    const outcome = await code(s.write([reading('s:e:2', 2)]));
    const stored = await count("SELECT count(*) FROM uniq.readings WHERE message_key = 's:e:2'");
    assert.ok(stored === 1 || outcome === 'DISTRIBUTOR_WRITE_REJECTED', `the second message was answered ${outcome} with ${stored} row(s): acknowledged, and neither in the table nor a dead letter`);
    // A message delivered again is still one row, without a word.
    assert.equal(await code(s.write([reading('s:e:1', 1)])), 'ok');
    assert.equal(await count("SELECT count(*) FROM uniq.readings WHERE message_key = 's:e:1'"), 1);
  });

  it("names as each table's conflict the primary key its migration made, column for column", async () => {
    for (const spec of Object.values(TABLES)) {
      const key = await db.psql(
        `SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE i.indisprimary AND i.indrelid = 'uniq.${spec.table}'::regclass`,
        USER,
      );
      assert.equal(key.trim(), spec.key.join(','), spec.table);
    }
  });
});
