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
import { WriteBatcher } from '../../internal-network/distributor/write-batcher.ts';

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

  it('never reports as written a message whose row a trigger or a rule someone else added kept out: it is refused (a dead letter), the other messages of its batch written', async () => {
    const s = sink('trig');
    const now = Date.now();
    const reading = (device: string, key: string): StoredPoint => ({ measurement: 'readings', tags: { device }, fields: { v: 1 }, time: now, [POINT_KEY]: key });
    const event = (type: string, key: string): StoredPoint => ({ measurement: 'events', tags: { device: 't1', event_type: type }, fields: { message: type }, time: now, [POINT_KEY]: key });
    assert.equal(await code(s.write([reading('t1', 's:e:1'), event('alarm', 's:e:1')])), 'ok');
    // A BEFORE trigger that returns NULL for the rows it does not want, and a DO INSTEAD NOTHING
    // rule: PostgreSQL answers the INSERT (and the COMMIT) without an error, the rows not there.
    await db.psql(
      `CREATE FUNCTION trig.skip_retired() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.device = 'retired' THEN RETURN NULL; END IF; RETURN NEW; END $$;
CREATE TRIGGER skip_retired BEFORE INSERT ON trig.readings FOR EACH ROW EXECUTE FUNCTION trig.skip_retired();
CREATE RULE no_noise AS ON INSERT TO trig.events WHERE NEW.event_type = 'noise' DO INSTEAD NOTHING`,
      USER,
    );
    const stored = (key: string, table = 'readings') => count(`SELECT count(*) FROM trig.${table} WHERE message_key = '${key}'`);
    assert.equal(await code(s.write([reading('t1', 's:e:2'), reading('retired', 's:e:3')])), 'DISTRIBUTOR_WRITE_REJECTED', 'a row the trigger dropped');
    assert.equal(await code(s.write([event('noise', 's:e:4')])), 'DISTRIBUTOR_WRITE_REJECTED', 'a row the rule dropped');
    assert.equal(await stored('s:e:3') + (await stored('s:e:4', 'events')), 0);
    // Through the write batcher: each message learns its own outcome; a copy of a message already
    // there (skipped, as every redelivery is) and the other messages are written and answered done.
    const batcher = new WriteBatcher(s, 100);
    const outcomes = await Promise.all([
      code(batcher.write([reading('t1', 's:e:5')])),
      code(batcher.write([reading('retired', 's:e:6')])),
      code(batcher.write([reading('t1', 's:e:1')])),
      code(batcher.write([event('noise', 's:e:7')])),
      code(batcher.write([event('alarm', 's:e:8')])),
    ]);
    assert.deepEqual(outcomes, ['ok', 'DISTRIBUTOR_WRITE_REJECTED', 'ok', 'DISTRIBUTOR_WRITE_REJECTED', 'ok']);
    assert.deepEqual([await stored('s:e:2'), await stored('s:e:5'), await stored('s:e:1'), await stored('s:e:8', 'events')], [1, 1, 1, 1]);
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
