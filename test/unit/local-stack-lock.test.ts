import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { lockStackDir, STACK_LOCK } from '../../scripts/local-stack/stack-lock.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { tempDir } from '../helpers/pki.ts';

/** The lock that keeps one `npm run stack` per STACK_DIR (scripts/local-stack/stack-lock.ts). */
describe('the STACK_DIR lock', () => {
  const work = tempDir('stack-lock');
  after(() => work.cleanup());

  it('is refused while a process that runs holds it, naming that process', () => {
    const dir = join(work.dir, 'held');
    const lock = lockStackDir(dir);
    try {
      // Another process of ours holding it: this one's own lock is refused to a second taker too.
      assert.throws(() => lockStackDir(dir), (err: unknown) => isFieldStreamError(err, 'STACK_DIR_IN_USE') && err.message.includes(`pid ${process.pid}`));
    } finally {
      lock.release();
    }
    assert.equal(existsSync(join(dir, STACK_LOCK)), false, 'released');
  });

  it('is taken over from a process that is gone (a stack killed with SIGKILL)', () => {
    const dir = join(work.dir, 'stale');
    const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    lockStackDir(dir).release();
    writeFileSync(join(dir, STACK_LOCK), JSON.stringify({ pid: Number(gone.stdout), startedAt: new Date().toISOString() }));
    const lock = lockStackDir(dir);
    assert.equal(JSON.parse(readFileSync(join(dir, STACK_LOCK), 'utf8')).pid, process.pid);
    lock.release();
  });

  it('is taken over when it says nothing readable (a lock cut short by a power cut)', () => {
    const dir = join(work.dir, 'garbage');
    lockStackDir(dir).release();
    writeFileSync(join(dir, STACK_LOCK), '{"pid":');
    lockStackDir(dir).release();
  });
});
