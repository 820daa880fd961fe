/**
 * Benchmark of the field client's durable queue (npm run bench:queue):
 *   1. readings per second accepted into the queue with the default sync policy (fsync before the
 *      producer is answered, concurrent producers sharing fsyncs), one reading per call and in
 *      batches of 100; and with FIELD_QUEUE_SYNC=100 for comparison;
 *   2. resident memory while holding a backlog of --backlog-mib (default 1024 MiB), after reopening
 *      it (recovery scans every segment) and while draining it as the sender does.
 * Writes bench/results/field-queue.json and .md. `--quick` uses a 32 MiB backlog and short runs.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createLogger } from '../shared/logger.ts';
import { DurableQueue, type SyncPolicy } from '../field-client/src/queue/durable-queue.ts';

const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, 'backlog-mib': { type: 'string' }, dir: { type: 'string' } } });
const quick = values.quick;
const backlogMiB = Number(values['backlog-mib'] ?? (quick ? 32 : 1024));
const seconds = quick ? 2 : 10;
const root = values.dir ?? mkdtempSync(join(tmpdir(), 'fieldstream-bench-'));
const log = createLogger('bench', 'warn');
const mib = (n: number) => Math.round((n / 1048576) * 10) / 10;
const reading = (i: number) => ({ dataType: 'timeseries', payload: { temperature: 20 + (i % 100) / 10, humidity: 55.5, pressure: 1013.25, timestamp: 1760000000000 + i } });

async function acceptRate(name: string, sync: SyncPolicy, perCall: number, producers: number) {
  const dir = join(root, name);
  const q = await DurableQueue.open({ dir, maxBytes: 8 * 1024 ** 3, segmentBytes: 16 * 1024 * 1024, fullPolicy: 'reject', sync, log });
  let accepted = 0;
  const end = Date.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: producers }, async () => {
      let i = 0;
      while (Date.now() < end) {
        const items = Array.from({ length: perCall }, () => reading(i++));
        await q.append(items);
        accepted += perCall;
      }
    }),
  );
  await q.close();
  rmSync(dir, { recursive: true, force: true });
  return { scenario: name, sync: sync.mode === 'always' ? 'always (default)' : `every ${sync.ms} ms`, perCall, producers, readingsPerSecond: Math.round(accepted / seconds) };
}

async function backlog() {
  const dir = join(root, 'backlog');
  const opts = { dir, maxBytes: (backlogMiB + 64) * 1048576, segmentBytes: 16 * 1024 * 1024, fullPolicy: 'reject' as const, sync: { mode: 'always' as const }, log };
  let q = await DurableQueue.open(opts);
  const started = Date.now();
  let n = 0;
  while (q.bytesOnDisk < backlogMiB * 1048576) {
    await q.append(Array.from({ length: 1000 }, () => reading(n++)));
  }
  const fillSeconds = (Date.now() - started) / 1000;
  const rssFilled = process.memoryUsage().rss;
  await q.close();
  global.gc?.();
  const t0 = Date.now();
  q = await DurableQueue.open(opts);
  const reopenSeconds = (Date.now() - t0) / 1000;
  const rssReopened = process.memoryUsage().rss;
  let peak = rssReopened;
  let drained = 0;
  for (;;) {
    const batch = q.next(500);
    if (batch.length === 0) break;
    q.ack(batch.map((m) => m.seq));
    drained += batch.length;
    if (drained % 100_000 < 500) peak = Math.max(peak, process.memoryUsage().rss);
  }
  await q.close();
  rmSync(dir, { recursive: true, force: true });
  return { backlogMiB, readings: n, fillSeconds, reopenSeconds, rssAfterFillMiB: mib(rssFilled), rssAfterReopenMiB: mib(rssReopened), peakRssWhileDrainingMiB: mib(peak), drained };
}

mkdirSync(root, { recursive: true });
const rates = [
  await acceptRate('one reading per call, 64 producers', { mode: 'always' }, 1, 64),
  await acceptRate('batches of 100, 8 producers', { mode: 'always' }, 100, 8),
  await acceptRate('one reading per call, 64 producers, sync 100 ms', { mode: 'interval', ms: 100 }, 1, 64),
];
const mem = await backlog();
if (!values.dir) rmSync(root, { recursive: true, force: true });

const result = { when: new Date().toISOString(), node: process.version, quick, rates, backlog: mem };
const md = [
  '| scenario | sync | readings/s accepted |',
  '|---|---|---|',
  ...rates.map((r) => `| ${r.scenario} | ${r.sync} | ${r.readingsPerSecond.toLocaleString('en')} |`),
  '',
  `| backlog | readings | fill | reopen (recovery scan) | RSS after fill | RSS after reopen | peak RSS while draining |`,
  '|---|---|---|---|---|---|---|',
  `| ${mem.backlogMiB} MiB | ${mem.readings.toLocaleString('en')} | ${mem.fillSeconds.toFixed(1)} s | ${mem.reopenSeconds.toFixed(1)} s | ${mem.rssAfterFillMiB} MiB | ${mem.rssAfterReopenMiB} MiB | ${mem.peakRssWhileDrainingMiB} MiB |`,
].join('\n');
const out = join(import.meta.dirname, 'results');
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'field-queue.json'), JSON.stringify(result, null, 2) + '\n');
writeFileSync(join(out, 'field-queue.md'), md + '\n');
process.stdout.write(md + '\n');
if (mem.drained !== mem.readings) {
  process.stderr.write(`drained ${mem.drained} of ${mem.readings} readings\n`);
  process.exit(1);
}
