import { randomUUID } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { z } from 'zod';
import { FieldStreamError } from '../../shared/errors.ts';
import { lookAt, sweepBeside, takeOverFile, writeWhole, type SeenFile } from '../../shared/file-takeover.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { identityRuns, thisProcess } from '../../shared/process-identity.ts';

/** The lock's file in STACK_DIR, and what it says of its holder (read back with this schema). */
export const STACK_LOCK = 'stack.lock';
// `owner` tells two locks of one process apart, `start` is when the process started (a reused id is
// not it, shared/process-identity.ts); a lock written before they were there is still read.
const Start = z.string().regex(/^\d{1,20}$/).optional();
const LockSchema = z.object({ pid: z.number().int().positive(), start: Start, startedAt: z.string(), owner: z.string().optional() });

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
 * STACK_DIR/stack.lock names its holder's process id. It is written whole under a name of its own,
 * then linked as stack.lock (link(2) fails where the name exists), so no start ever reads a lock
 * half written. A holder killed (SIGKILL, a power cut) leaves it behind: a lock whose process runs no
 * more, or that says nothing readable, is taken over. STACK_DIR is this machine's, so a process id
 * is one of this machine's; the lock says when its process started as well, so that the id given
 * later to an unrelated process does not keep the folder (shared/process-identity.ts).
 *
 * Taking over is a compare-and-swap (shared/file-takeover.ts): two starts may judge one stale lock
 * at the same instant, and one removing or renaming it by name removed the other's fresh lock (both
 * then held it). Of two, one takes it; the other is refused, naming the first.
 *
 * `onTakeOver` runs a second start in a test at the instant this one acts ('stale': judged stale,
 * nothing done yet; 'marked': the marker made, the lock not replaced yet).
 */
export function lockStackDir(dir: string, o: { onTakeOver?: (at: 'stale' | 'marked') => void } = {}): StackDirLock {
  const path = resolve(dir, STACK_LOCK);
  mkdirSync(dir, { recursive: true });
  const owner = randomUUID();
  const me = thisProcess();
  const mine = JSON.stringify({ pid: me.pid, start: me.start, startedAt: new Date().toISOString(), owner });
  const fresh = `${path}.new-${owner}`;
  writeWhole(fresh, mine);
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        linkSync(fresh, path);
        return held(path, mine);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const seen = look(path);
      if (seen === undefined) continue; // removed meanwhile: try again
      if (seen.holder !== undefined && identityRuns(seen.holder)) throw inUse(dir, seen.holder.pid, `since ${seen.holder.startedAt}`);
      o.onTakeOver?.('stale');
      const took = takeOverFile(path, seen, fresh, () => o.onTakeOver?.('marked'));
      if (took === 'taken') return held(path, mine);
      // Being taken over by a start that runs: it holds the folder once done.
      if (took !== 'changed') throw inUse(dir, took.pid, 'taking over a stale lock');
    }
  } finally {
    rmSync(fresh, { force: true });
  }
  throw new FieldStreamError('STACK_DIR_IN_USE', `STACK_DIR ${resolve(dir)}: its lock ${path} keeps being taken by another start; start again`, { dir: resolve(dir) });
}

function held(path: string, mine: string): StackDirLock {
  sweepBeside(path, TIMINGS.takeOverDebrisMs);
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

/** The lock at `path` and its holder (undefined: it says nothing readable). */
function look(path: string): (SeenFile & { holder: z.infer<typeof LockSchema> | undefined }) | undefined {
  const seen = lookAt(path);
  if (seen === undefined) return undefined;
  try {
    const parsed = LockSchema.safeParse(JSON.parse(seen.text));
    return { ...seen, holder: parsed.success ? parsed.data : undefined };
  } catch {
    return { ...seen, holder: undefined }; // cut short by a power cut (it is written whole before it is linked), or not ours
  }
}

function inUse(dir: string, pid: number, what: string): FieldStreamError {
  return new FieldStreamError(
    'STACK_DIR_IN_USE',
    `STACK_DIR ${resolve(dir)} is in use by another npm run stack (pid ${pid}, ${what}): stop it, or give this one a STACK_DIR of its own`,
    { dir: resolve(dir), pid },
  );
}
