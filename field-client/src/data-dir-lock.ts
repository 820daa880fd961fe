import { randomUUID } from 'node:crypto';
import { closeSync, fstatSync, futimesSync, openSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { processRuns, syncDirSync, writeWholeSync } from '../../shared/durable-fs.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { lookAt, sweepBesideAs, takeOverFileAs, type SeenFile } from '../../shared/file-takeover.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { bootId } from '../../shared/process-identity.ts';

/** The lock's file in FIELD_DATA_DIR, and what it says of its holder (read back with this schema). */
export const DATA_DIR_LOCK = 'field-client.lock';
const LockSchema = z.object({ owner: z.string(), pid: z.number().int().positive(), host: z.string(), bootId: z.string().optional(), startedAt: z.string() });
type Lock = z.infer<typeof LockSchema>;

/** The locks this process holds, by path: a lock naming this process's id is one of these, or left by an earlier process of that id. */
const heldHere = new Set<string>();

export interface DataDirLock {
  /** Stops renewing and removes the lock, if it is still this one's. */
  release(): void;
}

/**
 * FIELD_DATA_DIR for one field client at a time. Two on one folder (a second `npm start` with other
 * ports, the device's compose service and `npm run field-client` by hand) appended to one queue
 * and each deleted segments the other was still sending from: what the producers were answered
 * 202 for was lost, and the outbox's files sent twice or not at all. The second is refused with
 * FIELD_DATA_DIR_IN_USE, naming the first.
 *
 * The lock is FIELD_DATA_DIR/field-client.lock, made with O_EXCL, naming its holder, its mtime
 * renewed every TIMINGS.fieldDataLockRenewMs. A holder killed (SIGKILL, a power cut) leaves it
 * behind, so a lock is taken over when its holder is provably gone: on this machine in this boot
 * (same host name and boot id) a process id that runs no more, or that is this process's own (a
 * container started again has the same id, 1); a boot id that changed (the machine restarted);
 * or a lock not renewed for TIMINGS.fieldDataLockExpiryMs (a holder on another host, or in another
 * container, whose process ids say nothing here: the start waits that long at most). A holder that
 * was stalled past the expiry and whose lock was taken meanwhile finds at its next renewal that the
 * lock's name is no longer its file (replaced by the taker's), and `onLost` stops it.
 *
 * Taking over is a compare-and-swap (shared/file-takeover.ts): two starts may judge one stale lock at
 * the same instant, and one renaming it away by name renamed away the other's fresh lock, both then
 * holding the folder until the next renewal. Of two, one takes it; the other is refused, naming the
 * first. Its take-over marker names the taker as a lock does, judged by the same rules (a taker on
 * another host or in another container by its age). `onTakeOver` runs a second start in a test at the
 * instant this one acts ('stale': judged stale, nothing done yet; 'marked': the marker made, the lock
 * not replaced yet).
 */
export async function lockDataDir(dir: string, onLost: (err: FieldStreamError) => void, o: { onTakeOver?: (at: 'stale' | 'marked') => void } = {}): Promise<DataDirLock> {
  const path = resolve(dir, DATA_DIR_LOCK);
  const mine: Lock = { owner: randomUUID(), pid: process.pid, host: hostname(), bootId: bootId(), startedAt: new Date().toISOString() };
  const deadline = Date.now() + TIMINGS.fieldDataLockExpiryMs + TIMINGS.fieldDataLockRenewMs;
  for (;;) {
    // Two clients of one process (npm start's devices) on one folder: refused as any other.
    if (heldHere.has(path)) throw inUse(dir, look(path)?.lock);
    const fd = create(path, mine);
    if (fd !== undefined) return held(path, fd, onLost);
    const seen = look(path);
    if (seen === undefined) continue; // removed meanwhile: try again
    let holder = seen.lock;
    if (gone(seen.lock, seen.ageMs) !== undefined) {
      o.onTakeOver?.('stale');
      const took = takeOver(path, seen, mine, () => o.onTakeOver?.('marked'));
      if (typeof took === 'number') return held(path, took, onLost);
      if (took === 'changed') continue; // another start took it first: its lock is looked at
      holder = took.by.lock; // another start is taking it over now: as if it held it
    }
    // A holder that runs here is not waited for: it holds the folder until it stops.
    if (Date.now() >= deadline || (holder !== undefined && onThisMachine(holder))) throw inUse(dir, holder);
    await new Promise((r) => setTimeout(r, TIMINGS.fieldDataLockPollMs));
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

function held(path: string, fd: number, onLost: (err: FieldStreamError) => void): DataDirLock {
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
      return; // the disk failing: the queue says so; the lock is looked at again at the next renewal
    }
    lost = true;
    clearInterval(renew);
    heldHere.delete(path);
    onLost(new FieldStreamError('FIELD_DATA_DIR_IN_USE', `${path} was taken over by another field client while this one was stalled past ${TIMINGS.fieldDataLockExpiryMs} ms; this one stops.`, { path }));
  }, TIMINGS.fieldDataLockRenewMs);
  renew.unref();
  heldHere.add(path);
  let released = false;
  return {
    release() {
      // Once: the client releases it at its close, and npm start where its start failed.
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
  if (ageMs >= TIMINGS.fieldDataLockExpiryMs) return 'not renewed';
  if (lock === undefined) return undefined;
  const boot = bootId();
  if (lock.host === hostname() && boot !== undefined && lock.bootId !== undefined && lock.bootId !== boot) return 'the machine restarted';
  if (!onThisMachine(lock)) return undefined;
  // This process's id, and not one of its own locks (heldHere): a process before it of that id (a
  // container started again: pid 1 each time), gone.
  if (lock.pid === process.pid) return 'its process id is this one';
  return processRuns(lock.pid) ? undefined : 'its process runs no more';
}

function inUse(dir: string, lock: Lock | undefined): FieldStreamError {
  const who = lock ? `process ${lock.pid} on ${lock.host}, since ${lock.startedAt}` : 'a field client whose lock is being written';
  return new FieldStreamError(
    'FIELD_DATA_DIR_IN_USE',
    `FIELD_DATA_DIR=${dir} is in use by another field client (${who}): two on one folder would delete what the other still sends. Stop it, or give this one a FIELD_DATA_DIR of its own.`,
    { path: join(dir, DATA_DIR_LOCK), ...(lock ? { pid: lock.pid, host: lock.host } : {}) },
  );
}
