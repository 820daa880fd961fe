import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { claimStateSlot } from '../../internal-network/distributor/state-lease.ts';
import { classify } from '../../scripts/admin/backup-manifest.ts';
import { withDirLock } from '../../shared/dir-lock.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { failingByPath } from '../helpers/failing-fs.ts';
import { inTempDir, tempDir } from '../helpers/pki.ts';

const never = () => assert.fail('the lease was not lost');
const age = (path: string, ms: number) => {
  const then = new Date(Date.now() - ms);
  utimesSync(path, then, then);
};

describe('the distributor state lease (replicas sharing one DISTRIBUTOR_STATE_DIR)', () => {
  it('gives each running distributor its own slot, the folder itself first, and the same slot again after a restart', () => {
    inTempDir('lease', (root) => {
      const a = claimStateSlot(root, 'distributor-a', never);
      const b = claimStateSlot(root, 'distributor-b', never);
      const c = claimStateSlot(root, 'distributor-c', never);
      assert.deepEqual([a.dir, b.dir, c.dir], [root, join(root, 'instances', '2'), join(root, 'instances', '3')]);
      assert.equal(JSON.parse(readFileSync(join(b.dir, 'lease.json'), 'utf8')).clientId, 'distributor-b');
      // b is killed (its lease stays, fresh) and starts again under its own name: its own slot
      const b2 = claimStateSlot(root, 'distributor-b', never);
      assert.equal(b2.slot, 2);
      b.release(); // only its timer (the lease is b2's now): the process it stands for is gone
      // a stops cleanly: its slot is free for a distributor of another name at once
      a.release();
      assert.ok(!existsSync(join(root, 'lease.json')));
      const d = claimStateSlot(root, 'distributor-d', never);
      assert.equal(d.slot, 1);
      for (const l of [b2, c, d]) l.release();
    });
  });

  it('hands the slot of a distributor that is gone (lease not renewed) to the next one, with its state', () => {
    inTempDir('lease-expired', (root) => {
      const a = claimStateSlot(root, 'distributor-old-host', never);
      writeFileSync(join(a.dir, 'consumer-sessions.json'), '{"clientIds":["distributor-old-host"]}');
      age(join(root, 'lease.json'), TIMINGS.stateLeaseExpiryMs + 1000); // killed, a recreated container has a new name
      const b = claimStateSlot(root, 'distributor-new-host', never);
      assert.equal(b.dir, root);
      assert.ok(existsSync(join(b.dir, 'consumer-sessions.json')));
      a.release();
      b.release();
    });
  });

  it('serialises claims, and clears a claim left by a process killed while claiming', () => {
    inTempDir('lease-claiming', (root) => {
      mkdirSync(join(root, '.claiming'));
      age(join(root, '.claiming'), TIMINGS.stateLeaseClaimWaitMs + 1000);
      const a = claimStateSlot(root, 'distributor-a', never);
      assert.equal(a.slot, 1);
      assert.ok(!existsSync(join(root, '.claiming')));
      a.release();
    });
  });

  it('a lock left by a killed process is taken over by one of those waiting at once, never by two (shared/dir-lock.ts)', async () => {
    // Six processes meet a lock a killed one left (claims, revocations and the tokens file share
    // withDirLock) at the same moment. Each saw it stale, and one removed the lock another had just
    // made in its place: two held it at once (two claims of one slot, two revocations of which the
    // slower one's CRL lacked the other's).
    const tmp = tempDir('lock-takeover');
    try {
      const script = `
        import { appendFileSync } from 'node:fs';
        import { withDirLock } from ${JSON.stringify(new URL('../../shared/dir-lock.ts', import.meta.url).href)};
        import { FieldStreamError } from ${JSON.stringify(new URL('../../shared/errors.ts', import.meta.url).href)};
        while (Date.now() < Number(process.env.AT)) {}
        withDirLock(process.env.LOCK, 1000, () => new FieldStreamError('PKI_BUSY', 'busy'), () => {
          appendFileSync(process.env.LOG, 'in\\n');
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
          appendFileSync(process.env.LOG, 'out\\n');
        });`;
      for (let round = 0; round < 5; round++) {
        const lock = join(tmp.dir, `lock-${round}`);
        const log = join(tmp.dir, `log-${round}`);
        mkdirSync(lock);
        age(lock, 60_000);
        writeFileSync(log, '');
        const at = String(Date.now() + 3_000);
        const run = () =>
          new Promise<void>((resolve, reject) => {
            const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...process.env, LOCK: lock, LOG: log, AT: at }, stdio: ['ignore', 'ignore', 'inherit'] });
            child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`exit ${code}`))));
          });
        await Promise.all([1, 2, 3, 4, 5, 6].map(run));
        let holders = 0;
        let most = 0;
        for (const line of readFileSync(log, 'utf8').split('\n').filter(Boolean)) most = Math.max(most, (holders += line === 'in' ? 1 : -1));
        assert.equal(most, 1, `round ${round}: ${most} processes held the lock at once`);
        assert.equal(readFileSync(log, 'utf8').split('\n').filter((l) => l === 'in').length, 6);
      }
    } finally {
      tmp.cleanup();
    }
  });

  it('a take-over marker left by a killed process is passed over by one of two takers, never by both (shared/dir-lock.ts)', async () => {
    // The marker (LOCK.takeover) is held for a stat and a rmdir; one left by a process killed in
    // between was removed by age. Two processes that found it stale at once both removed "it", the
    // slower one the marker the other had just made, so both took the lock over: the slower one
    // removed the lock the other had just made, and both held it. Here a process is killed while it
    // holds the marker, then this process and another one find that marker stale together, by hooks
    // at the instants where the one then waits for the other.
    const tmp = tempDir('lock-marker');
    const lock = join(tmp.dir, 'lock');
    const log = join(tmp.dir, 'log');
    const signal = (name: string) => writeFileSync(join(tmp.dir, name), '');
    const awaitSignal = (name: string, ms: number) => {
      for (const deadline = Date.now() + ms; !existsSync(join(tmp.dir, name)) && Date.now() < deadline; ) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
    };
    const run = (script: string) => {
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...process.env, LOCK: lock, LOG: log, DIR: tmp.dir }, stdio: ['ignore', 'pipe', 'inherit'] });
      const ready = new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
        child.once('exit', (code) => reject(new Error(`exit ${code}`)));
      });
      ready.catch(() => {}); // the killed one's is not waited for
      const exit = new Promise<number | null>((resolve) => child.once('exit', (code, sig) => resolve(code ?? (sig === 'SIGKILL' ? -9 : null))));
      return { ready, exit };
    };
    const head = `
      import { appendFileSync, existsSync, writeFileSync } from 'node:fs';
      import { withDirLock } from ${JSON.stringify(new URL('../../shared/dir-lock.ts', import.meta.url).href)};
      import { FieldStreamError } from ${JSON.stringify(new URL('../../shared/errors.ts', import.meta.url).href)};
      const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
      const busy = () => new FieldStreamError('PKI_BUSY', 'busy');
      console.log('ready');`;
    try {
      mkdirSync(lock);
      age(lock, 60_000);
      // Killed while it holds the marker, about to remove the lock.
      const killed = run(`${head}
        withDirLock(process.env.LOCK, 1000, busy, () => {}, undefined, (at) => at === 'lock-stale' && process.kill(process.pid, 'SIGKILL'));`);
      assert.equal(await killed.exit, -9);
      for (const name of readdirSync(tmp.dir).filter((n) => n.startsWith('lock.takeover'))) age(join(tmp.dir, name), 60_000);
      // The other one: it takes the marker over once told, and waits (at most 300 ms) for this one
      // to reach the lock too before it removes it.
      const other = run(`${head}
        while (!existsSync(process.env.DIR + '/go')) await new Promise((r) => setTimeout(r, 2));
        let waited = false;
        withDirLock(process.env.LOCK, 1000, busy, () => {
          appendFileSync(process.env.LOG, 'in\\n');
          sleep(100);
          appendFileSync(process.env.LOG, 'out\\n');
        }, undefined, (at) => {
          if (at !== 'lock-stale' || waited) return;
          waited = true;
          writeFileSync(process.env.DIR + '/other-at-lock', '');
          for (const end = Date.now() + 300; !existsSync(process.env.DIR + '/this-at-lock') && Date.now() < end; ) sleep(2);
        });`);
      await other.ready;
      writeFileSync(log, '');
      let toldOther = false;
      let atLock = false;
      withDirLock(
        lock,
        1000,
        () => new FieldStreamError('PKI_BUSY', 'busy'),
        () => {
          appendFileSync(log, 'in\n');
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
          appendFileSync(log, 'out\n');
        },
        undefined,
        (at) => {
          // Found the killed one's marker stale: the other one finds it so too and goes ahead.
          if (at === 'marker-stale' && !toldOther) {
            toldOther = true;
            signal('go');
            awaitSignal('other-at-lock', 10_000);
          }
          // Judged the lock stale holding a marker as well: the other one removes it first.
          if (at === 'lock-stale' && !atLock) {
            atLock = true;
            signal('this-at-lock');
            for (const end = Date.now() + 2_000; !readFileSync(log, 'utf8').includes('in') && Date.now() < end; ) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
          }
        },
      );
      assert.equal(await other.exit, 0);
      let holders = 0;
      let most = 0;
      const lines = readFileSync(log, 'utf8').split('\n').filter(Boolean);
      for (const line of lines) most = Math.max(most, (holders += line === 'in' ? 1 : -1));
      assert.ok(toldOther, 'the marker left by the killed process was found');
      assert.equal(lines.filter((l) => l === 'in').length, 2);
      assert.equal(most, 1, `${most} processes held the lock at once`);
      assert.deepEqual(readdirSync(tmp.dir).filter((n) => n.startsWith('lock.takeover')), [], 'the markers are gone with the lock they were for');
    } finally {
      tmp.cleanup();
    }
  });

  it('gives distinct slots to distributors started at the same moment in separate processes', async () => {
    const tmp = tempDir('lease-race');
    try {
      const script = `
        import { claimStateSlot } from ${JSON.stringify(new URL('../../internal-network/distributor/state-lease.ts', import.meta.url).href)};
        const lease = claimStateSlot(process.env.ROOT, process.env.ID, () => {});
        process.stdout.write(String(lease.slot));
        process.exit(0);`;
      const run = (id: string) =>
        new Promise<string>((resolve, reject) => {
          const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...process.env, ROOT: tmp.dir, ID: id }, stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          child.stdout.on('data', (d: Buffer) => (out += d.toString()));
          child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`exit ${code}`))));
        });
      const slots = await Promise.all(['r1', 'r2', 'r3', 'r4'].map(run));
      assert.deepEqual(slots.map(Number).sort(), [1, 2, 3, 4]);
    } finally {
      tmp.cleanup();
    }
  });

  it('fences a holder that was paused past the expiry (SIGSTOP): once its slot is taken over, it acknowledges nothing the taker did not load', async () => {
    // The holder journals and "acknowledges" a sequence number every few milliseconds, as the
    // distributor does per message. Paused (SIGSTOP: a long GC, a frozen VM), its lease expires and
    // another distributor takes the slot and loads its windows. Resumed, it went on appending to a
    // journal the taker had already read (and deletes at its next compaction) and acknowledging, for
    // up to TIMINGS.stateLeaseRenewMs until its renewal saw the loss: every one of those messages
    // was then "new" to the taker, a copy of it accepted (the replay defence bypassed).
    const tmp = tempDir('lease-fence');
    try {
      const script = `
        import { join } from 'node:path';
        import { ReplayWindows } from ${JSON.stringify(new URL('../../internal-network/distributor/security/replay-window.ts', import.meta.url).href)};
        import { claimStateSlot } from ${JSON.stringify(new URL('../../internal-network/distributor/state-lease.ts', import.meta.url).href)};
        const lease = claimStateSlot(process.env.ROOT, 'distributor-paused', (err) => process.stdout.write('lost ' + err.code + '\\n'));
        const windows = new ReplayWindows(join(lease.dir, 'replay'), { fence: () => lease.assertHeld() });
        let seq = 0;
        setInterval(() => {
          seq++;
          windows.record('d', 'e', seq);
          try {
            windows.persist();
            process.stdout.write('acked ' + seq + '\\n');
          } catch (err) {
            process.stdout.write('refused ' + seq + ' ' + err.code + '\\n');
          }
        }, 2);`;
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...process.env, ROOT: tmp.dir }, stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise((resolve) => child.on('exit', resolve));
      const waitFor = async (what: () => boolean, ms: number) => {
        for (const end = Date.now() + ms; !what(); await new Promise((r) => setTimeout(r, 10))) if (Date.now() > end) assert.fail(`timed out; the holder wrote: ${out.slice(-500)}`);
      };
      try {
        await waitFor(() => (out.match(/^acked /gm) ?? []).length >= 20, 20_000);
        child.kill('SIGSTOP');
        await new Promise((r) => setTimeout(r, 200)); // stopped, whatever it was writing finished
        age(join(tmp.dir, 'lease.json'), TIMINGS.stateLeaseExpiryMs + 1000);
        const taker = claimStateSlot(tmp.dir, 'distributor-taker', never);
        assert.equal(taker.slot, 1);
        const loaded = new ReplayWindows(join(taker.dir, 'replay'));
        const before = (out.match(/^acked /gm) ?? []).length;
        child.kill('SIGCONT');
        await waitFor(() => /^refused /m.test(out) || (out.match(/^acked /gm) ?? []).length > before + 50, 10_000);
        child.kill('SIGKILL');
        await exited;
        const acked = [...out.matchAll(/^acked (\d+)$/gm)].map((m) => Number(m[1]));
        const unknown = acked.filter((seq) => loaded.check('d', 'e', seq) !== 'seen');
        assert.deepEqual(unknown, [], 'acknowledged by the paused holder after the takeover, unknown to the taker');
        assert.match(out, /^refused \d+ DISTRIBUTOR_STATE_LEASE$/m, 'its next append after the takeover was refused');
        loaded.close();
        taker.release();
      } finally {
        child.kill('SIGKILL');
      }
    } finally {
      tmp.cleanup();
    }
  });

  it('tells a distributor that lost its slot to another (it stalled past the expiry), and leaves backups without leases', async () => {
    const tmp = tempDir('lease-lost');
    try {
      let lost: Error | undefined;
      const stalled = claimStateSlot(tmp.dir, 'distributor-a', (err) => (lost = err));
      age(join(tmp.dir, 'lease.json'), TIMINGS.stateLeaseExpiryMs + 1000);
      const taker = claimStateSlot(tmp.dir, 'distributor-b', never);
      assert.equal(taker.slot, 1);
      await new Promise((r) => setTimeout(r, TIMINGS.stateLeaseRenewMs + 500));
      assert.match(String(lost?.message), /taken over by another distributor/);
      stalled.release();
      assert.ok(existsSync(join(tmp.dir, 'lease.json')), "the loser does not remove the new holder's lease");
      taker.release();
    } finally {
      tmp.cleanup();
    }
    assert.equal(classify('distributor-state', 'lease.json'), undefined);
    assert.equal(classify('distributor-state', 'instances/2/lease.json'), undefined);
    assert.equal(classify('distributor-state', 'instances/2/replay/windows-3.log'), 'replay-windows');
  });

  it('keeps its slot through a renewal that cannot read or touch its lease, and never takes a lease it cannot read for free', async () => {
    const tmp = tempDir('lease-unreadable');
    try {
      const unreadable: unknown[] = [];
      const a = claimStateSlot(tmp.dir, 'distributor-a', never, (_path, err) => unreadable.push(err));
      const b = claimStateSlot(tmp.dir, 'distributor-b', never);
      const leaseA = join(tmp.dir, 'lease.json');
      const leaseB = join(tmp.dir, 'instances', '2', 'lease.json');
      // One renewal of a's with its lease file failing to read (EMFILE: out of descriptors), one
      // with it failing to be touched (EIO): a took itself for taken over at the first, and stopped.
      await failingByPath(['openSync'], (p) => p === leaseA, () => new Promise((r) => setTimeout(r, TIMINGS.stateLeaseRenewMs + 500)), 'EMFILE');
      await failingByPath(['utimesSync'], (p) => p === leaseA, () => new Promise((r) => setTimeout(r, TIMINGS.stateLeaseRenewMs)));
      assert.deepEqual(unreadable.map((e) => (e as NodeJS.ErrnoException).code), ['EMFILE', 'EIO']);
      a.assertHeld();
      // Renewed again once it can be: its lease is younger than a renewal.
      age(leaseA, TIMINGS.stateLeaseExpiryMs - 1000);
      await new Promise((r) => setTimeout(r, TIMINGS.stateLeaseRenewMs + 500));
      const fresh = Date.now() - statSync(leaseA).mtimeMs;
      assert.ok(fresh < TIMINGS.stateLeaseRenewMs + 1000, `renewed ${fresh} ms ago`);
      a.assertHeld();
      // b's lease, unreadable to a: not free (its broker sessions are live), nor for a new claimer.
      failingByPath(['statSync'], (p) => p === leaseB, () => {
        assert.deepEqual(a.freeSlots().filter((slot) => slot === 2), [], 'slot 2 is not taken for free');
        const c = claimStateSlot(tmp.dir, 'distributor-c', never);
        assert.equal(c.slot, 3);
        c.release();
      });
      // Something other than a lease file in a slot's place (a FIFO, which a plain read waited on
      // for ever): that slot held, not free, and the look goes on.
      mkdirSync(join(tmp.dir, 'instances', '4'), { recursive: true });
      execFileSync('mkfifo', [join(tmp.dir, 'instances', '4', 'lease.json')]);
      assert.deepEqual(a.freeSlots().filter((slot) => slot === 4), [], 'slot 4 is not taken for free');
      a.release();
      b.release();
    } finally {
      tmp.cleanup();
    }
  });
});
