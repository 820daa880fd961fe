import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Postgres } from '../../scripts/local-stack/databases.ts';
import { quietStartEnv } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';

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

  /** Starts scripts/start-embedded.ts with `env` over a quiet base, returns its "time series" line once it runs, and stops it. */
  async function timeSeriesLine(name: string, env: Record<string, string>): Promise<string> {
    const dir = join(work.dir, name);
    const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(REPO_ROOT, 'scripts', 'start-embedded.ts')], {
      cwd: work.dir,
      env: {
        ...quietStartEnv(join(dir, 'certs')),
        TIMESERIES_LOCAL_PATH: join(dir, 'timeseries'),
        FILE_STORAGE_PATH: join(dir, 'files'),
        DEAD_LETTER_PATH: join(dir, 'dead-letter'),
        COMMAND_STATE_PATH: join(dir, 'commands.jsonl'),
        DISTRIBUTOR_STATE_DIR: join(dir, 'distributor-state'),
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      const deadline = Date.now() + 45_000;
      while (!out.includes('FieldStream is running')) {
        if (child.exitCode !== null || child.signalCode !== null) assert.fail(`npm start exited before it ran: ${err}${out}`);
        if (Date.now() > deadline) assert.fail(`npm start did not say it runs within 45 s: ${err}${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const line = out.split('\n').find((l) => l.trimStart().startsWith('time series'));
      assert.ok(line, `no "time series" line in:\n${out}`);
      return line;
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
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
