import { randomUUID } from 'node:crypto';
import { closeSync, linkSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { FieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { identityRuns, thisProcess, type ProcessIdentity } from '../../shared/process-identity.ts';

/** The lock's file in STACK_DIR, and what it says of its holder (read back with this schema). */
export const STACK_LOCK = 'stack.lock';
// `owner` tells two locks of one process apart, `start` is when the process started (a reused id is
// not it, shared/process-identity.ts); a lock written before they were there is still read.
const Start = z.string().regex(/^\d{1,20}$/).optional();
const LockSchema = z.object({ pid: z.number().int().positive(), start: Start, startedAt: z.string(), owner: z.string().optional() });
// A take-over marker, or a lock written aside: read only for the process that made it.
const MarkerSchema = z.object({ pid: z.number().int().positive(), start: Start });

export interface StackDirLock {
  /** Removes the lock, if it is still this one's. */
  release(): void;
}

/** A look at the lock's file: which file it was (inode), what it said, and its holder if readable. */
interface Seen {
  dev: number;
  ino: number;
  text: string;
  holder: z.infer<typeof LockSchema> | undefined;
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
 * Taking over is a compare-and-swap, since two starts may judge one stale lock at the same instant
 * and removing or renaming it by name would remove whatever is there by then, the other start's
 * fresh lock included (both then held it). A start first makes the take-over marker of that very
 * file (stack.lock.takeover-INODE-0, by link(2): one start makes it, the other finds it made by a
 * process that runs and is refused), then reads the lock again: still that file, saying the same,
 * it replaces it with its own by rename(2), atomically; changed meanwhile, it looks again. A marker
 * whose maker was killed mid-take-over does not block: the next start makes the marker numbered one
 * more.
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
      if (takeOver(path, seen, fresh, dir, o)) return held(path, mine);
    }
  } finally {
    rmSync(fresh, { force: true });
  }
  throw new FieldStreamError('STACK_DIR_IN_USE', `STACK_DIR ${resolve(dir)}: its lock ${path} keeps being taken by another start; start again`, { dir: resolve(dir) });
}

/** Replaces the stale lock `seen` with `fresh`: true when done, false when the lock changed meanwhile. */
function takeOver(path: string, seen: Seen, fresh: string, dir: string, o: { onTakeOver?: (at: 'stale' | 'marked') => void }): boolean {
  const prefix = `${path}.takeover-${seen.dev}-${seen.ino}-`;
  // Made beside the lock written aside, to be linked as the marker: a marker is never seen half written.
  const markerText = `${fresh}.marker`;
  writeWhole(markerText, JSON.stringify(thisProcess()));
  try {
    for (let n = 0; ; n++) {
      const marker = `${prefix}${n}`;
      try {
        linkSync(markerText, marker);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const maker = readMarker(marker);
        // Being taken over by a start that runs: it holds the folder once done.
        if (maker !== undefined && identityRuns(maker)) throw inUse(dir, maker.pid, 'taking over a stale lock');
        continue; // its maker was killed mid-take-over (or it is gone already): the next one
      }
      try {
        o.onTakeOver?.('marked');
        const now = look(path);
        if (now === undefined || now.dev !== seen.dev || now.ino !== seen.ino || now.text !== seen.text) return false;
        renameSync(fresh, path);
        return true;
      } finally {
        rmSync(marker, { force: true });
      }
    }
  } finally {
    rmSync(markerText, { force: true });
  }
}

function held(path: string, mine: string): StackDirLock {
  sweep(path);
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

function writeWhole(file: string, text: string): void {
  const fd = openSync(file, 'wx', 0o644);
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}

function look(path: string): Seen | undefined {
  let text: string;
  let st: { dev: number; ino: number };
  try {
    st = statSync(path);
    text = readFileSync(path, 'utf8');
    // Read between two looks at one file: replaced meanwhile, it is looked at again.
    const after = statSync(path);
    if (after.ino !== st.ino || after.dev !== st.dev) return look(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let holder: z.infer<typeof LockSchema> | undefined;
  try {
    const parsed = LockSchema.safeParse(JSON.parse(text));
    if (parsed.success) holder = parsed.data;
  } catch {
    // cut short by a power cut (it is written whole before it is linked), or not ours
  }
  return { dev: st.dev, ino: st.ino, text, holder };
}

function readMarker(marker: string): ProcessIdentity | undefined {
  try {
    const parsed = MarkerSchema.safeParse(JSON.parse(readFileSync(marker, 'utf8')));
    return parsed.success ? { pid: parsed.data.pid, start: parsed.data.start } : undefined;
  } catch {
    return undefined; // gone meanwhile, cut short by a power cut, or (a file aside) not written yet
  }
}

/**
 * Removes what starts killed mid-way left beside the lock (their lock written aside, a take-over
 * marker): each names its process, and those of a start that runs stay.
 */
function sweep(path: string): void {
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return; // a folder that cannot be listed: they stay, harmless
  }
  for (const name of names) {
    if (!name.startsWith(`${basename(path)}.new-`) && !name.startsWith(`${basename(path)}.takeover-`)) continue;
    const file = join(dirname(path), name);
    const maker = readMarker(file);
    const stale = maker !== undefined ? !identityRuns(maker) : Date.now() - (statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? Date.now()) > TIMINGS.stackLockDebrisMs;
    if (stale) rmSync(file, { force: true });
  }
}

function inUse(dir: string, pid: number, what: string): FieldStreamError {
  return new FieldStreamError(
    'STACK_DIR_IN_USE',
    `STACK_DIR ${resolve(dir)} is in use by another npm run stack (pid ${pid}, ${what}): stop it, or give this one a STACK_DIR of its own`,
    { dir: resolve(dir), pid },
  );
}
