import { closeSync, linkSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
import { identityRuns, thisProcess, type ProcessIdentity } from './process-identity.ts';

/**
 * Taking over a file that names a process gone (a lock, a reservation), as a compare-and-swap. Two
 * processes may judge one such file stale at the same instant; removing or renaming it by name then
 * removes whatever is there by then, the other one's fresh file included, and both hold it. So a
 * taker first makes the take-over marker of that very file (PATH.takeover-DEV-INODE-0, by link(2):
 * one process makes it, the other finds it made by a process that runs), then looks at the file
 * again: still that file, saying the same, it replaces it with its own by rename(2), atomically;
 * changed meanwhile, it does not. A marker whose maker was killed mid-take-over does not block: the
 * next taker makes the marker numbered one more. Markers and files written aside are named
 * PATH.takeover-* and PATH.new-*; sweepBeside removes those of processes gone.
 */

/** A look at a file: which file it was (device, inode) and what it said. */
export interface SeenFile {
  dev: number;
  ino: number;
  text: string;
}

// A marker, or a file written aside, read only for the process that made it.
const MakerSchema = z.object({ pid: z.number().int().positive(), start: z.string().regex(/^\d{1,20}$/).optional() });

/** The file at `path` as it is now, or undefined when there is none. */
export function lookAt(path: string): SeenFile | undefined {
  for (;;) {
    try {
      const st = statSync(path);
      const text = readFileSync(path, 'utf8');
      // Read between two looks at one file: replaced meanwhile, it is looked at again.
      const after = statSync(path);
      if (after.ino === st.ino && after.dev === st.dev) return { dev: st.dev, ino: st.ino, text };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }
}

/** Writes `text` as the new file `file` (O_EXCL), before it is given the name others look at. */
export function writeWhole(file: string, text: string): void {
  const fd = openSync(file, 'wx', 0o644);
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}

/**
 * Replaces the stale file `seen` at `path` with the file `fresh` (renamed, so gone once done):
 * 'taken' when done; 'changed' when the file at `path` is no longer `seen`; or the process (that
 * runs) taking it over at this very moment. `onMarked` runs a second taker in a test at the instant
 * this one holds the marker.
 */
export function takeOverFile(path: string, seen: SeenFile, fresh: string, onMarked?: () => void): 'taken' | 'changed' | ProcessIdentity {
  const prefix = `${path}.takeover-${seen.dev}-${seen.ino}-`;
  // Made whole, then linked as the marker: a marker is never seen half written.
  const mine = `${fresh}.marker`;
  writeWhole(mine, JSON.stringify(thisProcess()));
  try {
    for (let n = 0; ; n++) {
      const marker = `${prefix}${n}`;
      try {
        linkSync(mine, marker);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const maker = readMaker(marker);
        if (maker !== undefined && identityRuns(maker)) return maker;
        continue; // its maker was killed mid-take-over (or it is gone already): the next one
      }
      try {
        onMarked?.();
        const now = lookAt(path);
        if (now === undefined || now.dev !== seen.dev || now.ino !== seen.ino || now.text !== seen.text) return 'changed';
        renameSync(fresh, path);
        return 'taken';
      } finally {
        rmSync(marker, { force: true });
      }
    }
  } finally {
    rmSync(mine, { force: true });
  }
}

/**
 * Removes what processes killed mid-way left beside `path` (a file written aside, a take-over
 * marker): each names its process, and those of a process that runs stay. One that names none yet
 * is removed once older than `unwrittenMs`: younger, it is being written.
 */
export function sweepBeside(path: string, unwrittenMs: number): void {
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return; // a folder that cannot be listed: they stay, harmless
  }
  for (const name of names) {
    if (!name.startsWith(`${basename(path)}.new-`) && !name.startsWith(`${basename(path)}.takeover-`)) continue;
    const file = join(dirname(path), name);
    const maker = readMaker(file);
    const stale = maker !== undefined ? !identityRuns(maker) : Date.now() - (statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? Date.now()) > unwrittenMs;
    if (stale) rmSync(file, { force: true });
  }
}

function readMaker(file: string): ProcessIdentity | undefined {
  try {
    const parsed = MakerSchema.safeParse(JSON.parse(readFileSync(file, 'utf8')));
    return parsed.success ? { pid: parsed.data.pid, start: parsed.data.start } : undefined;
  } catch {
    return undefined; // gone meanwhile, cut short by a power cut, or not written yet
  }
}
