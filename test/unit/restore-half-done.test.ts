import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConsoleConfig } from '../../internal-network/console/config.ts';
import { startConsole } from '../../internal-network/console/console.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { createBackup } from '../../scripts/admin/backup.ts';
import type { AdminPaths } from '../../scripts/admin/paths.ts';
import { restoreBackup } from '../../scripts/admin/restore.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { createLogger } from '../../shared/logger.ts';
import { makeTestPki, serviceMqttSettings, tempDir } from '../helpers/pki.ts';

const repoRoot = join(import.meta.dirname, '..', '..');

/**
 * A restore killed midway (SIGKILL) leaves some files restored and others not. Its mark was in the
 * certificates folder's root only, which the admin commands read and the services do not mount: a
 * distributor or command API started on the folders took the half-restored replay windows, journal
 * and device keys as they were. Each must refuse to start (RESTORE_INCOMPLETE) until a restore
 * has run to its end, and start once one has.
 */
describe('services started on the folders of a restore killed midway', () => {
  const pki = makeTestPki(['dev-a', 'dev-b']);
  const work = tempDir('restore-half');
  const source: AdminPaths = { certsDir: pki.dir, stateDir: join(work.dir, 'state'), commandState: join(work.dir, 'commands.jsonl') };
  const archive = join(work.dir, 'backup.tar.gz');
  let files = 0;
  before(async () => {
    const windows = new ReplayWindows(join(source.stateDir, 'replay'));
    for (let seq = 1; seq <= 10; seq++) windows.record('dev-a', 'epoch-1', seq);
    windows.persist();
    writeFileSync(source.commandState, '');
    files = (await createBackup(source, archive)).manifest.files.length;
  });
  after(() => {
    pki.cleanup();
    work.cleanup();
  });

  /** A restore of the archive onto `target` in a process of its own, SIGKILLed after its `killAt`-th file written. */
  async function killedRestore(target: AdminPaths, killAt: number): Promise<void> {
    const url = new URL('../../scripts/admin/restore.ts', import.meta.url).href;
    const code = `const { restoreBackup } = await import(${JSON.stringify(url)});
      await restoreBackup(JSON.parse(process.env.TARGET), process.env.ARCHIVE, { afterWrite: (_, n) => { if (n === Number(process.env.KILL_AT)) process.kill(process.pid, 'SIGKILL'); } });
      console.log('finished');`;
    const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), '--input-type=module', '-e', code], {
      env: { ...process.env, TARGET: JSON.stringify(target), ARCHIVE: archive, KILL_AT: String(killAt) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const [status, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    assert.equal(signal, 'SIGKILL', `the restore was not killed (exit ${status}): ${err}`);
  }

  /** A service's process on `target`'s folders: its exit, or 'running' after it claimed them. */
  async function startService(service: 'distributor' | 'command-api', target: AdminPaths): Promise<{ outcome: 'running' | number; stderr: string }> {
    const own = service === 'distributor' ? 'internal/distributor' : 'internal/command-api';
    const env: Record<string, string | undefined> = {
      PATH: process.env.PATH,
      FIELDSTREAM_ENV_FILE: '/dev/null',
      LOG_LEVEL: 'info',
      // a broker that is not there: the service keeps trying, which is enough to be seen running
      ...serviceMqttSettings(pki.paths, own, 'mqtts://127.0.0.1:1'),
      ...(service === 'distributor'
        ? {
            DISTRIBUTOR_DEVICE_KEYS_DIR: join(target.certsDir, 'internal', 'device-keys'),
            DISTRIBUTOR_REVOKED_DEVICES_FILE: join(pki.dir, 'internal', 'revoked-devices.txt'),
            DISTRIBUTOR_STORED_FEED_KEY_FILE: join(pki.dir, 'internal', 'stored-feed.key'),
            DISTRIBUTOR_STATE_DIR: target.stateDir,
            DISTRIBUTOR_METRICS_PORT: 'off',
          }
        : {
            COMMAND_API_TOKEN: 'x'.repeat(32),
            COMMAND_API_PORT: '0',
            COMMAND_API_METRICS_PORT: 'off',
            COMMAND_DEVICE_KEYS_DIR: join(target.certsDir, 'internal', 'device-keys'),
            COMMAND_REVOKED_DEVICES_FILE: join(pki.dir, 'internal', 'revoked-devices.txt'),
            COMMAND_STATE_PATH: target.commandState,
          }),
    };
    const main = join(repoRoot, 'internal-network', service, 'main.ts');
    const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), main], { cwd: work.dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    // Running: what it holds of its folder while it runs (its slot's lease, its journal's lock) is there, 3 s on.
    const held = service === 'distributor' ? join(target.stateDir, 'lease.json') : `${target.commandState}.lock`;
    const outcome = await Promise.race([
      exited.then(([status]) => status ?? -1),
      new Promise<'running'>((r) => setTimeout(() => r('running'), 3_000)).then(async (r) => {
        for (let i = 0; i < 200 && child.exitCode === null && !existsSync(held); i++) await new Promise((w) => setTimeout(w, 50));
        return child.exitCode === null ? r : child.exitCode;
      }),
    ]);
    if (child.exitCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    return { outcome, stderr: err + out };
  }

  for (const at of ['after its first file', 'halfway', 'after its last file'] as const) {
    it(`killed ${at}: the distributor and the command API refuse to start (RESTORE_INCOMPLETE) until a second restore completes`, { timeout: 120_000 }, async () => {
      const dir = join(work.dir, at.replace(/ /g, '-'));
      const target: AdminPaths = { certsDir: join(dir, 'certs'), stateDir: join(dir, 'state'), commandState: join(dir, 'command-api', 'commands.jsonl') };
      await killedRestore(target, at === 'after its first file' ? 1 : at === 'halfway' ? Math.ceil(files / 2) : files);

      for (const service of ['distributor', 'command-api'] as const) {
        const r = await startService(service, target);
        assert.equal(r.outcome, 1, `${service}: ${r.stderr}`);
        assert.match(r.stderr, /error RESTORE_INCOMPLETE: .*run the restore again to its end/, service);
      }

      // The console, on the device keys' folder it mounts: refused before it opens anything.
      const consoleConfig = loadConsoleConfig({
        COMMAND_API_TOKEN: 'a'.repeat(32),
        CONSOLE_STORED_FEED_KEY_FILE: join(pki.dir, 'internal', 'stored-feed.key'),
        CONSOLE_DEVICE_KEYS_DIR: join(target.certsDir, 'internal', 'device-keys'),
        CONSOLE_REVOKED_DEVICES_FILE: join(pki.dir, 'internal', 'revoked-devices.txt'),
      });
      await assert.rejects(startConsole(consoleConfig, createLogger('test', 'silent')), (e) => isFieldStreamError(e, 'RESTORE_INCOMPLETE'));

      // Run again, to its end: every mark goes, and both start.
      await restoreBackup(target, archive, { force: true });
      for (const d of [target.certsDir, join(target.certsDir, 'internal', 'device-keys'), target.stateDir, dirname(target.commandState)]) {
        assert.equal(existsSync(join(d, '.restore-running')), false, `a mark left in ${d}`);
      }
      for (const service of ['distributor', 'command-api'] as const) {
        const r = await startService(service, target);
        assert.equal(r.outcome, 'running', `${service}: ${r.stderr}`);
        assert.doesNotMatch(r.stderr, /RESTORE_INCOMPLETE/);
      }
    });
  }
});
