import { accessSync, constants, existsSync, readdirSync, statfsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { ErrorCode } from '../../shared/errors.ts';
import type { FieldClientConfig } from './config.ts';
import type { CheckResult, Context } from './doctor-context.ts';
import { rejectedBytes } from './rejected.ts';

/**
 * What is set aside as refused (rejected.jsonl, rejected/): it counts against FIELD_QUEUE_MAX_BYTES
 * until the operator moves it off the device. `held`: refused messages the running client holds in
 * its queue for lack of room (undefined when its status was not asked for).
 */
function rejectedCheck(c: FieldClientConfig, bytes: number, held: number | undefined): CheckResult {
  const where = join(c.FIELD_DATA_DIR, 'rejected.jsonl');
  const share = `${bytes} bytes, ${((bytes / c.FIELD_QUEUE_MAX_BYTES) * 100).toFixed(1)}% of FIELD_QUEUE_MAX_BYTES`;
  const hint = `Look at ${where} and ${join(c.FIELD_DATA_DIR, 'rejected')}/ (the gateway's code says what is wrong), then move them off the device: the client takes the room back within a second, no restart.`;
  if (held !== undefined && held > 0) {
    return { name: 'set aside', level: 'fail', detail: `${held} refused messages wait in the queue for room to be set aside (FIELD_REJECTED_FULL); ${share} set aside`, hint };
  }
  if (bytes > 0) return { name: 'set aside', level: 'warn', detail: `refused messages set aside: ${share}`, hint };
  return { name: 'set aside', level: 'ok', detail: 'nothing refused by the gateway is set aside' };
}

/** The code of a FIELD_DATA_DIR the client cannot start on. */
const UNUSABLE: ErrorCode = 'FIELD_DATA_DIR_UNUSABLE';
const errno = (err: unknown) => (err as NodeJS.ErrnoException).code ?? (err as Error).message;
const UNUSABLE_HINT = 'FIELD_DATA_DIR must be a folder the client can read and write (or one it can make): fix the path or its owner and permissions; the client stops at its start on it.';

/**
 * Why the client cannot use FIELD_DATA_DIR (it makes it at its start, then reads and writes in it),
 * or undefined: a file in its place, or a folder this user cannot read, write or enter. A folder
 * not there yet is made by the client.
 */
function dataDirProblem(dir: string): string | undefined {
  let st;
  try {
    st = statSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return `FIELD_DATA_DIR=${dir} cannot be looked at: ${errno(err)}`;
  }
  if (!st.isDirectory()) return `FIELD_DATA_DIR=${dir} is not a folder`;
  try {
    accessSync(dir, constants.R_OK | constants.W_OK | constants.X_OK);
  } catch (err) {
    return `FIELD_DATA_DIR=${dir} cannot be read and written by this user: ${errno(err)}`;
  }
  return undefined;
}

/**
 * The bytes of the queue's files, or why they cannot be counted. A file that went away meanwhile
 * (the running client deletes a segment once sent) counts nothing; it is no failure.
 */
function queueBytesOf(queueDir: string): number | { problem: string } {
  let names: string[];
  try {
    names = readdirSync(queueDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    return { problem: `${queueDir} cannot be read: ${errno(err)}` };
  }
  let n = 0;
  for (const name of names) {
    try {
      n += statSync(join(queueDir, name)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return { problem: `${join(queueDir, name)} cannot be read: ${errno(err)}` };
    }
  }
  return n;
}

/** The device's own side, looked at even when the network steps fail: the queue, what is set aside, free disk. */
export async function queueAndDisk(ctx: Context): Promise<CheckResult[]> {
  const c = ctx.config as FieldClientConfig;
  const out: CheckResult[] = [];
  let status:
    | { deviceId?: string; connection?: { state: string }; queue?: { depth: number; oldestUnsentAt: string | null }; lastAckAt?: string | null; rejected?: { held: number } }
    | undefined;
  let statusAt = '';
  if (c.FIELD_HTTP_PORT !== undefined && c.FIELD_HTTP_PORT !== 0) {
    // An IPv6 address in brackets, as cli.ts writes it: bare, "http://::1:8081" is no URL, and a
    // client that ran and answered was reported as not answering.
    const host = c.FIELD_HTTP_HOST.includes(':') ? `[${c.FIELD_HTTP_HOST}]` : c.FIELD_HTTP_HOST;
    statusAt = `${host}:${c.FIELD_HTTP_PORT}`;
    status = await fetch(`http://${statusAt}/status`, { signal: AbortSignal.timeout(3000) })
      .then((r) => r.json() as Promise<typeof status>)
      .catch(() => undefined);
  }
  const queueDir = join(c.FIELD_DATA_DIR, 'queue');
  const dirProblem = dataDirProblem(c.FIELD_DATA_DIR);
  const measured = queueBytesOf(queueDir);
  const queueBytes = typeof measured === 'number' ? measured : 0;
  const setAside = rejectedBytes(c.FIELD_DATA_DIR);
  // The folder unusable, its queue cannot be either: one failure says why, and no free space is
  // measured for a folder the client cannot write to.
  const queueProblem = dirProblem ?? (typeof measured === 'number' ? undefined : measured.problem);
  // Another device's client on that port (npm start's simulated device answers on 8081): its queue
  // and connection are not this device's, nor is what it holds for lack of room.
  const otherDevice = status?.deviceId !== undefined && status.deviceId !== c.DEVICE_ID ? status.deviceId : undefined;
  if (otherDevice !== undefined) status = undefined;
  if (queueProblem !== undefined) {
    out.push({ name: 'queue', level: 'fail', detail: `${UNUSABLE}: ${queueProblem}`, hint: UNUSABLE_HINT });
  } else if (otherDevice !== undefined) {
    out.push({
      name: 'queue',
      level: 'warn',
      detail: `${queueBytes} bytes queued in ${queueDir}; the client answering at ${statusAt} is device ${otherDevice}, not ${c.DEVICE_ID}: its status is not this device's`,
      hint: `Set FIELD_HTTP_PORT (and FIELD_HTTP_HOST) to where this device's client listens, or FIELD_HTTP_PORT=off.`,
    });
  } else if (status?.queue) {
    const old = status.queue.oldestUnsentAt ? ` — oldest unsent from ${status.queue.oldestUnsentAt}` : '';
    out.push({
      name: 'queue',
      level: status.queue.depth > 0 && status.connection?.state !== 'connected' ? 'warn' : 'ok',
      detail: `client ${status.connection?.state}, ${status.queue.depth} messages queued (${queueBytes} bytes)${old}; last ack ${status.lastAckAt ?? 'never'}`,
    });
  } else {
    const why =
      c.FIELD_HTTP_PORT === undefined
        ? 'FIELD_HTTP_PORT=off: no client status asked for'
        : c.FIELD_HTTP_PORT === 0
          ? 'FIELD_HTTP_PORT=0: the client picks its port at its start, so no client status asked for'
          : "the client's status endpoint is not answering: is it running?";
    out.push({ name: 'queue', level: 'ok', detail: `${queueBytes} bytes queued in ${queueDir} (${why})` });
  }
  out.push(rejectedCheck(c, setAside, status?.rejected?.held));
  if (dirProblem !== undefined) return out;
  try {
    const fs = statfsSync(nearestExisting(c.FIELD_DATA_DIR));
    const free = fs.bavail * fs.bsize;
    // What is set aside counts against the same cap, so the queue may grow only into the rest.
    const room = c.FIELD_QUEUE_MAX_BYTES - queueBytes - setAside;
    const mib = (n: number) => `${Math.round(n / 1048576)} MiB`;
    if (free < 64 * 1048576) out.push({ name: 'disk', level: 'fail', detail: `${mib(free)} free in ${c.FIELD_DATA_DIR}`, hint: 'Free disk space: readings cannot be queued.' });
    else if (free < room) out.push({ name: 'disk', level: 'warn', detail: `${mib(free)} free, less than the queue may still grow (${mib(room)})`, hint: 'Lower FIELD_QUEUE_MAX_BYTES or free space.' });
    else out.push({ name: 'disk', level: 'ok', detail: `${mib(free)} free in ${c.FIELD_DATA_DIR}` });
  } catch (err) {
    out.push({ name: 'disk', level: 'warn', detail: `cannot measure free space: ${(err as Error).message}` });
  }
  return out;
}

/**
 * The folder itself, or the nearest folder above it that exists: where the client will make it, so
 * the file system its queue will fill. Measured as "/" before, a data folder not made yet on a disk
 * of its own (an SD card's /var, a /data mount) was judged by the root file system's free space.
 */
function nearestExisting(path: string): string {
  let p = resolve(path);
  while (!existsSync(p) && dirname(p) !== p) p = dirname(p);
  return p;
}
