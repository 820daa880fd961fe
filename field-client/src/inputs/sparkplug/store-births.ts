import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { LIMITS } from '../../../../shared/limits.ts';
import { MIN_METRIC_BYTES } from './definitions.ts';
import { key } from './host.ts';
import { BirthsFileSchema, BirthsHeadSchema, MetricEntrySchema, MetricsShapeSchema, type BirthsHead, type MetricEntry } from './store-format.ts';

/**
 * The births files of the session store (store.ts) as store-read.ts reads them back at start: a
 * file's bytes read into one buffer reused, its first line alone when only its record is wanted
 * (headOf), its births read one at a time (openBirths), each checked with zod and against what the
 * definitions held may take before any is built. Throws (or, headOf, gives undefined) for a file
 * that is no births file the store wrote; store-read.ts decides what is dropped.
 */

/**
 * The bytes of the files read, one at a time, in one buffer (the largest file's so far): a Buffer of
 * each is garbage once read, its memory returned only when V8 next collects its old generation (14 MiB
 * of them were held at the end of a read-back at the bound).
 */
export class FileBytes {
  private buf = Buffer.alloc(0);

  /** The bytes of `file`, a regular file (no link followed, no FIFO waited on); valid until the next read. */
  read(file: string): Buffer {
    const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new Error('not a regular file');
      if (st.size > LIMITS.sparkplugDefinitionsMaxBytes) throw new Error(`${st.size} bytes, past what the definitions held may take`);
      if (st.size > this.buf.length) this.buf = Buffer.allocUnsafe(st.size);
      let n = 0;
      for (let r = 1; n < st.size && r > 0; n += r) r = readSync(fd, this.buf, n, st.size - n, n);
      return this.buf.subarray(0, n);
    } finally {
      closeSync(fd);
    }
  }
}

/** A births file opened: what its first line holds, and its births, read one at a time in file order. */
export interface Births extends Omit<BirthsHead, 'v'> {
  format: 1 | 2;
  /** the next birth's metrics (zod): each session's node, then its devices */
  next(): MetricEntry[];
  /** throws if anything is left after the last birth */
  end(): void;
}

/**
 * Opens a births file: v2 (store.ts birthsPieces) a line at a time, only the line of the birth read
 * held in the heap beside the file's bytes; v1, written before it, parsed whole (JSON.parse) as
 * before, its births then read one at a time, each released once read.
 */
export function openBirths(buf: Buffer): Births {
  let at = buf.indexOf(0x0a);
  let head: unknown;
  try {
    head = JSON.parse(buf.toString('utf8', 0, at < 0 ? buf.length : at));
  } catch {
    head = undefined; // a v1 document over several lines, or damage: read whole below
  }
  if ((head as { v?: unknown } | undefined)?.v === 2) {
    const h = BirthsHeadSchema.safeParse(head);
    if (!h.success) throw new Error(`not a births file: ${issueOf(h.error.issues[0])}`);
    let births = 0;
    let metrics = 0;
    return {
      ...h.data,
      format: 2,
      next() {
        if (at < 0 || at + 1 >= buf.length) throw new Error(`not a births file: ${births} births, fewer than its sessions declare`);
        const from = at + 1;
        at = buf.indexOf(0x0a, from);
        const line: unknown = JSON.parse(buf.toString('utf8', from, at < 0 ? buf.length : at));
        const out = metricsOf(line, `birth ${births++}`);
        metrics += out.length;
        // Counted as read: a file the field client wrote declares no more than the definitions held may take.
        if (metrics * MIN_METRIC_BYTES > LIMITS.sparkplugDefinitionsMaxBytes) throw new Error(`${metrics} metrics, more than the definitions held may have`);
        return out;
      },
      end() {
        if (at >= 0 && at + 1 < buf.length) throw new Error(`not a births file: more than its ${births} births`);
      },
    };
  }
  // The first line taken only when it is the whole file: a v1 document followed by more lines is
  // no file the store wrote, and is refused, as JSON.parse of the whole refused it before v2.
  let raw: unknown = head !== undefined && at < 0 ? head : JSON.parse(buf.toString('utf8'));
  // Its metrics counted before any is read: a birth held takes MIN_METRIC_BYTES a metric at least,
  // so a file the field client wrote declares no more than the definitions held may take.
  const metrics = metricsIn(raw);
  if (metrics * MIN_METRIC_BYTES > LIMITS.sparkplugDefinitionsMaxBytes) throw new Error(`${metrics} metrics, more than the definitions held may have`);
  const parsed = BirthsFileSchema.safeParse(raw);
  raw = undefined;
  if (!parsed.success) throw new Error(`not a births file: ${issueOf(parsed.error.issues[0])}`);
  const { v: _v, sessions, ...rest } = parsed.data;
  const pending: unknown[][] = [];
  for (const s of sessions) pending.push(s.node, ...s.devices.map((d) => d[1]));
  let births = 0;
  return {
    ...rest,
    format: 1,
    sessions: sessions.map((s) => ({ id: s.id, bdSeq: s.bdSeq, bornAt: s.bornAt, birthDigest: s.birthDigest, devices: s.devices.map((d) => d[0]) })),
    next() {
      const m = pending[births];
      pending[births] = []; // released once read
      return metricsOf(m, `birth ${births++}`);
    },
    end() {},
  };
}

