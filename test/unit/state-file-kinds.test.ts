import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { tempDir } from '../helpers/pki.ts';

const repo = join(import.meta.dirname, '..', '..');

/** Runs `code` (an ES module's body) in a process of its own: what it prints, or that it had to be killed. */
function run(code: string): { out: string; killed: boolean } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: repo, encoding: 'utf8', timeout: 20_000 });
  return { out: r.stdout.trim(), killed: r.signal !== null };
}

/**
 * The state files the services read whole at their start, with something other than a regular file
 * in their place: a FIFO held the start for ever without a word (the open waits for a writer), and
 * a link to /dev/zero was read until the memory ran out. Each is refused at once, and the service
 * does what it does with a file it cannot read.
 */
describe('a state file read back whole', () => {
  const tmp = tempDir('state-file-kinds');
  after(() => tmp.cleanup());
  let n = 0;
  const place = (kind: 'fifo' | 'device', path: string) => (kind === 'fifo' ? execFileSync('mkfifo', [path]) : symlinkSync('/dev/zero', path));

  for (const kind of ['fifo', 'device'] as const) {
    it(`a ${kind} in the place of a replay windows' journal stops the distributor's start with a code, rather than holding it`, () => {
      const dir = join(tmp.dir, `replay-${++n}`);
      mkdirSync(dir);
      place(kind, join(dir, 'windows-1.log'));
      const r = run(`
        const { ReplayWindows } = await import(${JSON.stringify(join(repo, 'internal-network', 'distributor', 'security', 'replay-window.ts'))});
        try { new ReplayWindows(${JSON.stringify(dir)}).close(); console.log('started'); } catch (err) { console.log(err.code); }`);
      assert.deepEqual(r, { out: 'DISTRIBUTOR_STATE_UNREADABLE', killed: false });
    });

    it(`a ${kind} in the place of the field client's ack.json is a damaged watermark: everything unacknowledged is sent again`, () => {
      const dir = join(tmp.dir, `queue-${++n}`);
      mkdirSync(dir);
      place(kind, join(dir, 'ack.json'));
      const r = run(`
        const { readWatermark } = await import(${JSON.stringify(join(repo, 'field-client', 'src', 'queue', 'queue-files.ts'))});
        const { createLogger } = await import(${JSON.stringify(join(repo, 'shared', 'logger.ts'))});
        console.log(readWatermark(${JSON.stringify(dir)}, createLogger('field-client', 'silent')));`);
      assert.deepEqual(r, { out: '0', killed: false });
    });

    it(`a ${kind} in the place of a process lock (the field client's data folder, the command API's journal) stops the start with a code, rather than holding it`, () => {
      const path = join(tmp.dir, `lock-${++n}`);
      place(kind, path);
      const r = run(`
        const { lockFor } = await import(${JSON.stringify(join(repo, 'shared', 'process-lock.ts'))});
        const use = { inUse: () => Object.assign(new Error('in use'), { code: 'IN_USE' }), lost: () => new Error('lost') };
        try { (await lockFor(${JSON.stringify(path)}, use, () => undefined)).release(); console.log('locked'); } catch (err) { console.log(err.code); }`);
      assert.deepEqual(r, { out: 'FILE_NOT_REGULAR', killed: false });
    });

    it(`a ${kind} in the place of a device's signing key is no key: the distributor goes on, rather than waiting on it at the device's first message`, () => {
      const dir = join(tmp.dir, `keys-${++n}`);
      mkdirSync(dir);
      place(kind, join(dir, 'sensor-1.key'));
      const revoked = join(tmp.dir, `revoked-${n}.txt`);
      place(kind, revoked);
      const r = run(`
        const { DeviceKeyRegistry } = await import(${JSON.stringify(join(repo, 'internal-network', 'shared', 'device-keys.ts'))});
        let registry;
        try { registry = new DeviceKeyRegistry(${JSON.stringify(dir)}, ${JSON.stringify(revoked)}); } catch (err) { console.log(err.code); }
        registry = new DeviceKeyRegistry(${JSON.stringify(dir)});
        console.log(registry.get('sensor-1') === undefined ? 'no key' : 'a key');`);
      assert.deepEqual(r, { out: 'CONFIG_FILE_UNREADABLE\nno key', killed: false });
    });

    it(`a ${kind} in the place of the CA's list of revoked devices is refused by the tooling, never read as a list of none (every revoked device taken for a valid one)`, () => {
      const root = join(tmp.dir, `certs-${++n}`);
      mkdirSync(join(root, 'internal'), { recursive: true });
      place(kind, join(root, 'internal', 'revoked-devices.txt'));
      const r = run(`
        const { readRevokedDevices } = await import(${JSON.stringify(join(repo, 'pki', 'onboarding.ts'))});
        try { console.log([...readRevokedDevices(${JSON.stringify(root)})].length, 'revoked'); } catch (err) { console.log(err.code); }`);
      assert.deepEqual(r, { out: 'FILE_NOT_REGULAR', killed: false });
    });
  }
});
