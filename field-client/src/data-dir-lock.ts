import { randomUUID } from 'node:crypto';
import { closeSync, fstatSync, futimesSync, openSync, readFileSync, renameSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { processRuns, syncDirSync, writeWholeSync } from '../../shared/durable-fs.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { bootId } from './queue/queue-epochs.ts';

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
 * lock's name is no longer its file (renamed away by the taker), and `onLost` stops it.
 */
export async function lockDataDir(dir: string, onLost: (err: FieldStreamError) => void): Promise<DataDirLock> {
  const path = resolve(dir, DATA_DIR_LOCK);
  const mine: Lock = { owner: randomUUID(), pid: process.pid, host: hostname(), bootId: bootId(), startedAt: new Date().toISOString() };
  const deadline = Date.now() + TIMINGS.fieldDataLockExpiryMs + TIMINGS.fieldDataLockRenewMs;
  for (;;) {
    // Two clients of one process (npm start's devices) on one folder: refused as any other.
    if (heldHere.has(path)) throw inUse(dir, read(path)?.lock);
    const fd = create(path, mine);
    if (fd !== undefined) return held(path, fd, onLost);
    const seen = read(path);
    if (seen === undefined) continue; // removed meanwhile: try again
    const why = gone(seen.lock, seen.ageMs);
    if (why !== undefined) {
      // Renamed away first (atomic): of two starts taking over at once, one moves it, the other
      // finds it gone and tries again, to find the first one's lock.
      const aside = `${path}.stale-${mine.owner}`;
      try {
        renameSync(path, aside);
        rmSync(aside, { force: true });
      } catch {
        /* another start took it first */
      }
      continue;
    }
    // A holder that runs here is not waited for: it holds the folder until it stops.
    if (Date.now() >= deadline || (seen.lock !== undefined && onThisMachine(seen.lock))) throw inUse(dir, seen.lock);
    await new Promise((r) => setTimeout(r, TIMINGS.fieldDataLockPollMs));
  }
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
  let lost = false;
  // Ours while the lock's name is our file: a start taking it over renames it away first.
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

function read(path: string): { lock: Lock | undefined; ageMs: number } | undefined {
  let mtimeMs: number;
  let text: string;
  try {
    mtimeMs = statSync(path).mtimeMs;
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  let lock: Lock | undefined;
  try {
    const parsed = LockSchema.safeParse(JSON.parse(text));
    if (parsed.success) lock = parsed.data;
  } catch {
    /* torn (a holder killed while it wrote it): nobody's, once it lapses */
  }
  return { lock, ageMs: Date.now() - mtimeMs };
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
