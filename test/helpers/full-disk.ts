import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A disk that is really full: a small tmpfs, mounted in a private mount namespace (unshare -m) for
 * one child process, so nothing outside it sees the mount, and unmounted when the child ends. Needs
 * root (or a user namespace that may mount); `fullDiskSkip` says why a test cannot run otherwise.
 */
function canMount(): boolean {
  const dir = mkdtempSync(join(tmpdir(), 'full-disk-probe-'));
  try {
    return spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs "$1" && umount "$1"', 'sh', dir], { stdio: 'ignore' }).status === 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
export const fullDiskSkip: string | false = canMount() ? false : 'cannot mount a tmpfs in a private mount namespace (needs root)';

const ROOT = new URL('../..', import.meta.url).pathname;

/**
 * Runs `script` (an ES module; it may import this repository's files by their file URLs, see
 * `moduleUrl`) with node and tsx, MNT in its environment naming a tmpfs of `sizeKiB` mounted on
 * `mountPoint` (an empty folder) for it alone, read-only with `readOnly`; `env` over this process's
 * environment; killed (SIGTERM) after `timeoutMs`. Returns its exit status and output.
 */
export function runOnSmallDisk(mountPoint: string, script: string, sizeKiB = 256, o: { readOnly?: boolean; env?: Record<string, string>; timeoutMs?: number } = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(
    'unshare',
    [
      '-m',
      '--propagation',
      'private',
      'sh',
      '-c',
      // Unmounted explicitly too, whatever the script's outcome (the namespace would drop it with the child).
      `mount -t tmpfs -o size=${sizeKiB}k${o.readOnly ? ',ro' : ''} tmpfs "$MNT" || exit 90; "$NODE" --import tsx --input-type=module -e "$SCRIPT"; rc=$?; umount "$MNT"; exit $rc`,
    ],
    { env: { ...process.env, ...o.env, MNT: mountPoint, NODE: process.execPath, SCRIPT: script }, encoding: 'utf8', cwd: ROOT, ...(o.timeoutMs === undefined ? {} : { timeout: o.timeoutMs }) },
  );
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** The file URL of a file of this repository, as JSON, for a script's import. */
export const moduleUrl = (path: string) => JSON.stringify(new URL(join('../..', path), import.meta.url).href);

/**
 * For the script: fills the file system of `dir` until it refuses a write (ENOSPC), in a file
 * `filler` there; returns that error's code and a function that frees the space again.
 */
export function fillDisk(dir: string): { code: string | undefined; free: () => void } {
  const path = join(dir, 'filler');
  const fd = openSync(path, 'w');
  let code: string | undefined;
  try {
    for (;;) writeSync(fd, Buffer.alloc(4096));
  } catch (err) {
    code = (err as NodeJS.ErrnoException).code;
  } finally {
    closeSync(fd);
  }
  return { code, free: () => rmSync(path, { force: true }) };
}
