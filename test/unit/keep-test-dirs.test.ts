import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';

/**
 * FIELDSTREAM_KEEP_TEST_DIRS=1 (docs/testing.md) keeps the tests' temporary folders, certificates
 * among them, to read after a failure: each kept folder is named on stderr, or nobody can tell which
 * of the many in /tmp belongs to the failed test. The certificate sets were kept without a word.
 */
const helpers = pathToFileURL(new URL('../helpers/pki.ts', import.meta.url).pathname).href;
const script = `
import { makeTestPki, tempDir } from ${JSON.stringify(helpers)};
const pki = makeTestPki([]);
const work = tempDir('keep-test');
pki.cleanup();
work.cleanup();
process.stdout.write(JSON.stringify({ pki: pki.dir, work: work.dir }));
`;

function run(keep: string | undefined): { dirs: { pki: string; work: string }; stderr: string } {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
  if (keep !== undefined) env.FIELDSTREAM_KEEP_TEST_DIRS = keep;
  const r = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), '--input-type=module', '-e', script], { env, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return { dirs: JSON.parse(r.stdout) as { pki: string; work: string }, stderr: r.stderr };
}

describe('FIELDSTREAM_KEEP_TEST_DIRS', () => {
  it('=1: the certificate set and the temporary folder are kept, and each is named on stderr', () => {
    const { dirs, stderr } = run('1');
    try {
      for (const dir of [dirs.pki, dirs.work]) {
        assert.ok(existsSync(dir), `${dir} was removed`);
        assert.ok(stderr.split('\n').includes(`kept ${dir}`), `"kept ${dir}" not in stderr: ${stderr}`);
      }
    } finally {
      for (const dir of [dirs.pki, dirs.work]) rmSync(dir, { recursive: true, force: true });
    }
  });

  it('unset: both are removed, nothing said', () => {
    const { dirs, stderr } = run(undefined);
    for (const dir of [dirs.pki, dirs.work]) assert.ok(!existsSync(dir), `${dir} was kept`);
    assert.doesNotMatch(stderr, /kept /);
  });
});
