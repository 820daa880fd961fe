import { randomUUID } from 'node:crypto';
import { closeSync, fstatSync, openSync, renameSync, rmSync, statSync, utimesSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { withDirLock } from '../../shared/dir-lock.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { makeDirDurablySync, readRegularFileSync } from '../../shared/durable-fs.ts';

/**
 * Which part of DISTRIBUTOR_STATE_DIR this distributor owns.
 *
 * Replicas started with `docker-compose --scale distributor=N` share one bind-mounted folder, yet
 * each must keep state of its own: its replay journal is written by one process only (another
 * compacting it would delete the files it appends to), and the list of its earlier broker sessions
 * would make another replica take over sessions that are live. So each claims a slot: slot 1 is the
 * folder itself (a single distributor's layout is unchanged), slot N > 1 is DIR/instances/N. A
 * slot is held by its `lease.json` (who holds it), whose modification time is renewed every
 * TIMINGS.stateLeaseRenewMs; a lease not renewed for TIMINGS.stateLeaseExpiryMs was left by a
 * process that is gone. A distributor takes, in order: the slot whose lease names its own client id
 * (itself before a restart), else the lowest slot that is free (never claimed, released at a clean
 * stop, or expired), with what it holds: a recreated container carries on with its predecessor's
 * replay windows and retires its sessions. Claims are serialised by creating DIR/.claiming (mkdir
 * is atomic on every local file system and on NFS).
 *
 * Fencing. A lease that expires does not stop its holder: one paused past the expiry (SIGSTOP, a
 * long GC, a frozen VM) or whose slot a wall-clock jump made look expired goes on where it was once
 * it runs again, and its renewal sees the loss only up to TIMINGS.stateLeaseRenewMs later. Meanwhile
 * it would journal and acknowledge messages the new holder, which loaded the slot's windows when it
 * took it, never learns of: a copy of each then passes the replay check. So the holder keeps its
 * lease file open, and assertHeld() (called after each journal append, before the message is
 * acknowledged, and around each snapshot's rename: replay-store.ts) asks the kernel whether that
 * file still has its name: a claim renames a new lease.json over it, a release removes it, either
 * leaves ours with no link (fstat's st_nlink 0), and an inode held open is never reused, so no later
 * lease can pass for ours. One fstat, no path lookup: a microsecond on the hot path. It is sound on
 * a local file system: an append the check found still under our lease happened before the taker's
 * rename, so before the taker read the journal, and the taker has it; an append after it fails the
 * check and is not acknowledged. Across hosts on NFS the attribute cache may answer for a while
 * with the old link count, and only the renewal's check of the owner remains.
 */
const LeaseSchema = z.object({ owner: z.string(), clientId: z.string(), host: z.string(), pid: z.number(), claimedAt: z.string() });
type Lease = z.infer<typeof LeaseSchema>;

export interface StateLease {
  /** the folder this distributor keeps its state in */
  readonly dir: string;
  readonly slot: number;
  /**
   * Throws DISTRIBUTOR_STATE_LEASE once another distributor has taken the slot over (see Fencing
   * above): call after writing the slot's state and before acting on it. The first such finding
   * also calls `onLost`.
   */
  assertHeld(): void;
  /**
   * The client ids of the distributors holding the folder's other slots now (leases renewed within
   * TIMINGS.stateLeaseExpiryMs): their broker sessions are live, whatever this slot's list of
   * earlier sessions names (session-retirement.ts).
   */
  othersLive(): string[];
  /** The other slots free now (no lease, or one not renewed for TIMINGS.stateLeaseExpiryMs). */
  freeSlots(): number[];
  /**
   * `fn` with the folder of slot `slot`, under the lock claims take, if that slot is free still: no
   * distributor claims it meanwhile. undefined when it is held.
   */
  whileFree<T>(slot: number, fn: (dir: string) => T): T | undefined;
  /** `fn` with the folder of slot `slot` under the lock claims take, held or not. */
  whileLocked<T>(slot: number, fn: (dir: string) => T): T;
  /** Stops renewing and frees the slot for the next distributor. */
  release(): void;
}

/** Slot `slot`'s folder of `root`; the dead-letter replay reads each slot's admitted event tag values (event-tags.ts). */
export function slotDir(root: string, slot: number): string {
  return slot === 1 ? root : join(root, 'instances', String(slot));
}

/**
 * A slot's lease as its file says: undefined when there is none (free); `unreadable` when the file
 * is there but could not be looked at (EIO, EMFILE, ESTALE on NFS ...). Such a lease is nobody's
 * known and is not free (ageMs 0): until 2026-12-08 an error of any kind read as "free", so a
 * distributor that could not read its own lease for one renewal (out of descriptors, a storage
 * hiccup) took itself for taken over and stopped, and a replica that could not read another's for
 * the grace period took its live broker sessions over.
 */
function readLease(path: string): { lease: Lease | undefined; ageMs: number; unreadable?: unknown } | undefined {
  const unreadable = (err: unknown) => ({ lease: undefined, ageMs: 0, unreadable: err });
  let mtimeMs: number;
  try {
    mtimeMs = statSync(path).mtimeMs;
  } catch (err) {
    return isGone(err) ? undefined : unreadable(err);
  }
  let lease: Lease | undefined;
  try {
    // A regular file only: a FIFO put in its place hung every look at the slot.
    const parsed = LeaseSchema.safeParse(JSON.parse(readRegularFileSync(path, 'utf8')));
    if (parsed.success) lease = parsed.data;
  } catch (err) {
    if (!(err instanceof SyntaxError)) return isGone(err) ? undefined : unreadable(err);
    /* damaged: nobody's, free once it expires */
  }
  return { lease, ageMs: Date.now() - mtimeMs };
}

/** The lease file is not there (removed, or its folder is): the slot is free. */
function isGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** Free: never claimed, released at a clean stop, or not renewed for TIMINGS.stateLeaseExpiryMs. */
function isFree(held: ReturnType<typeof readLease>): boolean {
  return !held || held.ageMs > TIMINGS.stateLeaseExpiryMs;
}

/**
 * Who holds slot `slot` of `root` now, or undefined when it is free (isFree). A lease that cannot be
 * read is not known to be free (`unreadable`). For a restore (scripts/admin/restore.ts), which must
 * not write a slot's replay windows under the distributor that holds them in memory.
 */
export function slotHolder(root: string, slot: number): { path: string; host?: string; pid?: number; ageMs: number; unreadable?: unknown } | undefined {
  const path = join(slotDir(root, slot), 'lease.json');
  const held = readLease(path);
  if (!held || isFree(held)) return undefined;
  return { path, host: held.lease?.host, pid: held.lease?.pid, ageMs: held.ageMs, ...(held.unreadable !== undefined ? { unreadable: held.unreadable } : {}) };
}

/** Claims are serialised by DIR/.claiming (a claim takes milliseconds). */
function withClaimLock<T>(root: string, fn: () => T): T {
  const lock = join(root, '.claiming');
  const busy = () => new FieldStreamError('DISTRIBUTOR_STATE_LEASE', `${lock} stayed in place for ${TIMINGS.stateLeaseClaimWaitMs} ms: another distributor is claiming a slot of this folder.`);
  return withDirLock(lock, TIMINGS.stateLeaseClaimWaitMs, busy, fn);
}

/**
 * Claims a slot of `root` for `clientId` and keeps it renewed; `onLost` is called if another
 * process took it over (this one stalled past the expiry): its state must not be written any more.
 */
export function claimStateSlot(
  root: string,
  clientId: string,
  onLost: (err: FieldStreamError) => void,
  /** a renewal that could neither read nor touch the lease file (it is tried again at the next) */
  onUnreadable?: (path: string, err?: unknown) => void,
): StateLease {
  makeDirDurablySync(root);
  const owner = randomUUID();
  let held: number | undefined; // our lease file, open: see Fencing above
  const slot = withClaimLock(root, () => {
    const leases = Array.from({ length: LIMITS.distributorMaxInstances }, (_, i) => ({ slot: i + 1, held: readLease(join(slotDir(root, i + 1), 'lease.json')) }));
    const mine = leases.find((l) => l.held?.lease?.clientId === clientId);
    const free = leases.find((l) => isFree(l.held));
    const chosen = mine ?? free;
    if (!chosen) {
      throw new FieldStreamError('DISTRIBUTOR_STATE_LEASE', `All ${LIMITS.distributorMaxInstances} slots of ${root} are held by running distributors.`);
    }
    const dir = slotDir(root, chosen.slot);
    makeDirDurablySync(dir, 0o700);
    const lease: Lease = { owner, clientId, host: hostname(), pid: process.pid, claimedAt: new Date().toISOString() };
    const tmp = join(dir, `lease.json.tmp-${process.pid}`);
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, `${JSON.stringify(lease)}\n`);
      renameSync(tmp, join(dir, 'lease.json'));
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    held = fd;
    return chosen.slot;
  });
  const fd = held as number;
  const dir = slotDir(root, slot);
  const path = join(dir, 'lease.json');
  const ours = () => readLease(path)?.lease?.owner === owner;
  let lost: FieldStreamError | undefined;
  const lose = () => {
    if (lost) return lost;
    lost = new FieldStreamError('DISTRIBUTOR_STATE_LEASE', `Slot ${slot} of ${root} was taken over by another distributor while this one did not renew it; this one stops.`);
    clearInterval(timer);
    const err = lost;
    // Not from within the caller's write: onLost stops the distributor.
    setImmediate(() => onLost(err));
    return lost;
  };
  const timer = setInterval(() => {
    const held = readLease(path);
    // Not known either way (an I/O error): renewed at the next tick. Should the errors last, the
    // lease expires, another distributor takes the slot by renaming its lease over ours, and
    // assertHeld's fstat sees that before anything more is acknowledged.
    if (held?.unreadable !== undefined) return onUnreadable?.(path, held.unreadable);
    try {
      if (held?.lease?.owner === owner) {
        const now = new Date();
        utimesSync(path, now, now);
        return;
      }
    } catch (err) {
      if (!isGone(err)) return onUnreadable?.(path, err);
      /* removed between the look and the touch: not ours any more */
    }
    lose();
  }, TIMINGS.stateLeaseRenewMs);
  timer.unref();
  let released = false;
  return {
    dir,
    slot,
    assertHeld() {
      if (lost) throw lost;
      if (released) throw new FieldStreamError('DISTRIBUTOR_STATE_LEASE', `Slot ${slot} of ${root} was released; its state is not written any more.`);
      if (fstatSync(fd).nlink === 0) throw lose();
    },
    othersLive() {
      const ids: string[] = [];
      for (let i = 1; i <= LIMITS.distributorMaxInstances; i++) {
        if (i === slot) continue;
        const held = readLease(join(slotDir(root, i), 'lease.json'));
        if (held?.lease && held.ageMs <= TIMINGS.stateLeaseExpiryMs) ids.push(held.lease.clientId);
      }
      return ids;
    },
    freeSlots() {
      const free: number[] = [];
      for (let i = 1; i <= LIMITS.distributorMaxInstances; i++) {
        if (i !== slot && isFree(readLease(join(slotDir(root, i), 'lease.json')))) free.push(i);
      }
      return free;
    },
    whileFree(other, fn) {
      return withClaimLock(root, () => (isFree(readLease(join(slotDir(root, other), 'lease.json'))) ? fn(slotDir(root, other)) : undefined));
    },
    whileLocked(other, fn) {
      return withClaimLock(root, () => fn(slotDir(root, other)));
    },
    release() {
      if (released) return;
      released = true;
      clearInterval(timer);
      if (ours()) rmSync(path, { force: true });
      closeSync(fd);
    },
  };
}
