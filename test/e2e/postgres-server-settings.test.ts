import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { Postgres } from '../../scripts/local-stack/databases.ts';
import { tempDir } from '../helpers/pki.ts';
import { createLogger } from '../../shared/logger.ts';
import { POINT_KEY, type StoredPoint } from '../../internal-network/distributor/points.ts';
import { PostgresSink } from '../../internal-network/distributor/sinks/postgres/sink.ts';
import { postgresConnection } from '../../internal-network/distributor/sinks/postgres/settings.ts';

const PASSWORD = 'pg-settings-Zk4mQ8';
const reading = (device: string, key: string, fields: StoredPoint['fields'], time: number): StoredPoint => ({ measurement: 'readings', tags: { device }, fields, time, [POINT_KEY]: key });

/**
 * The PostgreSQL sink on a real PostgreSQL 15 whose settings are not the defaults: set by its DBA
 * for the distributor's role or database, or by another role of the database. What the sink
 * reports written must be durable and stored as sent, whatever they say.
 */
describe('the PostgreSQL sink on a server set up by someone else', () => {
  const work = tempDir('pgsettings');
  let db: Postgres;
  const quiet = createLogger('test', 'silent');
  const sinks: PostgresSink[] = [];
  /** A sink writing as `user` (a role owning a database of its name, made by the test). */
  const sink = (user: string) => {
    const s = new PostgresSink(
      postgresConnection({ POSTGRES_URL: `postgres://${user}:${PASSWORD}@127.0.0.1:${db.port}/${user}`, POSTGRES_SSL: 'disable', POSTGRES_SCHEMA: 'fieldstream', POSTGRES_POOL_SIZE: 2, POSTGRES_TIMEOUT_MS: 5000 }),
      quiet,
    );
    sinks.push(s);
    return s;
  };
  /** The superuser over the socket, in `database`; a new connection each time (the server is restarted). */
  const query = async (database: string, sql: string) => {
    const c = new pg.Client({ host: db.dir, port: db.port, user: db.superuser, database });
    c.on('error', () => undefined);
    await c.connect();
    try {
      return (await c.query(sql)).rows as Record<string, unknown>[];
    } finally {
      await c.end();
    }
  };

  before(async () => {
    db = await Postgres.start(join(work.dir, 'pg'));
  });
  after(async () => {
    for (const s of sinks) await s.close().catch(() => undefined);
    await db?.stop();
    work.cleanup();
  });

  it('keeps what it reported written through a crash of PostgreSQL, also where synchronous_commit is off for its role', async () => {
    // synchronous_commit = off (a common tuning for ingest) has COMMIT answered before its WAL is
    // flushed: a crash within wal_writer_delay (10 s here, to make the window certain) loses the
    // transaction, which the distributor has by then acknowledged and receipted.
    await db.createUser('asyncrole', PASSWORD);
    await db.psql('ALTER ROLE asyncrole SET synchronous_commit = off');
    await db.psql("ALTER SYSTEM SET wal_writer_delay = '10s'");
    await db.psql('SELECT pg_reload_conf()');
    try {
      const first = sink('asyncrole');
      // The schema is made by the first write; the point under test is the second.
      await first.write([reading('a1', 's:e:1', { v: 1 }, Date.now())]);
      await new Promise((r) => setTimeout(r, 300));
      const written = Date.now();
      await first.write([reading('a1', 's:e:2', { v: 2 }, written)]);
      // An immediate shutdown (SIGQUIT) as a crash: no checkpoint, what was in the WAL buffers is gone.
      await db.process.signal('SIGQUIT');
      await db.process.stop();
      await first.close().catch(() => undefined);
      await db.restart();
      const rows = await query('asyncrole', "SELECT message_key, (fields->>'v')::int AS v FROM fieldstream.readings WHERE device = 'a1' ORDER BY message_key");
      assert.deepEqual(rows, [
        { message_key: 's:e:1', v: 1 },
        { message_key: 's:e:2', v: 2 },
      ]);
      // Any other setting of the DBA's is left as it is (remote_apply, say, is not lowered to on):
      // a trigger of the test's notes the setting each row is written under.
      await query('asyncrole', `CREATE TABLE public.seen (setting text);
GRANT INSERT ON public.seen TO asyncrole;
CREATE FUNCTION public.note_setting() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.seen VALUES (current_setting('synchronous_commit')); RETURN NEW; END $$;
CREATE TRIGGER note_setting AFTER INSERT ON fieldstream.readings FOR EACH ROW EXECUTE FUNCTION public.note_setting()`);
      const after = sink('asyncrole');
      await after.write([reading('a1', 's:e:3', { v: 3 }, written + 1)]);
      for (const level of ['remote_apply', 'local']) {
        await db.psql(`ALTER ROLE asyncrole SET synchronous_commit = ${level}`);
        await sink('asyncrole').write([reading('a1', `s:e:${level}`, { v: 4 }, written + 2)]);
      }
      assert.deepEqual(await query('asyncrole', 'SELECT setting FROM public.seen'), [{ setting: 'on' }, { setting: 'remote_apply' }, { setting: 'local' }]);
    } finally {
      await db.psql('ALTER SYSTEM RESET wal_writer_delay');
      await db.psql('SELECT pg_reload_conf()');
    }
  });

  it("runs no operator another role of the database made: the times it writes are PostgreSQL's arithmetic, never code run as the writer", async () => {
    // PUBLIC may create in the schema public, as PostgreSQL 14 and earlier let it (a database
    // upgraded with pg_upgrade keeps that). A role that may only read (monitoring.md's
    // grafana_reader, whose SQL any Grafana editor writes) defines `*` for (bigint, interval), an
    // exact match where PostgreSQL's own needs a cast (float8 * interval): unqualified, the
    // sink's time arithmetic ran it, as the writing role, at every write.
    await db.createUser('owner', PASSWORD);
    await query('owner', `GRANT CREATE ON SCHEMA public TO PUBLIC;
CREATE ROLE reader LOGIN PASSWORD '${PASSWORD}';
CREATE TABLE public.loot (who text, rows bigint);
GRANT INSERT ON public.loot TO PUBLIC`);
    const s = sink('owner');
    const time = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
    await s.write([reading('h1', 's:e:1', { v: 1 }, time)]);
    // The grants monitoring.md gives Grafana's role.
    await query('owner', `GRANT USAGE ON SCHEMA fieldstream TO reader;
GRANT SELECT ON ALL TABLES IN SCHEMA fieldstream TO reader;
SET ROLE reader;
CREATE FUNCTION public.shift(bigint, interval) RETURNS interval LANGUAGE sql AS
  'INSERT INTO public.loot SELECT current_user, (SELECT count(*) FROM fieldstream.readings); SELECT $1::float8 * $2 + interval ''1 year''';
CREATE OPERATOR public.* (LEFTARG = bigint, RIGHTARG = interval, FUNCTION = public.shift)`);
    await s.write([reading('h1', 's:e:2', { v: 2 }, time)]);
    const rows = await query('owner', "SELECT message_key, (extract(epoch FROM time) * 1000)::bigint AS ms FROM fieldstream.readings WHERE device = 'h1' ORDER BY message_key");
    assert.deepEqual(rows, [
      { message_key: 's:e:1', ms: String(time) },
      { message_key: 's:e:2', ms: String(time) },
    ]);
    assert.deepEqual(await query('owner', 'SELECT who FROM public.loot'), [], "the reader's operator never ran");
    // The same with the schema's migration, which a distributor runs at its start: the lock it takes
    // is pg_advisory_xact_lock(bigint), of an integer hash.
    await query('owner', `SET ROLE reader;
CREATE FUNCTION public.pg_advisory_xact_lock(integer) RETURNS void LANGUAGE sql AS
  'INSERT INTO public.loot SELECT current_user, (SELECT count(*) FROM fieldstream.readings)'`);
    await sink('owner').write([reading('h1', 's:e:3', { v: 3 }, time)]);
    assert.deepEqual(await query('owner', "SELECT count(*)::int AS n FROM fieldstream.readings WHERE device = 'h1'"), [{ n: 3 }]);
    assert.deepEqual(await query('owner', 'SELECT who FROM public.loot'), [], "the reader's function never ran");
  });
});
