import { randomUUID } from 'node:crypto';
import { closeSync, fstatSync, futimesSync, openSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { z } from 'zod';
import { processRuns, syncDirSync, writeWholeSync } from './durable-fs.ts';
import type { FieldStreamError } from './errors.ts';
import { lookAt, sweepBesideAs, takeOverFileAs, type SeenFile } from './file-takeover.ts';
import { TIMINGS } from './limits.ts';
import { bootId } from './process-identity.ts';

/** What a lock file says of its holder (read back with this schema). */
const LockSchema = z.object({ owner: z.string(), pid: z.number().int().positive(), host: z.string(), bootId: z.string().optional(), startedAt: z.string() });
export type Lock = z.infer<typeof LockSchema>;

/** The locks this process holds, by path: a lock naming this process's id is one of these, or left by an earlier process of that id. */
const heldHere = new Set<string>();

export interface ProcessLock {
  /** Stops renewing and removes the lock, if it is still this one's. */
  release(): void;
}

/** Who holds a lock, for an error's message: its process, host and since when (`what`: the kind of process, for one whose lock is being written). */
export function holderText(lock: Lock | undefined, what: string): string {
  return lock ? `process ${lock.pid} on ${lock.host}, since ${lock.startedAt}` : `a ${what} whose lock is being written`;
}

/** The details of an error naming a lock's holder: the lock's path, and the holder's process and host when known. */
export function holderDetails(path: string, lock: Lock | undefined): Record<string, unknown> {
  return { path, ...(lock ? { pid: lock.pid, host: lock.host } : {}) };
}

/** What a lock is for, in its holder's errors. */
export interface LockUse {
  /** the error for a start refused while another holds the lock (`holder`: undefined while its lock is being written) */
  inUse(holder: Lock | undefined): FieldStreamError;
  /** the error for a holder that finds its lock taken over by another (it was stalled past TIMINGS.dataLockExpiryMs) */
  lost(): FieldStreamError;
}

/**
 * One process at a time on what `path` locks (a field client's FIELD_DATA_DIR, the command API's
 * journal): two appended to one queue or journal, and each deleted or rewrote what the other still
 * used. A second is refused with `use.inUse`, naming the first.
 *
 * The lock is the file `path`, made with O_EXCL, naming its holder, its mtime renewed every
 * TIMINGS.dataLockRenewMs. A holder killed (SIGKILL, a power cut) leaves it behind, so a lock is
 * taken over when its holder is provably gone: on this machine in this boot (same host name and boot
 * id) a process id that runs no more, or that is this process's own (a container started again has
 * the same id, 1); a boot id that changed (the machine restarted); or a lock not renewed for
 * TIMINGS.dataLockExpiryMs (a holder on another host, or in another container, whose process ids
 * say nothing here: the start waits that long at most). A holder that was stalled past the expiry
 * and whose lock was taken meanwhile finds at its next renewal that the lock's name is no longer its
 * file (replaced by the taker's), and `onLost` stops it.
 *
 * Taking over is a compare-and-swap (file-takeover.ts): two starts may judge one stale lock at the
 * same instant, and one renaming it away by name renamed away the other's fresh lock, both then
 * holding it until the next renewal. Of two, one takes it; the other is refused, naming the first.
 * Its take-over marker names the taker as a lock does, judged by the same rules (a taker on another
 * host or in another container by its age). `onTakeOver` runs a second start in a test at the
 * instant this one acts ('stale': judged stale, nothing done yet; 'marked': the marker made, the
 * lock not replaced yet).
 */
export async function lockFor(path: string, use: LockUse, onLost: (err: FieldStreamError) => void, o: { onTakeOver?: (at: 'stale' | 'marked') => void } = {}): Promise<ProcessLock> {
  const mine: Lock = { owner: randomUUID(), pid: process.pid, host: hostname(), bootId: bootId(), startedAt: new Date().toISOString() };
  const deadline = Date.now() + TIMINGS.dataLockExpiryMs + TIMINGS.dataLockRenewMs;
  for (;;) {
    // Two holders in one process (npm start's devices on one folder): refused as any other.
    if (heldHere.has(path)) throw use.inUse(look(path)?.lock);
    const fd = create(path, mine);
    if (fd !== undefined) return held(path, fd, use, onLost);
    const seen = look(path);
    if (seen === undefined) continue; // removed meanwhile: try again
    let holder = seen.lock;
    if (gone(seen.lock, seen.ageMs) !== undefined) {
      o.onTakeOver?.('stale');
      const took = takeOver(path, seen, mine, () => o.onTakeOver?.('marked'));
      if (typeof took === 'number') return held(path, took, use, onLost);
      if (took === 'changed') continue; // another start took it first: its lock is looked at
      holder = took.by.lock; // another start is taking it over now: as if it held it
    }
    // A holder that runs here is not waited for: it holds the folder until it stops.
    if (Date.now() >= deadline || (holder !== undefined && onThisMachine(holder))) throw use.inUse(holder);
    await new Promise((r) => setTimeout(r, TIMINGS.dataLockPollMs));
  }
}

/** A take-over marker's maker while it may run, by the rules a lock's holder is judged by. */
function markerMaker(text: string | undefined, ageMs: number): { lock: Lock | undefined } | undefined {
  const lock = text === undefined ? undefined : parse(text);
  return gone(lock, ageMs) === undefined ? { lock } : undefined;
}

/**
 * Replaces the stale lock `seen` with this start's (written aside, then swapped in: file-takeover.ts):
 * the open lock file once done, 'changed' when another start replaced it first, or that start's lock
 * while it is replacing it now.
 */
function takeOver(path: string, seen: SeenFile, mine: Lock, onMarked: () => void): number | 'changed' | { by: { lock: Lock | undefined } } {
  const text = `${JSON.stringify(mine)}\n`;
  const fresh = `${path}.new-${mine.owner}`;
  const fd = openSync(fresh, 'wx', 0o600);
  let took: ReturnType<typeof takeOverFileAs<{ lock: Lock | undefined }>> = 'changed';
  try {
    writeWholeSync(fd, Buffer.from(text), fresh);
    took = takeOverFileAs(path, seen, fresh, { text, running: markerMaker }, onMarked);
    if (took === 'taken') syncDirSync(dirname(path));
  } catch (err) {
    // Swapped in but not made durable: removed again, as create() does.
    if (took === 'taken') rmSync(path, { force: true });
    took = 'changed';
    throw err;
  } finally {
    if (took !== 'taken') {
      closeSync(fd);
      rmSync(fresh, { force: true });
    }
  }
  return took === 'taken' ? fd : took;
}

function create(path: string, lock: Lock): number | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
    // The system's refusal as it is (a read-only or full disk, a permission): a start reports it as
    // SERVICE_START_FAILED with its code and path (shared/service.ts), as for every other folder.
    throw err;
  }
  try {
    writeWholeSync(fd, Buffer.from(`${JSON.stringify(lock)}\n`), path);
    syncDirSync(dirname(path));
  } catch (err) {
    closeSync(fd);
    rmSync(path, { force: true });
    throw err;
  }
  return fd;
}

