import { mkdirSync, rmSync, statSync } from 'node:fs';
import type { FieldStreamError } from './errors.ts';

/** Sleeps without giving up the thread: the locks below are held for milliseconds. */
function pause(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Runs `fn` (synchronous, milliseconds long) while holding the lock `lock`, a folder: mkdir is
 * atomic on every local file system and on NFS, so one process at a time holds it, across processes
 * and hosts. A lock older than `waitMs` was left by a process killed while holding it, and is taken
 * over; one that stays in place longer than `waitMs` otherwise throws `busy()`.
 */
export function withDirLock<T>(lock: string, waitMs: number, busy: () => FieldStreamError, fn: () => T): T {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const age = Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > waitMs) rmSync(lock, { recursive: true, force: true });
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
