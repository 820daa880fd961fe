import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { FieldStreamError } from '../../shared/errors.ts';

/** The lock's file in STACK_DIR, and what it says of its holder (read back with this schema). */
export const STACK_LOCK = 'stack.lock';
const LockSchema = z.object({ pid: z.number().int().positive(), startedAt: z.string() });

export interface StackDirLock {
  /** Removes the lock, if it is still this one's. */
  release(): void;
}

/**
 * STACK_DIR for one `npm run stack` at a time. Two on one folder (a second terminal, other
 * STACK_*_PORTs) ran on the same files: both Mosquittos wrote one persistence file, over what the
 * other had queued; both distributors took the state folder from each other at every restart
 * (DISTRIBUTOR_STATE_LEASE), their supervisors restarting them for ever; every log held both. The
 * second is refused with STACK_DIR_IN_USE, naming the first.
 *
 * STACK_DIR/stack.lock, made with O_EXCL, names its holder's process id. A holder killed (SIGKILL,
 * a power cut) leaves it behind: a lock whose process runs no more, or that says nothing readable,
 * is taken over. STACK_DIR is this machine's, so a process id is one of this machine's.
 */
export function lockStackDir(dir: string): StackDirLock {
  const path = resolve(dir, STACK_LOCK);
  mkdirSync(dir, { recursive: true });
  const mine = JSON.stringify({ pid: process.pid, startedAt: new Date().toISOString() });
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, 'wx', 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = readHolder(path);
      if (holder === 'absent') continue; // removed meanwhile: try again
      if (holder !== 'unreadable' && running(holder.pid)) {
        throw new FieldStreamError(
          'STACK_DIR_IN_USE',
          `STACK_DIR ${resolve(dir)} is in use by another npm run stack (pid ${holder.pid}, since ${holder.startedAt}): stop it, or give this one a STACK_DIR of its own`,
          { dir: resolve(dir), pid: holder.pid },
        );
      }
      // Renamed away first (atomic): of two starts taking over at once, one moves it, the other
      // finds it gone and tries again, to find the first one's lock.
      const aside = `${path}.stale-${process.pid}`;
      try {
        renameSync(path, aside);
        rmSync(aside, { force: true });
      } catch {
        // another start took it first
      }
      continue;
    }
    try {
      writeSync(fd, mine);
    } finally {
      closeSync(fd);
    }
    const release = () => {
      try {
        if (readFileSync(path, 'utf8') === mine) rmSync(path, { force: true });
      } catch {
        // gone already
      }
    };
    // A stop forced by a second Ctrl-C exits without the stack's close(): released as the process ends.
    process.once('exit', release);
    return { release: () => { process.removeListener('exit', release); release(); } };
  }
  throw new FieldStreamError('STACK_DIR_IN_USE', `STACK_DIR ${resolve(dir)}: its lock ${join(resolve(dir), STACK_LOCK)} keeps being taken by another start; start again`, { dir: resolve(dir) });
}

function readHolder(path: string): z.infer<typeof LockSchema> | 'absent' | 'unreadable' {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw err;
  }
  try {
    const parsed = LockSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : 'unreadable';
  } catch {
    return 'unreadable'; // cut short while written, or not ours
  }
}

/** True when a process of that id runs on this machine (another user's included). */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
