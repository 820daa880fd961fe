import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Postgres } from '../../scripts/local-stack/databases.ts';
import { npmStartBanner } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * What `npm start` prints as the home of the time series must be where the distributor writes them:
 * with PostgreSQL set (POSTGRES_URL or PGHOST, docs/postgres.md) it writes there alone, and the
 * banner named the local store (and `npm run readings`) all the same, a folder that stayed empty.
 */
describe('npm start: the "time series" line of its banner', () => {
  const work = tempDir('embedded-banner');
  let db: Postgres | undefined;
  const password = 'banner-test-password';

  before(async () => {
    db = await Postgres.start(join(work.dir, 'pg'));
    await db.createUser('fieldstream', password);
  });
  after(async () => {
    await db?.stop();
    work.cleanup();
  });

  /** npm start's "time series" line, with `env` over a quiet base. */
  async function timeSeriesLine(name: string, env: Record<string, string>): Promise<string> {
    const out = await npmStartBanner(work.dir, join(work.dir, name), 'FieldStream is running', env);
    const line = out.split('\n').find((l) => l.trimStart().startsWith('time series'));
    assert.ok(line, `no "time series" line in:\n${out}`);
    return line;
  }

  it('with no database set: the local store, read with npm run readings', async () => {
    const line = await timeSeriesLine('local', {});
    assert.match(line, /timeseries\/ +\(read it: npm run readings\)/);
  });

  it('with PostgreSQL set: PostgreSQL, named as the distributor logs it, not the local store', async () => {
    assert.ok(db);
    const line = await timeSeriesLine('postgres', { POSTGRES_URL: `postgres://fieldstream:${password}@127.0.0.1:${db.port}/fieldstream` });
    assert.match(line, /PostgreSQL fieldstream@127\.0\.0\.1:\d+\/fieldstream schema fieldstream/);
    assert.doesNotMatch(line, /npm run readings|timeseries/);
    assert.ok(!line.includes(password), 'the password was printed');
  });
});
