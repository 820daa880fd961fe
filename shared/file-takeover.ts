import { closeSync, linkSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
import { identityRuns, thisProcess, type ProcessIdentity } from './process-identity.ts';
import { readRegularFileSync } from './durable-fs.ts';

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
 *
 * A marker names its maker by process id and start time (this machine's processes: takeOverFile),
 * or as the caller's own rules say (takeOverFileAs): the field client's lock of FIELD_DATA_DIR may be
 * taken over from another host or container, whose process ids say nothing here.
 */

/** A look at a file: which file it was (device, inode), when it was last changed and what it said. */
export interface SeenFile {
  dev: number;
  ino: number;
  /** A lock renewed by its holder (its mtime set again) is not the stale one seen before. */
  mtimeMs: number;
  text: string;
}

/**
 * What a taker writes in its marker, and who made a marker found in place: `running` answers the
 * maker of a marker saying `text`, made `ageMs` ago, while it may still be taking the file over;
 * undefined once it is gone (killed mid-take-over), its marker then passed over.
 */
export interface MarkerRules<T> {
  text: string;
  running: (text: string, ageMs: number) => T | undefined;
}

// A marker, or a file written aside, read only for the process that made it.
const MakerSchema = z.object({ pid: z.number().int().positive(), start: z.string().regex(/^\d{1,20}$/).optional() });

/**
 * The file at `path` as it is now, or undefined when there is none. Anything but a regular file in
 * its place is FILE_NOT_REGULAR (readRegularFileSync): a FIFO held the start that looked at it for
 * ever, a link to a device was read until the memory ran out.
 */
export function lookAt(path: string): SeenFile | undefined {
  for (;;) {
    try {
      const st = statSync(path);
      const text = readRegularFileSync(path, 'utf8');
      // Read between two looks at one file: replaced meanwhile, it is looked at again.
      const after = statSync(path);
      if (after.ino === st.ino && after.dev === st.dev) return { dev: st.dev, ino: st.ino, mtimeMs: st.mtimeMs, text };
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

// This machine's processes: a marker names its maker's id and start time.
const byProcess = (): MarkerRules<ProcessIdentity> => ({
  text: JSON.stringify(thisProcess()),
  running: (text) => {
    const maker = parseMaker(text);
    return maker !== undefined && identityRuns(maker) ? maker : undefined;
  },
});

/**
 * Replaces the stale file `seen` at `path` with the file `fresh` (renamed, so gone once done):
 * 'taken' when done; 'changed' when the file at `path` is no longer `seen`; or the process (that
 * runs) taking it over at this very moment. `onMarked` runs a second taker in a test at the instant
 * this one holds the marker.
 */
export function takeOverFile(path: string, seen: SeenFile, fresh: string, onMarked?: () => void): 'taken' | 'changed' | ProcessIdentity {
  const took = takeOverFileAs(path, seen, fresh, byProcess(), onMarked);
  return typeof took === 'string' ? took : took.by;
}

/** takeOverFile with markers written and judged by `rules`: `by` is what `running` said of the maker. */
export function takeOverFileAs<T>(path: string, seen: SeenFile, fresh: string, rules: MarkerRules<T>, onMarked?: () => void, link: (from: string, to: string) => void = linkSync): 'taken' | 'changed' | { by: T } {
  const prefix = `${path}.takeover-${seen.dev}-${seen.ino}-`;
  // Made whole, then linked as the marker: a marker is never seen half written.
  const mine = `${fresh}.marker`;
  writeWhole(mine, rules.text);
  try {
    for (let n = 0; ; n++) {
      const marker = `${prefix}${n}`;
      try {
        makeMarker(mine, marker, rules.text, link);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const found = readAged(marker);
        const by = found === undefined ? undefined : rules.running(found.text, found.ageMs);
        if (by !== undefined) return { by };
        continue; // its maker was killed mid-take-over (or it is gone already): the next one
      }
      try {
        onMarked?.();
        const now = lookAt(path);
        if (now === undefined || now.dev !== seen.dev || now.ino !== seen.ino || now.mtimeMs !== seen.mtimeMs || now.text !== seen.text) return 'changed';
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

/** Errors of link(2) on a file system without hard links (FAT and exFAT: an SD card, a USB stick). */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/**
 * The marker, linked from `mine` (whole as it appears); where the file system has no hard links,
 * made with O_EXCL (one taker makes it, as with a link) and written at once: a taker finding it
 * before its text judges it as the rules judge an unreadable marker (the field client's: by its
 * age, so a young one is being made). A field client's FIELD_DATA_DIR may be on FAT; a take-over
 * there that failed on link(2) would keep the client from starting after every power cut.
 */
function makeMarker(mine: string, marker: string, text: string, link: (from: string, to: string) => void): void {
  try {
    link(mine, marker);
  } catch (err) {
    if (!NO_HARD_LINKS.has((err as NodeJS.ErrnoException).code ?? '')) throw err;
    writeWhole(marker, text);
  }
}

/**
 * Removes what processes killed mid-way left beside `path` (a file written aside, a take-over
 * marker): each names its process, and those of a process that runs stay. One that names none yet
 * is removed once older than `unwrittenMs`: younger, it is being written.
 */
export function sweepBeside(path: string, unwrittenMs: number): void {
  sweepBesideAs(path, (text, ageMs) => {
    const maker = text === undefined ? undefined : parseMaker(text);
    return maker !== undefined ? !identityRuns(maker) : ageMs > unwrittenMs;
  });
}

/** sweepBeside with what is left judged by `stale` (what it says, undefined where unreadable; its age). */
export function sweepBesideAs(path: string, stale: (text: string | undefined, ageMs: number) => boolean): void {
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return; // a folder that cannot be listed: they stay, harmless
  }
  for (const name of names) {
    if (!name.startsWith(`${basename(path)}.new-`) && !name.startsWith(`${basename(path)}.takeover-`)) continue;
    const file = join(dirname(path), name);
    const mtimeMs = statSync(file, { throwIfNoEntry: false })?.mtimeMs;
    if (mtimeMs === undefined) continue; // gone meanwhile
    if (stale(readAged(file)?.text, Date.now() - mtimeMs)) rmSync(file, { force: true });
  }
}

/** What `file` says and how old it is, or undefined when it cannot be read (gone meanwhile). */
function readAged(file: string): { text: string; ageMs: number } | undefined {
  try {
    const ageMs = Date.now() - statSync(file).mtimeMs;
    return { text: readFileSync(file, 'utf8'), ageMs };
  } catch {
    return undefined;
  }
}

function parseMaker(text: string): ProcessIdentity | undefined {
  try {
    const parsed = MakerSchema.safeParse(JSON.parse(text));
    return parsed.success ? { pid: parsed.data.pid, start: parsed.data.start } : undefined;
  } catch {
    return undefined; // cut short by a power cut, or not written yet
  }
}
