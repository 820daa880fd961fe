import { mkdirSync, rmSync, statSync } from 'node:fs';
import type { FieldStreamError } from './errors.ts';

/** Sleeps without giving up the thread: the locks below are held for milliseconds. */
function pause(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Milliseconds since `path` was made (its mtime), or undefined when it is not there. */
function ageOf(path: string): number | undefined {
  const st = statSync(path, { throwIfNoEntry: false });
  return st === undefined ? undefined : Date.now() - st.mtimeMs;
}

/**
 * Removes the lock `lock` if it is still older than `waitMs`, one taker at a time: the check and
 * the removal are made holding LOCK.takeover. Checked and removed by each waiting process on its
 * own, two that saw the same stale lock at once both removed "it", the second the lock the first
 * had just made in its place, and both held the lock (two slot claims, or two revocations of which
 * the slower one's CRL lacked the other's). LOCK.takeover is held for a stat and a rmdir; one older
 * than `waitMs` was left by a process killed in between, and is removed.
 */
function takeOverStale(lock: string, waitMs: number): void {
  const guard = `${lock}.takeover`;
  try {
    mkdirSync(guard);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    if ((ageOf(guard) ?? 0) > waitMs) rmSync(guard, { recursive: true, force: true });
    else pause(5); // another process is taking it over: the caller tries again after
    return;
  }
  try {
    if ((ageOf(lock) ?? 0) > waitMs) rmSync(lock, { recursive: true, force: true });
  } finally {
    rmSync(guard, { recursive: true, force: true });
  }
}

/**
 * Runs `fn` (synchronous, milliseconds long) while holding the lock `lock`, a folder: mkdir is
 * atomic on every local file system and on NFS, so one process at a time holds it, across processes
 * and hosts. A lock older than `waitMs` was left by a process killed while holding it, and is taken
 * over (takeOverStale); one that stays in place longer than `waitMs` otherwise throws `busy()`.
 * `onWait` is told once when the lock is found held, before the wait: a command that says why it
 * pauses for seconds is not taken for hung.
 */
export function withDirLock<T>(lock: string, waitMs: number, busy: () => FieldStreamError, fn: () => T, onWait?: () => void): T {
  const deadline = Date.now() + waitMs;
  let told = false;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (!told) {
        told = true;
        onWait?.();
      }
      if ((ageOf(lock) ?? 0) > waitMs) takeOverStale(lock, waitMs);
      else if (Date.now() > deadline) throw busy();
      else pause(20);
    }
  }
  try {
    return fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}
