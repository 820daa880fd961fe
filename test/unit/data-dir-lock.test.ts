import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { DATA_DIR_LOCK, lockDataDir } from '../../field-client/src/data-dir-lock.ts';
import { bootId } from '../../field-client/src/queue/queue-epochs.ts';
import { isFieldStreamError, type FieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';

/** A process holding `dir`'s lock until it is killed; resolves once it holds it. */
async function holder(dir: string): Promise<ChildProcess> {
  mkdirSync(dir, { recursive: true });
  const url = new URL('../../field-client/src/data-dir-lock.ts', import.meta.url).href;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `const { lockDataDir } = await import(${JSON.stringify(url)}); await lockDataDir(process.env.DIR, () => {}); console.log('held'); setInterval(() => {}, 1000);`], { env: { ...process.env, DIR: dir }, stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => d.toString().includes('held') && resolve());
    child.once('exit', (code) => reject(new Error(`the holder exited with ${code}`)));
  });
  return child;
}

const scaled = (values: Record<string, number>) => {
  const t = TIMINGS as unknown as Record<string, number>;
  const saved = Object.fromEntries(Object.keys(values).map((k) => [k, t[k] as number]));
  Object.assign(t, values);
  return () => void Object.assign(t, saved);
};

/**
 * One field client per FIELD_DATA_DIR (field-client/src/data-dir-lock.ts): a second on the folder
 * appended to the first one's queue and deleted segments it still sent from.
 */
describe('the lock of FIELD_DATA_DIR', () => {
  const tmp = tempDir('data-dir-lock');
  after(() => tmp.cleanup());

  it('refuses a second client while the first runs, naming it; takes the folder at once when the first was killed', async () => {
    const dir = join(tmp.dir, 'two');
    const first = await holder(dir);
    try {
      const started = Date.now();
      await assert.rejects(lockDataDir(dir, () => {}), (err: unknown) => isFieldStreamError(err, 'FIELD_DATA_DIR_IN_USE') && err.message.includes(`process ${first.pid}`));
      assert.ok(Date.now() - started < TIMINGS.fieldDataLockExpiryMs, 'not waited for: its holder runs here');
    } finally {
      first.kill('SIGKILL');
      await new Promise((r) => first.once('exit', r));
    }
    // Killed: its lock stays, and is taken over without waiting.
    assert.ok(existsSync(join(dir, DATA_DIR_LOCK)));
    const started = Date.now();
    const lock = await lockDataDir(dir, () => {});
    assert.ok(Date.now() - started < 1_000);
    assert.equal((JSON.parse(readFileSync(join(dir, DATA_DIR_LOCK), 'utf8')) as { pid: number }).pid, process.pid);
    lock.release();
    assert.ok(!existsSync(join(dir, DATA_DIR_LOCK)), 'released: removed');
  });

  it('waits for the lock of a holder it cannot see (another host, another container) to lapse, then takes it; a torn lock lapses too', async () => {
    const restore = scaled({ fieldDataLockExpiryMs: 1_500, fieldDataLockPollMs: 50 });
    try {
      for (const text of [JSON.stringify({ owner: 'x', pid: 4242, host: 'another-host', startedAt: new Date().toISOString() }), '']) {
        const dir = join(tmp.dir, `elsewhere-${text.length}`);
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, DATA_DIR_LOCK), text);
        const started = Date.now();
        const lock = await lockDataDir(dir, () => {});
        const waited = Date.now() - started;
        assert.ok(waited >= 1_300 && waited < 5_000, `waited ${waited} ms`);
        lock.release();
      }
      // Renewed by its holder, it is not taken.
      const dir = join(tmp.dir, 'elsewhere-renewed');
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, DATA_DIR_LOCK), JSON.stringify({ owner: 'x', pid: 4242, host: 'another-host', startedAt: new Date().toISOString() }));
      const renewing = setInterval(() => utimesSync(join(dir, DATA_DIR_LOCK), new Date(), new Date()), 200);
      try {
        await assert.rejects(lockDataDir(dir, () => {}), (err: unknown) => isFieldStreamError(err, 'FIELD_DATA_DIR_IN_USE') && /another-host/.test(err.message));
      } finally {
        clearInterval(renewing);
      }
    } finally {
      restore();
    }
  });

  it('refuses a second client of this very process on the folder; takes a lock naming this process id that none of its clients holds (a container started again)', async () => {
    const dir = join(tmp.dir, 'same-process');
    mkdirSync(dir, { recursive: true });
    const lock = await lockDataDir(dir, () => {});
    await assert.rejects(lockDataDir(dir, () => {}), (err: unknown) => isFieldStreamError(err, 'FIELD_DATA_DIR_IN_USE'));
    lock.release();
    writeFileSync(join(dir, DATA_DIR_LOCK), JSON.stringify({ owner: 'before', pid: process.pid, host: hostname(), bootId: bootId(), startedAt: new Date().toISOString() }));
    const again = await lockDataDir(dir, () => {});
    assert.notEqual((JSON.parse(readFileSync(join(dir, DATA_DIR_LOCK), 'utf8')) as { owner: string }).owner, 'before');
    again.release();
  });

  it('a holder whose lock was taken over while it was stalled learns it at its next renewal', async () => {
    const restore = scaled({ fieldDataLockRenewMs: 100 });
    const dir = join(tmp.dir, 'taken');
    mkdirSync(dir, { recursive: true });
    try {
      const lost: FieldStreamError[] = [];
      const lock = await lockDataDir(dir, (err) => lost.push(err));
      // As a start that found it lapsed does: renamed away, a lock of its own made in its place.
      renameSync(join(dir, DATA_DIR_LOCK), join(dir, 'aside'));
      writeFileSync(join(dir, DATA_DIR_LOCK), JSON.stringify({ owner: 'y', pid: 1, host: 'h', startedAt: new Date().toISOString() }));
      await eventually(() => (lost.length > 0 ? true : undefined), 5_000, 'the loss seen');
      assert.equal(lost[0]?.code, 'FIELD_DATA_DIR_IN_USE');
      lock.release();
      assert.ok(existsSync(join(dir, DATA_DIR_LOCK)), "the new holder's lock is left as it is");
    } finally {
      restore();
    }
  });
});