function held(path: string, fd: number, use: LockUse, onLost: (err: FieldStreamError) => void): ProcessLock {
  // What starts killed mid-take-over left beside the lock (a lock written aside, a marker).
  sweepBesideAs(path, (text, ageMs) => markerMaker(text, ageMs) === undefined);
  let lost = false;
  // Ours while the lock's name is our file: a start taking it over puts its own in its place.
  const stillOurs = () => {
    const ours = fstatSync(fd);
    const named = statSync(path, { throwIfNoEntry: false });
    return named !== undefined && named.ino === ours.ino && named.dev === ours.dev;
  };
  const renew = setInterval(() => {
    try {
      if (stillOurs()) {
        const now = new Date();
        futimesSync(fd, now, now);
        return;
      }
    } catch {
      return; // the disk failing: the holder's writes say so; the lock is looked at again at the next renewal
    }
    lost = true;
    clearInterval(renew);
    heldHere.delete(path);
    onLost(use.lost());
  }, TIMINGS.dataLockRenewMs);
  renew.unref();
  heldHere.add(path);
  let released = false;
  return {
    release() {
      // Once: the holder releases it at its close, and npm start where its start failed.
      if (released) return;
      released = true;
      clearInterval(renew);
      heldHere.delete(path);
      try {
        if (!lost && stillOurs()) unlinkSync(path);
      } catch {
        /* gone already */
      }
      closeSync(fd);
    },
  };
}

/** The lock at `path`, what it says of its holder and how long since it was renewed. */
function look(path: string): (SeenFile & { lock: Lock | undefined; ageMs: number }) | undefined {
  const seen = lookAt(path);
  return seen === undefined ? undefined : { ...seen, lock: parse(seen.text), ageMs: Date.now() - seen.mtimeMs };
}

function parse(text: string): Lock | undefined {
  try {
    const parsed = LockSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined; // torn (a holder killed while it wrote it): nobody's, once it lapses
  }
}

function onThisMachine(lock: Lock): boolean {
  const boot = bootId();
  return lock.host === hostname() && boot !== undefined && lock.bootId === boot;
}

/** Why the lock's holder is gone (its lock to be taken over), or undefined while it may run. */
function gone(lock: Lock | undefined, ageMs: number): string | undefined {
  if (ageMs >= TIMINGS.dataLockExpiryMs) return 'not renewed';
  if (lock === undefined) return undefined;
  const boot = bootId();
  if (lock.host === hostname() && boot !== undefined && lock.bootId !== undefined && lock.bootId !== boot) return 'the machine restarted';
  if (!onThisMachine(lock)) return undefined;
  // This process's id, and not one of its own locks (heldHere): a process before it of that id (a
  // container started again: pid 1 each time), gone.
  if (lock.pid === process.pid) return 'its process id is this one';
  return processRuns(lock.pid) ? undefined : 'its process runs no more';
}

