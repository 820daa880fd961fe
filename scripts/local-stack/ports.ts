import { randomUUID } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lookAt, sweepBeside, takeOverFile, writeWhole, type SeenFile } from '../../shared/file-takeover.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { identityRuns, thisProcess, type ProcessIdentity } from '../../shared/process-identity.ts';

/** Ports handed out by this process: never twice, though the first may not be listening yet. */
const handedOut = new Set<number>();

/**
 * Ports handed out by every process on this machine, one file per port naming the process that took
 * it: a port one process picked is free until its server binds it, and another process picking then
 * (two stacks started at once: npm test runs two end-to-end files side by side) would be handed it
 * too. A file whose process is gone is taken over; this process's files are removed as it exits.
 * The file says "PID START" (START: when that process started, /proc/PID/stat field 22): a process
 * killed leaves its files, and its id, given later to an unrelated process, kept naming a running
 * process, so the port was never handed out again.
 */
const RESERVATIONS_DIR = join(tmpdir(), 'fieldstream-ports');
const me = thisProcess();
const MINE = me.start === undefined ? String(me.pid) : `${me.pid} ${me.start}`;
process.once('exit', () => {
  for (const port of handedOut) {
    try {
      if (readFileSync(join(RESERVATIONS_DIR, String(port)), 'utf8') === MINE) unlinkSync(join(RESERVATIONS_DIR, String(port)));
    } catch {
      // not reserved by a file (the folder could not be made), or gone already
    }
  }
});

/** The process a reservation names, or undefined for a file being written (empty) or not ours. */
function holderOf(text: string): ProcessIdentity | undefined {
  // Written by this module only, in a folder every user may write to: nothing else is trusted.
  const m = /^([1-9]\d{0,9})(?: (\d{1,20}))?$/.exec(text);
  return m ? { pid: Number(m[1]), start: m[2] } : undefined;
}

/**
 * True when this process now holds the port's reservation (made, or taken over from a process
 * that is gone). Where reservations cannot be made at all (the folder is another user's), every
 * port counts as reserved: this process's own set still applies.
 */
export function reserve(port: number, onTakeOver?: () => void): boolean {
  const file = join(RESERVATIONS_DIR, String(port));
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      mkdirSync(RESERVATIONS_DIR, { recursive: true, mode: 0o1777 });
      const fd = openSync(file, 'wx', 0o644);
      writeSync(fd, MINE);
      closeSync(fd);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return true;
    }
    let seen: SeenFile | undefined;
    try {
      seen = lookAt(file);
    } catch {
      return false; // unreadable: another port is tried
    }
    if (seen === undefined) continue; // removed meanwhile: try again
    const holder = holderOf(seen.text);
    // An empty file is one being written: taken. One naming this process's id and another start
    // time was left by an earlier process of that id, gone.
    if (holder === undefined || (holder.pid === me.pid && holder.start === me.start) || identityRuns(holder)) return false;
    onTakeOver?.();
    return takeOver(file, seen);
  }
  return false;
}

/**
 * Replaces the stale reservation `seen` with this process's, unless another picker did meanwhile
 * (shared/file-takeover.ts): two picking one stale port at once both removed "it" by name, the
 * second the first one's fresh reservation, and both were handed the port.
 */
function takeOver(file: string, seen: SeenFile): boolean {
  const fresh = `${file}.new-${randomUUID()}`;
  try {
    writeWhole(fresh, MINE);
    const took = takeOverFile(file, seen, fresh);
    if (took === 'taken') sweepBeside(file, TIMINGS.takeOverDebrisMs);
    return took === 'taken';
  } catch {
    return false; // the folder refusing a write: another port is tried
  } finally {
    rmSync(fresh, { force: true });
  }
}

export function release(port: number): void {
  try {
    unlinkSync(join(RESERVATIONS_DIR, String(port)));
  } catch {
    // not there
  }
}
/** How many random ports are tried before falling back to one the OS picks. */
const PORT_ATTEMPTS = 100;

/**
 * The lowest port of the kernel's ephemeral range (net.ipv4.ip_local_port_range; 32768 by default).
 * An outgoing connection takes its source port from that range, so a port picked there can be
 * taken by some client's connection between the moment it was found free and the moment its
 * server binds it (seen: Caddy failing with "address already in use" while the stack started).
 */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 2048 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

function canBind(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

/**
 * A port free right now on every address (servers such as Caddy bind all of them), below the
 * ephemeral range so no outgoing connection takes it meanwhile, and never handed out twice, by
 * this process or by another one picking meanwhile (the reservations above). Falls back to one the OS picks.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const low = 1024 + Math.floor((ephemeralLow() - 1024) / 2);
  const high = ephemeralLow() - 1;
  for (let i = 0; i < PORT_ATTEMPTS; i++) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (handedOut.has(port) || !reserve(port)) continue;
    if ((await canBind(port, '0.0.0.0')) && (await canBind(port, host))) {
      handedOut.add(port);
      return port;
    }
    release(port);
  }
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Resolves once something accepts TCP connections on host:port. */
export async function waitForPort(port: number, host = '127.0.0.1', timeoutMs = 30_000, alive: () => boolean = () => true, netns?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await portInUse(port, host, netns)) return;
    if (!alive()) throw new Error(`the process exited before listening on ${host}:${port}`);
    if (Date.now() > deadline) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * True when something accepts TCP connections on host:port (default 127.0.0.1). With `netns`, the
 * connection is tried from inside that network namespace (Node cannot enter one itself: bash's
 * /dev/tcp under `ip netns exec`), since its loopback is not ours.
 */
export function portInUse(port: number, host = '127.0.0.1', netns?: string): Promise<boolean> {
  if (netns) {
    return new Promise((resolve) =>
      execFile('ip', ['netns', 'exec', netns, 'timeout', '2', 'bash', '-c', 'exec 3<>"/dev/tcp/$0/$1"', host, String(port)], (err) => resolve(!err)),
    );
  }
  return new Promise((resolve) => {
    const s = connect({ port, host });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
