import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { createBackup } from '../../scripts/admin/backup.ts';
import type { AdminPaths } from '../../scripts/admin/paths.ts';
import { restoreBackup } from '../../scripts/admin/restore.ts';
import { EXIT, runAdmin } from '../../scripts/admin/run.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';

/**
 * A restore onto a state folder a distributor runs on. The distributor holds its replay windows in
 * memory and its journal open; restored under it, the archive's windows are never read by it (it
 * goes on refusing only what it accepted itself), what it appends goes to a file the restore renamed
 * away, and its next start may load the archive's snapshot and none of its own journals. The
 * command journal was guarded (API_STATE_IN_USE); the replay windows were written without a word.
 */
describe('restore and a distributor running on the state folder', () => {
  const pki = makeTestPki(['dev-a']);
  const work = tempDir('restore-running');
  const source: AdminPaths = { certsDir: pki.dir, stateDir: join(work.dir, 'state'), commandState: join(work.dir, 'commands.jsonl') };
  const archive = join(work.dir, 'backup.tar.gz');
  before(async () => {
    const windows = new ReplayWindows(join(source.stateDir, 'replay'));
    for (let seq = 1; seq <= 10; seq++) windows.record('dev-a', 'epoch-1', seq);
    windows.persist();
    await createBackup(source, archive);
  });
  after(() => {
    pki.cleanup();
    work.cleanup();
  });

  /** A distributor's hold of a state folder (state-lease.ts), in a process of its own, until stdin closes. */
  async function holdSlot(stateDir: string, instances = 1) {
    const url = new URL('../../internal-network/distributor/state-lease.ts', import.meta.url).href;
    const code = `const { claimStateSlot } = await import(${JSON.stringify(url)});
      const leases = Array.from({ length: ${instances} }, (_, i) => claimStateSlot(process.env.STATE, 'distributor-' + i, () => {}));
      console.log('held');
      process.stdin.on('end', () => { for (const l of leases) l.release(); process.exit(0); });
      process.stdin.resume();`;
    const holder = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { env: { ...process.env, STATE: stateDir }, stdio: ['pipe', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      holder.stdout?.on('data', (d: Buffer) => d.toString().includes('held') && resolve());
      holder.once('exit', (c) => reject(new Error(`the holder exited with ${c}`)));
    });
    return {
      pid: holder.pid,
      stop: async () => {
        const exited = new Promise((r) => holder.once('exit', r));
        holder.stdin?.end();
        await exited;
      },
    };
  }

  it('refuses, writing nothing, while a distributor holds the folder; once it stopped, restores', async () => {
    const target: AdminPaths = { certsDir: join(work.dir, 't1', 'certs'), stateDir: join(work.dir, 't1', 'state'), commandState: join(work.dir, 't1', 'commands.jsonl') };
    const holder = await holdSlot(target.stateDir);
    try {
      await assert.rejects(restoreBackup(target, archive), (err: unknown) => {
        assert.ok(isFieldStreamError(err), String(err));
        assert.equal(err.code, 'BACKUP_STATE_IN_USE', err.message);
        assert.match(err.message, new RegExp(`process ${holder.pid}`));
        return true;
      });
      assert.equal(existsSync(join(target.stateDir, 'replay')), false, `no replay window written: ${readdirSync(target.stateDir).join(' ')}`);
      assert.equal(existsSync(target.certsDir), false, 'nothing else either');
      // the operator's command: a failure, coded, on stderr
      const err: string[] = [];
      const code = await runAdmin(['restore', archive], { out: () => undefined, err: (t) => void err.push(t), env: { CERTS_DIR: target.certsDir, DISTRIBUTOR_STATE_DIR: target.stateDir, COMMAND_STATE_PATH: target.commandState }, cwd: REPO_ROOT });
      assert.equal(code, EXIT.failed, err.join(''));
      assert.match(err.join(''), /BACKUP_STATE_IN_USE/);
    } finally {
      await holder.stop();
    }
    const ok = await restoreBackup(target, archive);
    assert.ok(ok.written.some((f) => f.includes(`${join('state', 'replay')}`)), ok.written.join(' '));
  });

  it("refuses as well while a replica holds another slot of the folder, whose windows the archive holds", async () => {
    // The archive of a folder of two replicas: slot 2's windows in instances/2/.
    const two: AdminPaths = { ...source, stateDir: join(work.dir, 'state-two') };
    for (const dir of [join(two.stateDir, 'replay'), join(two.stateDir, 'instances', '2', 'replay')]) {
      const w = new ReplayWindows(dir);
      w.record('dev-a', 'epoch-1', 1);
      w.persist();
    }
    const archiveTwo = join(work.dir, 'backup-two.tar.gz');
    await createBackup(two, archiveTwo);
    const target: AdminPaths = { certsDir: join(work.dir, 't2', 'certs'), stateDir: join(work.dir, 't2', 'state'), commandState: join(work.dir, 't2', 'commands.jsonl') };
    const holder = await holdSlot(target.stateDir, 2);
    try {
      await assert.rejects(restoreBackup(target, archiveTwo), (err: unknown) => isFieldStreamError(err) && err.code === 'BACKUP_STATE_IN_USE');
      assert.equal(existsSync(join(target.stateDir, 'instances', '2', 'replay')), false);
    } finally {
      await holder.stop();
    }
    await restoreBackup(target, archiveTwo);
  });
});
