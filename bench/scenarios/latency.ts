import type { BenchContext } from '../lib/context.ts';
import { sleep } from '../lib/context.ts';
import type { LatencyResult } from '../lib/results.ts';

/** milliseconds between the paced clients' submissions */
const TICK_MS = 100;
/** milliseconds between probe readings */
const PROBE_EVERY_MS = 50;
/** milliseconds between looks into the database (part of every figure) */
const POLL_EVERY_MS = 10;

/**
 * Device → database latency under a steady load: paced clients send `readingsPerSecond` in all
 * (each a burst every 100 ms, the devices out of step),
 * and a probe device sends one reading every 50 ms whose arrival in the database is watched. The
 * time runs from the probe's submission (its durable queue included) to the poll that finds it.
 */
export async function latencyAtLoad(ctx: BenchContext, o: { readingsPerSecond: number; seconds: number }): Promise<LatencyResult> {
  const paced = await Promise.all(Array.from({ length: ctx.clients }, (_, i) => ctx.fieldClient(`paced-${i}`, 500)));
  const probe = await ctx.fieldClient('probe-0', 500);
  await sleep(500);
  const perTick = Math.max(1, Math.round(((o.readingsPerSecond / 1000) * TICK_MS) / ctx.clients));
  const sentAt = new Map<number, number>();
  const seenAt = new Map<number, number>();
  let stop = false;
  // Each paced device keeps its own clock, started at its own offset in the tick: field devices are
  // not synchronised, and a load where all of them burst at once would measure that, not the pipeline.
  const load = Promise.all(
    paced.map(async (c, i) => {
      await sleep((i * TICK_MS) / paced.length);
      for (let k = 0; !stop; k += perTick) {
        const t = Date.now();
        await c.client.submitMany(Array.from({ length: perTick }, (_, j) => ({ dataType: 'timeseries' as const, payload: { v: k + j, timestamp: 1780000000000 + i * 10_000_000 + k + j } })));
        await sleep(Math.max(0, TICK_MS - (Date.now() - t)));
      }
    }),
  );
  const probes = (async () => {
    for (let n = 0; !stop; n++) {
      const now = Date.now();
      sentAt.set(now, now);
      await probe.client.submit('timeseries', { probe: n, timestamp: now });
      await sleep(PROBE_EVERY_MS);
    }
  })();
  const poll = (async () => {
    let stoppedAt: number | undefined;
    while (!stop || seenAt.size < sentAt.size) {
      // From the oldest probe not seen yet: the distributor's consumers write in parallel, so a
      // probe may land after a later one (querying only past the latest seen would miss it).
      let oldest = Infinity;
      for (const t of sentAt.keys()) if (!seenAt.has(t) && t < oldest) oldest = t;
      if (oldest !== Infinity) {
        const rows = await ctx.influx.rows(ctx.database, `SELECT probe FROM readings WHERE device = 'probe-0' AND time >= ${oldest}ms`);
        const at = Date.now();
        for (const r of rows) if (!seenAt.has(r.time as number)) seenAt.set(r.time as number, at);
      }
      if (stop) stoppedAt ??= Date.now();
      if (stoppedAt !== undefined && Date.now() - stoppedAt > 30_000) break;
      await sleep(POLL_EVERY_MS);
    }
  })();
  await sleep(o.seconds * 1000);
  stop = true;
  await Promise.all([load, probes]);
  await poll;
  for (const c of [...paced, probe]) await c.close();
  const lat = [...sentAt.keys()].filter((t) => seenAt.has(t)).map((t) => (seenAt.get(t) as number) - t).sort((a, b) => a - b);
  if (lat.length !== sentAt.size) throw new Error(`latency: ${sentAt.size - lat.length} probes never arrived`);
  const q = (f: number) => lat[Math.min(lat.length - 1, Math.floor(f * lat.length))] as number;
  return {
    scenario: `latency at half load (${o.readingsPerSecond.toLocaleString('en')} readings/s)`,
    clients: ctx.clients + 1,
    readings: lat.length,
    p50Ms: q(0.5),
    p95Ms: q(0.95),
    p99Ms: q(0.99),
    maxMs: lat[lat.length - 1] as number,
    lost: 0,
    duplicated: 0,
  };
}
