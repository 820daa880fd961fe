import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DATA_TYPES as T, encodeWire } from '../field-client/src/inputs/sparkplug/proto.ts';
import { SparkplugSession } from '../field-client/src/inputs/sparkplug/session.ts';
import { SessionStore } from '../field-client/src/inputs/sparkplug/store.ts';
import { LIMITS } from '../shared/limits.ts';
import { createLogger } from '../shared/logger.ts';

/**
 * What reading the saved Sparkplug sessions back at start takes in memory (store.ts load): a store
 * filled past LIMITS.sparkplugDefinitionsMaxBytes through its own write path (births taken by a
 * SparkplugSession, saved after each append; see fill), read back in a fresh process of its own,
 * its resident set measured before the read (the modules imported) and its peak (VmHWM) after.
 *   npm run bench:sparkplug-store                               fills a store in a temporary folder, reads it back
 *   node --import tsx bench/sparkplug-store.ts fill DIR   fills DIR
 *   node --import tsx bench/sparkplug-store.ts run DIR    reads a copy of DIR back (again and again alike)
 * SPARKPLUG_PEAK_METRICS (2,000) metrics a birth, SPARKPLUG_PEAK_NAME (40) characters a name.
 * Not a test (a memory figure depends on the machine and V8): docs/field-client.md quotes it.
 */
const METRICS = Math.min(Number(process.env.SPARKPLUG_PEAK_METRICS ?? 2_000), Math.floor((3 * 1024 * 1024) / (Number(process.env.SPARKPLUG_PEAK_NAME ?? 40) + 20)));

function status(field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}
const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

async function fill(dir: string): Promise<void> {
  const q = { submitMany: async () => [] as never[] };
  const s = new SparkplugSession(q, () => undefined, createLogger('fill', 'silent'), [], { resends: true, store: new SessionStore(dir, createLogger('fill', 'silent')) });
  const now = Date.now();
  // SPARKPLUG_PEAK_NAME: the characters of each metric name (40 by default; 1,000 makes the file text
  // the bulk of what is read).
  const nameChars = Number(process.env.SPARKPLUG_PEAK_NAME ?? 40);
  const names = Array.from({ length: METRICS }, (_, j) => `S${j}/`.padEnd(nameChars, 'x'));
  const payload = (seq: number, at: number, bd: boolean) =>
    encodeWire({ timestamp: String(at), seq: String(seq), metrics: [...(bd ? [{ name: 'bdSeq', datatype: T.UInt64, longValue: String(at) }] : []), ...names.map((name, j) => ({ name, alias: String(j + 1), datatype: T.Double, doubleValue: j }))] });
  let at = now - 3_600_000;
  /** An NBIRTH and a DBIRTH of edge node `edge`; false: refused (no room). */
  const birth = async (edge: string): Promise<boolean> => {
    at += 10;
    await s.onMessage(`spBv1.0/Plant1/NBIRTH/${edge}`, payload(0, at, true), at, { connection: {}, dup: false });
    await s.onMessage(`spBv1.0/Plant1/DBIRTH/${edge}/Dev`, payload(1, at + 1, false), at + 1, { connection: {}, dup: false });
    return s.host.session('Plant1', edge)?.devices.has('Dev') === true;
  };
  // Edge nodes born 5 times each (4 previous sessions kept beside the current one) up to the cap;
  // then new edge nodes born once each until their births are refused: each drops the oldest
  // previous sessions from memory, while the births files of their edge nodes, not saved again,
  // keep them. So the store on disk holds more than the cap, as a field client running for a while does.
  let step = 0;
  for (let e = 0, full = false; !full; e++) {
    for (let b = 0; b < 5 && !full; b++) {
      const before = s.host.definitionsBytes;
      await birth(`Edge${e}`);
      step = Math.max(step, s.host.definitionsBytes - before);
      full = s.host.definitionsBytes + step > LIMITS.sparkplugDefinitionsMaxBytes;
    }
  }
  let added = 0;
  while (added < 1_000 && (await birth(`New${added}`))) added++;
  console.log(`${added} edge nodes born once after the cap; refused: ${JSON.stringify(s.stats.refusedByCode)}`);
  await new Promise((r) => setTimeout(r, 50));
  console.log(`filled: ${mib(s.host.definitionsBytes)} of definitions (estimated), cap ${mib(LIMITS.sparkplugDefinitionsMaxBytes)}`);
  s.stop();
}

function load(dir: string): void {
  const q = { submitMany: async () => [] as never[] };
  (globalThis as { gc?: () => void }).gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const base = status('VmRSS');
  const s = new SparkplugSession(q, () => undefined, createLogger('load', 'warn'), [], { resends: true, store: new SessionStore(dir, createLogger('load', 'warn')) });
  const peak = status('VmHWM');
  // What stays held (the definitions restored), once the garbage of reading is collected.
  (globalThis as { gc?: () => void }).gc?.();
  console.log(
    JSON.stringify({ definitionsBytes: s.host.definitionsBytes, rssBefore: base, rssAfter: status('VmRSS'), peakRss: peak, peakBeyondBaseline: peak - base, heapUsed: process.memoryUsage().heapUsed, heapBefore }),
  );
  s.stop();
}

const [mode, arg] = process.argv.slice(2);
if (mode === 'fill') await fill(arg as string);
else if (mode === 'load') load(arg as string);
else {
  if (mode !== undefined && mode !== 'run') throw new Error(`usage: [fill DIR | run DIR]`);
  const dir = arg ?? mkdtempSync(join(tmpdir(), 'sp-peak-'));
  try {
    if (!arg) execFileSync(process.execPath, ['--import', 'tsx', import.meta.filename, 'fill', dir], { stdio: 'inherit' });
    const files = readdirSync(dir);
    const bytes = files.reduce((n, f) => n + statSync(join(dir, f)).size, 0);
    console.log(`store: ${files.length} files, ${mib(bytes)} on disk`);
    // On a copy: load removes what it does not restore.
    const copy = `${dir}.load`;
    rmSync(copy, { recursive: true, force: true });
    cpSync(dir, copy, { recursive: true, preserveTimestamps: true });
    try {
      const out = JSON.parse(execFileSync(process.execPath, ['--expose-gc', '--import', 'tsx', import.meta.filename, 'load', copy], { encoding: 'utf8' }).trim().split('\n').find((l) => l.includes('"peakRss"')) as string) as Record<string, number>;
      console.log(
        `restored ${mib(out.definitionsBytes as number)} of definitions; RSS before load ${mib(out.rssBefore as number)}, peak ${mib(out.peakRss as number)} (${mib(out.peakBeyondBaseline as number)} beyond it), after ${mib(out.rssAfter as number)}; heap held ${mib(out.heapBefore as number)} before, ${mib(out.heapUsed as number)} after (collected)`,
      );
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  } finally {
    if (!arg) rmSync(dir, { recursive: true, force: true });
  }
}
