import type { BenchContext } from '../lib/context.ts';
import { sleep } from '../lib/context.ts';
import { deviceInput, startDeviceProcess } from '../lib/device-process.ts';
import type { LatencyResult } from '../lib/results.ts';
import { percentile } from '../lib/percentile.ts';
import { tally } from '../lib/tally.ts';

/** milliseconds between the paced clients' submissions */
const TICK_MS = 100;
/** milliseconds between probe readings */
const PROBE_EVERY_MS = 50;
/** milliseconds between looks into the database (part of every figure) */
const POLL_EVERY_MS = 10;
/** milliseconds after which a probe not seen is no longer looked for (the run then fails) */
const GIVE_UP_MS = 30_000;
/** milliseconds the load's clients get, once it stops, to let go of every reading at its commit receipt */
const DRAIN_MS = 60_000;
/** milliseconds the load's count may stay short once the clients hold nothing (as in throughput.ts) */
const RECEIPTED_GRACE_MS = 5_000;

/**
 * Device → database latency under a steady load: paced clients send `readingsPerSecond` in all
 * (each a burst every 100 ms, the devices out of step),
 * and a probe device, a process of its own (device-process.ts), sends one reading every 50 ms whose
 * arrival in the database is watched. The time runs from the probe's submission (its durable queue
 * included) to the poll that finds it. The load's readings are counted too, device by device, once
 * its clients hold none: lost and duplicated are theirs (a probe not seen fails the run).
 */
export async function latencyAtLoad(ctx: BenchContext, o: { readingsPerSecond: number; seconds: number }): Promise<LatencyResult> {
  const paced = await Promise.all(Array.from({ length: ctx.clients }, (_, i) => ctx.fieldClient(`paced-${i}`, 500)));
  const probe = await startDeviceProcess(deviceInput(ctx, 'probe-0', { kind: 'probe', everyMs: PROBE_EVERY_MS, pollEveryMs: POLL_EVERY_MS, giveUpMs: GIVE_UP_MS }));
  const perTick = Math.max(1, Math.round(((o.readingsPerSecond / 1000) * TICK_MS) / ctx.clients));
  let stop = false;
  /** readings each paced client submitted */
  const sentBy = paced.map(() => 0);
  // Each paced device keeps its own clock, started at its own offset in the tick: field devices are
  // not synchronised, and a load where all of them burst at once would measure that, not the pipeline.
  const load = Promise.all(
    paced.map(async (c, i) => {
      await sleep((i * TICK_MS) / paced.length);
      for (let k = 0; !stop; k += perTick) {
        const t = Date.now();
        await c.client.submitMany(Array.from({ length: perTick }, (_, j) => ({ dataType: 'timeseries' as const, payload: { v: k + j, timestamp: 1780000000000 + i * 10_000_000 + k + j } })));
        sentBy[i] = k + perTick;
        await sleep(Math.max(0, TICK_MS - (Date.now() - t)));
      }
    }),
  );
  await sleep(o.seconds * 1000);
  stop = true;
  const [{ sentAt, seenAt }] = await Promise.all([probe.stop(), load]);
  // Until each client has let go of every reading at its commit receipt: closed earlier, what its
  // durable queue still held would never be sent, and could not be counted.
  const drainDeadline = Date.now() + DRAIN_MS;
  while (paced.some((c) => c.client.unacknowledged > 0)) {
    if (Date.now() > drainDeadline) throw new Error(`latency: ${paced.reduce((n, c) => n + c.client.unacknowledged, 0)} readings of the load still held by its clients ${DRAIN_MS / 1000} s after it stopped`);
    await sleep(50);
  }
  for (const c of paced) await c.close();
  const sent = Object.fromEntries(sentBy.map((n, i) => [`paced-${i}`, n]));
  let counted = tally(sent, await ctx.influxStore.countByDevice('paced'));
  for (const until = Date.now() + RECEIPTED_GRACE_MS; counted.lost > 0 && Date.now() < until; ) {
    await sleep(100);
    counted = tally(sent, await ctx.influxStore.countByDevice('paced'));
  }
  if (counted.off) process.stderr.write(`latency: the load's readings stored, device by device, where not as sent: ${counted.off}\n`);
  const lat = sentAt.filter((t) => seenAt.has(t)).map((t) => (seenAt.get(t) as number) - t).sort((a, b) => a - b);
  if (lat.length !== sentAt.length) throw new Error(`latency: ${sentAt.length - lat.length} probes never arrived`);
  const q = (f: number) => percentile(lat, f) as number;
  return {
    scenario: `latency at half load (${o.readingsPerSecond.toLocaleString('en')} readings/s)`,
    clients: ctx.clients + 1,
    readings: lat.length,
    p50Ms: q(0.5),
    p95Ms: q(0.95),
    p99Ms: q(0.99),
    maxMs: lat[lat.length - 1] as number,
    loadReadings: counted.readings,
    lost: counted.lost,
    duplicated: counted.duplicated,
  };
}
