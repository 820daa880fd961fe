import type { BenchContext } from '../lib/context.ts';
import { sleep } from '../lib/context.ts';
import type { CpuMeter } from '../lib/proc-stats.ts';
import type { ThroughputResult } from '../lib/results.ts';
import type { ReadingStore } from '../lib/stores.ts';

export interface ThroughputOptions {
  name: string;
  /** device ids are PREFIX-0, PREFIX-1, ... */
  prefix: string;
  readingsPerClient: number;
  /** readings per frame at most (1: one reading per message) */
  batchMax: number;
  /** false: clients delete at the gateway's ack instead of the commit receipt (a reference only) */
  receipts?: boolean;
  /** where the readings are counted (the distributor must be writing there): InfluxDB unless said */
  store?: ReadingStore;
}

/** milliseconds the clients get, after the database holds everything, to receive the last receipts */
const RECEIPTS_DRAIN_MS = 60_000;
/**
 * milliseconds the count may stay short once every client has let go of every reading at its
 * commit receipt: the distributor sends a receipt only after the database answered the write, so
 * the count should be complete by then (the grace covers a count taken just before it was)
 */
const RECEIPTED_GRACE_MS = 5_000;

/** readings per submitMany call: what a device's local inputs would hand over at once */
const SUBMIT_CHUNK = 1000;

/**
 * Sustained end-to-end throughput: every client submits its readings as fast as its durable queue
 * takes them; the clock stops when the database holds all of them. Checked by counting.
 */
export async function throughput(ctx: BenchContext, meter: CpuMeter, o: ThroughputOptions): Promise<ThroughputResult> {
  const clients = await Promise.all(Array.from({ length: ctx.clients }, (_, i) => ctx.fieldClient(`${o.prefix}-${i}`, o.batchMax, o.receipts ?? true)));
  await sleep(500); // connected, welcomed
  const total = ctx.clients * o.readingsPerClient;
  const base = Date.parse('2026-01-01T00:00:00Z');
  const store = o.store ?? ctx.influxStore;
  const stored = () => store.count(o.prefix);
  const last = Array.from({ length: ctx.clients }, (_, i) => [`${o.prefix}-${i}`, base + i * 10_000_000 + o.readingsPerClient - 1] as const);
  const mark = await store.mark();
  meter.begin();
  const started = Date.now();
  await Promise.all(
    clients.map(async (c, i) => {
      for (let k = 0; k < o.readingsPerClient; k += SUBMIT_CHUNK) {
        const n = Math.min(SUBMIT_CHUNK, o.readingsPerClient - k);
        // Each reading its own timestamp: one point per reading in the database.
        await c.client.submitMany(Array.from({ length: n }, (_, j) => ({ dataType: 'timeseries' as const, payload: { v: k + j, timestamp: base + i * 10_000_000 + k + j } })));
      }
    }),
  );
  const accepted = Date.now();
  // The database is not counted while the pipeline is under load: counting a few hundred thousand
  // points costs InfluxDB about 100 ms of CPU (measured), taken from the pipeline being measured.
  // A cheap sign says when the last of them should be written (InfluxDB's own counter of the
  // points it accepted; PostgreSQL: each device's last reading, found by its key); then they are
  // counted (and again, should something else have been written too, such as a security event),
  // and the clock stops when the count is complete.
  const deadline = Date.now() + (ctx.quick ? 120_000 : 600_000);
  const overdue = (what: string) => {
    if (Date.now() > deadline) throw new Error(`${o.name}: ${what} of ${total} readings arrived`);
  };
  while (!(await store.arrived(mark, total, last))) {
    overdue(`not all (${store.name})`);
    await sleep(10);
  }
  let n = await stored();
  let letGoSince: number | undefined;
  while (n < total) {
    overdue(String(n));
    // With receipts a client lets a reading go only at its commit receipt: once none holds anything,
    // what the count lacks was receipted and is not there (lost, or a dead letter, which no round
    // should make). Said at once, device by device, rather than as a shortfall at the deadline.
    if ((o.receipts ?? true) && clients.every((c) => c.client.unacknowledged === 0)) {
      letGoSince ??= Date.now();
      if (Date.now() - letGoSince > RECEIPTED_GRACE_MS) {
        throw new Error(`${o.name}: ${total - n} readings were receipted (written, or kept as dead letters) but are not in ${store.name}: ${shortfalls(await store.countByDevice(o.prefix), last.map(([d]) => d), o.readingsPerClient) || 'no device short by its own count'}`);
      }
    } else letGoSince = undefined;
    await sleep(20);
    n = await stored();
  }
  const seconds = (Date.now() - started) / 1000;
  const cpu = meter.end();
  // End to end: every client let go of every reading, on a receipt (or its ack, for the reference).
  const drainDeadline = Date.now() + RECEIPTS_DRAIN_MS;
  while (clients.some((c) => c.client.unacknowledged > 0)) {
    if (Date.now() > drainDeadline) throw new Error(`${o.name}: ${clients.reduce((s, c) => s + c.client.unacknowledged, 0)} readings still held by the clients after the database had all`);
    await sleep(50);
  }
  for (const c of clients) await c.close();
  if (n !== total) throw new Error(`${o.name}: ${n} readings stored for ${total} sent`);
  // A count equal to what was sent, and values adding up to what was sent, mean each reading is
  // there once and none stands in for another.
  const sum = await store.sum(o.prefix);
  if (sum !== ctx.clients * ((o.readingsPerClient * (o.readingsPerClient - 1)) / 2)) throw new Error(`${o.name}: the stored values do not add up to those sent`);
  // Copies that reached the distributor twice (a resend after a lost ack): refused there by the
  // replay window, recorded as security events, never written.
  const redelivered = await store.redelivered(o.prefix);
  return {
    scenario: o.name,
    clients: ctx.clients,
    readings: total,
    seconds,
    readingsPerSecond: Math.round(total / seconds),
    acceptedInSeconds: (accepted - started) / 1000,
    lost: 0,
    duplicated: 0,
    redelivered,
    cpu,
  };
}

/** `device stored of expected` for each device short of what it sent, in the devices' order. */
export function shortfalls(stored: Readonly<Record<string, number>>, devices: readonly string[], expected: number): string {
  return devices
    .filter((d) => (stored[d] ?? 0) < expected)
    .map((d) => `${d} ${(stored[d] ?? 0).toLocaleString('en')} of ${expected.toLocaleString('en')}`)
    .join('; ');
}
