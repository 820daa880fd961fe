import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { TIMINGS } from '../../shared/limits.ts';
import { REPO_ROOT } from './stack.ts';

/**
 * Holds the lock folder `lock` (shared/dir-lock.ts) as a command that is alive would, until
 * `release()`: its time is renewed every second, since a lock older than TIMINGS.adminLockWaitMs is
 * taken for one left by a killed process and taken over. A command that takes longer than that to
 * look at the lock (its keys made first, on a loaded machine) would otherwise take a test's lock over
 * and write while the test holds it.
 */
export function holdLock(lock: string): { release(): void } {
  mkdirSync(lock);
  const renew = setInterval(() => {
    try {
      const now = new Date();
      utimesSync(lock, now, now);
    } catch {
      // released, or its folder removed by the test's cleanup
    }
  }, Math.min(1_000, TIMINGS.adminLockWaitMs / 4));
  renew.unref();
  return {
    release() {
      clearInterval(renew);
      rmSync(lock, { recursive: true });
    },
  };
}

/**
 * `bin/fieldstream-admin ARGS` started while a test holds `lock`: resolves once the command says on
 * stderr that it waits for it (not after a fixed pause: a slow start would have read the folder
 * before the lock was looked at), rejects if it ends first. `exited` gives its exit code, `output()`
 * what it wrote so far.
 */
export function adminWaitingFor(lock: string, args: readonly string[]): Promise<{ exited: Promise<number | null>; output: () => { stdout: string; stderr: string } }> {
  return commandWaitingFor('bin/fieldstream-admin', lock, args);
}

/**
 * The repository's command `file` (bin/fieldstream-admin, scripts/generate-certificates.sh, ...)
 * with ARGS and `env` (CERTS_DIR, say) on top of PATH, started while a test holds `lock`: as
 * adminWaitingFor.
 */
export async function commandWaitingFor(
  file: string,
  lock: string,
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<{ exited: Promise<number | null>; output: () => { stdout: string; stderr: string } }> {
  const child = spawn(join(REPO_ROOT, file), [...args], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null', ...env },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => void (stdout += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  await new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes(`waiting for ${lock}`)) resolve();
    });
    void exited.then(() => reject(new Error(`${file} ${args[0] ?? ''} ended without waiting for ${lock}: ${stderr}${stdout}`)));
  });
  return { exited, output: () => ({ stdout, stderr }) };
}
