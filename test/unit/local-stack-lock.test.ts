import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { lockStackDir, STACK_LOCK, type StackDirLock } from '../../scripts/local-stack/stack-lock.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { processStart } from '../../shared/process-identity.ts';
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

  it('is taken over when its process id now names a process started at another time (the id reused)', { skip: processStart(1) === undefined && 'no /proc/1/stat here' }, () => {
    const dir = join(work.dir, 'reused');
    lockStackDir(dir).release();
    // pid 1 runs, but started at another time than the lock says: not the stack that wrote it.
    writeFileSync(join(dir, STACK_LOCK), JSON.stringify({ pid: 1, start: String(BigInt(processStart(1)!) + 1n), startedAt: new Date().toISOString() }));
    const lock = lockStackDir(dir);
    assert.equal(JSON.parse(readFileSync(join(dir, STACK_LOCK), 'utf8')).pid, process.pid);
    lock.release();
    writeFileSync(join(dir, STACK_LOCK), JSON.stringify({ pid: 1, start: processStart(1), startedAt: new Date().toISOString() }));
    assert.throws(() => lockStackDir(dir), (err: unknown) => isFieldStreamError(err, 'STACK_DIR_IN_USE') && err.message.includes('pid 1,'));
  });

  it('is taken over when it says nothing readable (a lock cut short by a power cut)', () => {
    const dir = join(work.dir, 'garbage');
    lockStackDir(dir).release();
    writeFileSync(join(dir, STACK_LOCK), '{"pid":');
    lockStackDir(dir).release();
  });
});

/**
 * Two starts on a lock left by a stack that is gone, at the same instant: each judges it stale
 * before either acts. The hook runs the second start at the moment the first acts on what it read.
 */
describe('the STACK_DIR lock taken over by two starts at once', () => {
  const work = tempDir('stack-lock-race');
  after(() => work.cleanup());

  const staleLock = (dir: string) => {
    const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    lockStackDir(dir).release();
    writeFileSync(join(dir, STACK_LOCK), JSON.stringify({ pid: Number(gone.stdout), startedAt: new Date().toISOString() }));
  };

  for (const step of ['stale', 'marked'] as const) {
    it(`is held by one of them, the other refused (second start at the step "${step}")`, () => {
      const dir = join(work.dir, step);
      staleLock(dir);
      let second: StackDirLock | undefined;
      let secondErr: unknown;
      let first: StackDirLock | undefined;
      let firstErr: unknown;
      try {
        first = lockStackDir(dir, {
          onTakeOver: (at) => {
            if (at !== step || second || secondErr) return;
            try {
              second = lockStackDir(dir);
            } catch (err) {
              secondErr = err;
            }
          },
        });
      } catch (err) {
        firstErr = err;
      }
      try {
        assert.ok(second !== undefined || secondErr !== undefined, 'the second start ran');
        const held = [first, second].filter((l) => l !== undefined);
        assert.equal(held.length, 1, 'exactly one holds the lock');
        const refused = firstErr ?? secondErr;
        assert.ok(isFieldStreamError(refused, 'STACK_DIR_IN_USE'), `the other is refused with STACK_DIR_IN_USE: ${String(refused)}`);
        assert.equal(JSON.parse(readFileSync(join(dir, STACK_LOCK), 'utf8')).pid, process.pid);
      } finally {
        first?.release();
        second?.release();
      }
      assert.equal(existsSync(join(dir, STACK_LOCK)), false, 'released');
    });
  }

  it('is taken over past the marker of a start killed while it took it over', () => {
    const dir = join(work.dir, 'killed-taker');
    staleLock(dir);
    const lock = statSync(join(dir, STACK_LOCK));
    const killed = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    writeFileSync(join(dir, `${STACK_LOCK}.takeover-${lock.dev}-${lock.ino}-0`), JSON.stringify({ pid: Number(killed.stdout) }));
    const taken = lockStackDir(dir);
    assert.equal(JSON.parse(readFileSync(join(dir, STACK_LOCK), 'utf8')).pid, process.pid);
    taken.release();
    assert.deepEqual(readdirSync(dir), [], 'no marker nor lock left');
  });
});
