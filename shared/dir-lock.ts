import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
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
 * Which folder is at `path` (device, inode, mtime to the nanosecond: a folder made later in its
 * place, even given the same inode, is another) and its age, or undefined when none is there.
 */
function look(path: string): { key: string; ageMs: number } | undefined {
  const st = statSync(path, { bigint: true, throwIfNoEntry: false });
  return st === undefined ? undefined : { key: `${st.dev}-${st.ino}-${st.mtimeNs}`, ageMs: Date.now() - Number(st.mtimeMs) };
}

/**
 * Removes the lock `lock` if it is still the one older than `waitMs`, one taker at a time. Checked
 * and removed by each waiting process on its own, two that saw the same stale lock at once both
 * removed "it", the second the lock the first had just made in its place, and both held the lock
 * (two slot claims, or two revocations of which the slower one's CRL lacked the other's).
 *
 * So a taker first makes the take-over marker of that very lock (LOCK.takeover-DEV-INO-MTIME-0, by
 * mkdir: one process makes it), then looks at the lock again and removes it only if it is still that
 * one. A marker is held for a stat and a rmdir; one older than `waitMs` was left by a process killed
 * in between. It is passed over, never removed: the next taker makes the marker numbered one more,
 * which again only one makes. Removed by age, two that found it stale at once both removed "it",
 * the slower one the marker the other had just made, and both went on to remove the lock. Once the
 * lock is gone its markers mean nothing (a lock made later has another name for its markers), and
 * the taker removes them. `onTakeOver` holds a taker in a test at the instant it acts ('marker-stale':
 * a marker found left by a killed process; 'lock-stale': holding a marker, the lock judged stale).
 */
function takeOverStale(lock: string, waitMs: number, onTakeOver?: (at: 'marker-stale' | 'lock-stale') => void): void {
  const seen = look(lock);
  if (seen === undefined || seen.ageMs <= waitMs) return;
  for (let n = 0; ; n++) {
    const marker = `${lock}.takeover-${seen.key}-${n}`;
    try {
      mkdirSync(marker);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if ((ageOf(marker) ?? 0) <= waitMs) {
        pause(5); // another process is taking it over: the caller tries again after
        return;
      }
      onTakeOver?.('marker-stale');
      continue;
    }
    try {
      const now = look(lock);
      if (now?.key === seen.key && now.ageMs > waitMs) {
        onTakeOver?.('lock-stale');
        rmSync(lock, { recursive: true, force: true });
        removeMarkers(lock);
      }
    } finally {
      rmSync(marker, { recursive: true, force: true });
    }
    return;
  }
}

/** Removes the take-over markers beside `lock` of every lock but the one there now. */
function removeMarkers(lock: string): void {
  const now = look(lock);
  const mine = `${basename(lock)}.takeover-`;
  let names: string[];
  try {
    names = readdirSync(dirname(lock));
  } catch {
    return; // a folder that cannot be listed: they stay, harmless
  }
  for (const name of names) {
    if (!name.startsWith(mine) || (now !== undefined && name.startsWith(`${mine}${now.key}-`))) continue;
    rmSync(join(dirname(lock), name), { recursive: true, force: true });
  }
}

/**
 * Runs `fn` (synchronous, milliseconds long) while holding the lock `lock`, a folder: mkdir is
 * atomic on every local file system and on NFS, so one process at a time holds it, across processes
 * and hosts. A lock older than `waitMs` was left by a process killed while holding it, and is taken
 * over (takeOverStale); one that stays in place longer than `waitMs` otherwise throws `busy()`.
 * `onWait` is told once when the lock is found held, before the wait: a command that says why it
 * pauses for seconds is not taken for hung. `onTakeOver`: see takeOverStale (tests only).
 */
export function withDirLock<T>(lock: string, waitMs: number, busy: () => FieldStreamError, fn: () => T, onWait?: () => void, onTakeOver?: (at: 'marker-stale' | 'lock-stale') => void): T {
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
      if ((ageOf(lock) ?? 0) > waitMs) takeOverStale(lock, waitMs, onTakeOver);
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
