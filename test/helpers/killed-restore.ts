import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import type { AdminPaths } from '../../scripts/admin/paths.ts';

/**
 * A restore of `archive` onto `target` in a process of its own, SIGKILLed after its `killAt`-th
 * file written: what a power cut or an OOM kill midway leaves (its marks, some files restored).
 */
export async function killedRestore(target: AdminPaths, archive: string, killAt: number): Promise<void> {
  const url = new URL('../../scripts/admin/restore.ts', import.meta.url).href;
  const code = `const { restoreBackup } = await import(${JSON.stringify(url)});
    await restoreBackup(JSON.parse(process.env.TARGET), process.env.ARCHIVE, { force: true, afterWrite: (_, n) => { if (n === Number(process.env.KILL_AT)) process.kill(process.pid, 'SIGKILL'); } });`;
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), '--input-type=module', '-e', code], {
    env: { ...process.env, TARGET: JSON.stringify(target), ARCHIVE: archive, KILL_AT: String(killAt) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const [status, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  assert.equal(signal, 'SIGKILL', `the restore was not killed (exit ${status}): ${err}`);
}