/** bytes. A v2 births file's first line is read in pieces from this size, doubling. */
const HEAD_FIRST_BYTES = 16 * 1024;
/**
 * bytes. The longest first line looked for: its record (a few KiB) and each session's device names
 * (LIMITS.sparkplugMaxDevicesPerNode of at most 256 characters, JSON-escaped).
 */
const HEAD_MAX_BYTES = 16 * 1024 * 1024;
const V2_START = Buffer.from('{"v":2,');
const HeadRecordSchema = BirthsHeadSchema.pick({ v: true, gen: true, group: true, edge: true, record: true });

/**
 * The gen, edge node and record of a v2 births file, from its first line only (read in pieces, the
 * rest of the file not read); undefined for anything else (a v1 file, damage: store-read.ts readBirths decides).
 */
export function headOf(file: string, fileOf: (k: string) => string): Pick<BirthsHead, 'gen' | 'group' | 'edge' | 'record'> | undefined {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return undefined;
    const max = Math.min(st.size, HEAD_MAX_BYTES);
    let buf = Buffer.allocUnsafe(Math.min(max, HEAD_FIRST_BYTES));
    for (let n = 0; n < max; ) {
      if (n === buf.length) {
        const more = Buffer.allocUnsafe(Math.min(max, 2 * buf.length));
        buf.copy(more, 0, 0, n);
        buf = more;
      }
      const r = readSync(fd, buf, n, buf.length - n, n);
      if (r <= 0) return undefined;
      // As birthsPieces starts it (JSON.stringify keeps the keys' order): a v1 file is not read on.
      if (n === 0 && !buf.subarray(0, Math.min(r, V2_START.length)).equals(V2_START.subarray(0, Math.min(r, V2_START.length)))) return undefined;
      const nl = buf.subarray(0, n + r).indexOf(0x0a, n);
      n += r;
      if (nl < 0) continue;
      const h = HeadRecordSchema.safeParse(JSON.parse(buf.toString('utf8', 0, nl)));
      // Another edge node's (damage): store-read.ts readBirths refuses it.
      return h.success && fileOf(key(h.data.group, h.data.edge)) === file ? h.data : undefined;
    }
    return undefined;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/**
 * One birth's metrics, read with zod an entry at a time: the array (MetricsShapeSchema), then each
 * entry (MetricEntrySchema), the entries taken as they are once zod found them valid (a tuple of strings,
 * numbers and nulls, no transform: zod's output would be a copy alike). Parsed as one array, zod's
 * copy of every entry of the birth was held while its definitions were built: 24 MiB more at the
 * peak of a read-back at the bound.
 */
function metricsOf(raw: unknown, where: string): MetricEntry[] {
  const list = MetricsShapeSchema.safeParse(raw);
  if (!list.success) throw new Error(`not a births file: ${where}: ${issueOf(list.error.issues[0])}`);
  for (let i = 0; i < list.data.length; i++) {
    const r = MetricEntrySchema.safeParse(list.data[i]);
    if (!r.success) throw new Error(`not a births file: ${where}: ${i}.${issueOf(r.error.issues[0])}`);
  }
  return list.data as MetricEntry[];
}

function issueOf(issue: { path: PropertyKey[]; message: string } | undefined): string {
  return issue ? `${issue.path.map(String).join('.')} ${issue.message}` : 'invalid';
}

/** The metrics a births file as JSON.parse read it declares (its node's and devices' in every session), whatever else it holds. */
function metricsIn(raw: unknown): number {
  const sessions = (raw as { sessions?: unknown } | null)?.sessions;
  if (!Array.isArray(sessions)) return 0;
  let n = 0;
  for (const s of sessions as unknown[]) {
    const { node, devices } = (s ?? {}) as { node?: unknown; devices?: unknown };
    if (Array.isArray(node)) n += node.length;
    if (Array.isArray(devices)) for (const d of devices as unknown[]) if (Array.isArray(d) && Array.isArray(d[1])) n += (d[1] as unknown[]).length;
  }
  return n;
}
