import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { DATA_DIR_LOCK, lockDataDir } from '../../field-client/src/data-dir-lock.ts';
import { bootId } from '../../shared/process-identity.ts';
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
      assert.ok(Date.now() - started < TIMINGS.dataLockExpiryMs, 'not waited for: its holder runs here');
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
    const restore = scaled({ dataLockExpiryMs: 1_500, dataLockPollMs: 50 });
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

  it('of two clients taking over one stale lock at the same instant, exactly one holds it; the other is refused at once', async () => {
    // Each judged the lock stale and renamed away by name whatever was there by then: the slower
    // one renamed away the fresh lock the other had just made in its place, and both held the
    // folder (one queue, two clients) until the first one's next renewal. Here a second client, a
    // process of its own, starts at the instant this one has judged the lock stale (nothing done
    // yet), then at the instant it has made its take-over marker (the lock not replaced yet).
    const cmd = join(tmp.dir, 'race-cmd');
    mkdirSync(cmd, { recursive: true });
    const url = new URL('../../field-client/src/data-dir-lock.ts', import.meta.url).href;
    // Starts a client on the folder named by CMD/go-N, writes how it went to CMD/done-N, holds on.
    const script = `
      import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
      const { lockDataDir } = await import(${JSON.stringify(url)});
      console.log('ready');
      for (let n = 0; ; n++) {
        const go = process.env.CMD + '/go-' + n;
        while (!existsSync(go)) await new Promise((r) => setTimeout(r, 2));
        let outcome;
        try {
          await lockDataDir(readFileSync(go, 'utf8'), () => {});
          outcome = { held: true };
        } catch (err) {
          outcome = { code: err.code, message: err.message };
        }
        writeFileSync(go + '.out', JSON.stringify(outcome));
        renameSync(go + '.out', process.env.CMD + '/done-' + n);
      }`;
    const other = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...process.env, CMD: cmd }, stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        other.stdout?.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
        other.once('exit', (code) => reject(new Error(`the other client exited with ${code}`)));
      });
      // Run from inside this one's take-over, which holds the event loop: waits by polling.
      let n = 0;
      const startOther = (dir: string): { held?: boolean; code?: string; message?: string } => {
        const done = join(cmd, `done-${n}`);
        writeFileSync(join(cmd, 'go.tmp'), dir);
        renameSync(join(cmd, 'go.tmp'), join(cmd, `go-${n++}`));
        for (const deadline = Date.now() + 10_000; !existsSync(done); ) {
          if (Date.now() > deadline) throw new Error('the other client did not answer');
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
        }
        return JSON.parse(readFileSync(done, 'utf8')) as { held?: boolean; code?: string; message?: string };
      };
      const staleLock = (dir: string) => {
        mkdirSync(dir, { recursive: true });
        // Left by a client of this host before the machine restarted: stale at once.
        writeFileSync(join(dir, DATA_DIR_LOCK), JSON.stringify({ owner: 'before', pid: 4242, host: hostname(), bootId: 'a-boot-before', startedAt: new Date().toISOString() }));
      };
      const holderPid = (dir: string) => (JSON.parse(readFileSync(join(dir, DATA_DIR_LOCK), 'utf8')) as { pid: number }).pid;

      // The other one judged it stale too, a moment later, and took it first: this one is refused.
      const first = join(tmp.dir, 'race-stale');
      staleLock(first);
      let other1: ReturnType<typeof startOther> | undefined;
      const started = Date.now();
      await assert.rejects(
        lockDataDir(first, () => {}, { onTakeOver: (at) => void (at === 'stale' && other1 === undefined && (other1 = startOther(first))) }),
        (err: unknown) => isFieldStreamError(err, 'FIELD_DATA_DIR_IN_USE') && err.message.includes(`process ${other.pid}`),
      );
      assert.ok(Date.now() - started < 5_000, 'refused at once');
      assert.deepEqual(other1, { held: true });
      assert.equal(holderPid(first), other.pid, "the other one's lock is in place");

      // The other one comes while this one holds the marker: it is refused, naming this one.
      const second = join(tmp.dir, 'race-marked');
      staleLock(second);
      let other2: ReturnType<typeof startOther> | undefined;
      const lock = await lockDataDir(second, () => {}, { onTakeOver: (at) => void (at === 'marked' && other2 === undefined && (other2 = startOther(second))) });
      assert.equal(other2?.code, 'FIELD_DATA_DIR_IN_USE');
      assert.ok(other2?.message?.includes(`process ${process.pid}`), other2?.message);
      assert.equal(holderPid(second), process.pid);
      lock.release();
    } finally {
      other.kill('SIGKILL');
    }
  });

  it('a holder whose lock was taken over while it was stalled learns it at its next renewal', async () => {
    const restore = scaled({ dataLockRenewMs: 100 });
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
