import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import type { BenchContext } from '../lib/context.ts';
import { sleep } from '../lib/context.ts';
import { deviceInput, startDeviceProcess } from '../lib/device-process.ts';
import { serverWrites, SLOW_WRITE_MS, slowestWrite } from '../lib/influx-access-log.ts';
import { percentile } from '../lib/percentile.ts';
import { tally } from '../lib/tally.ts';
import { heapOf, memoryOf, type ServiceHeap, type ServiceMemory } from '../lib/memory-figures.ts';
import { hostCpuShare, hostCpuTicks, processCpuSeconds, residentMemory, type ResidentMemory } from '../lib/proc-stats.ts';
import { EVENT_LOOP_DELAY_BUCKETS_S, probeEventLoop } from '../../shared/metrics/event-loop.ts';
import { parseExposition, sumOf, type Sample } from '../../shared/metrics/exposition.ts';
import { METRIC_PREFIX } from '../../shared/metrics/registry.ts';

export interface SustainedOptions {
  /** readings/s offered in all (80 % of the batched maximum) */
  readingsPerSecond: number;
  /** the batched maximum it was derived from, for the report */
  maximumPerSecond: number;
  minutes: number;
  /** every service's process, whose resident memory is read */
  services: () => Record<string, number | undefined>;
  /** the Node services' /metrics base URLs, whose V8 heap in use is read every window */
  metricsOf?: () => Record<string, string | undefined>;
  /** where the simulated devices stand (DEVICE_PLACEMENTS) */
  devices: DevicePlacement;
}

/**
 * Where the simulated devices stand beside the services (--long-devices). Each stands for a machine
 * of its own, with its own CPU and storage, that here shares the two cores and the disk:
 * - `shared` (the default, and every run before this option): the devices as the services, their
 *   durable queues in the run's folder, on the disk the databases, brokers and journals write to
 *   (nine devices' queues wrote 8 MiB/s to it, InfluxDB 0.75 MiB/s).
 * - `apart`: the load devices at a lower CPU priority (nice DEVICE_NICE) and every device's queue
 *   in memory-backed storage (DEVICE_STORAGE). The probe device keeps the services' priority: its
 *   own scheduling is not part of the latency it measures. It tells whether slow windows come from
 *   the devices sharing the disk and the cores (docs/performance-sustained.md, "What the disk is not").
 */
export const DEVICE_PLACEMENTS = ['apart', 'shared'] as const;
export type DevicePlacement = (typeof DEVICE_PLACEMENTS)[number];
/** the load devices' nice(1) increment when apart: the services first, the devices with what is left */
const DEVICE_NICE = 10;
/** memory-backed storage for the devices' queues when apart */
const DEVICE_STORAGE = '/dev/shm';

export interface SustainedWindow {
  /** seconds from the start of the load to the window's end */
  endS: number;
  /** points the database accepted in the window, per second */
  storedPerSecond: number;
  /**
   * readings the paced devices submitted in the window, per second: the offered rate unless their
   * process fell behind (a device that misses its tick does not make it up)
   */
  offeredPerSecond: number;
  /** device → database of the probes sent in the window */
  probes: number;
  p99Ms: number;
  /**
   * what InfluxDB's storage engine finished in the window (differences of its own counters); and,
   * from its HTTP access log, the slowest write request that began in the window and how many took
   * over SLOW_WRITE_MS (the server's own time: absent when the log has no write at all)
   */
  influx: { cacheSnapshots: number; compactions: number; compactionMs: number; gcPauseMs: number; slowestWriteMs?: number; slowWrites?: number };
  /** the machine's CPU in the window, in % of all its cores' time: busy, stolen by the hypervisor, idle waiting for the disk */
  host: { busyPercent: number; stealPercent: number; iowaitPercent: number };
  /**
   * each process's CPU in the window (% of one core); each Node process's garbage collection (ms,
   * from its /metrics) and the longest its event loop was held, as the largest bucket bound of
   * `event_loop_delay_seconds` (ms) a tick was later than (0: none later than the first, 5 ms);
   * and the slowest request the service waited on in the window, read the same way from its
   * histogram: the gateway's publishes to their PUBACK, the distributor's database requests
   */
  processes: Record<string, ProcessWindow>;
}

export interface ProcessWindow {
  cpuPercent: number;
  gcMs?: number;
  heldOverMs?: number;
  /** ms: the largest bucket bound of the service's request histogram (REQUEST_SECONDS) a request in the window took longer than */
  requestOverMs?: number;
}

export interface SustainedResult {
  scenario: string;
  devices: DevicePlacement;
  maximumPerSecond: number;
  offeredPerSecond: number;
  minutes: number;
  /** when the load's first window began (ISO 8601): window N spans N × 10 s from it, for setting other traces beside them */
  startedAt: string;
  warmUpSeconds: number;
  /** readings the devices submitted, the probe's included (`probes` of them) */
  readings: number;
  probes: number;
  /** readings a device submitted that the database does not hold, counted device by device */
  lost: number;
  duplicated: number;
  /** readings still in the devices' queues when they stopped (lib/device-process.ts DeviceResult.held): part of `lost` if never stored */
  heldByDevices: number;
  /** the database's shards the readings went into: one, unless the load crossed a shard group's end */
  shards: number;
  windows: SustainedWindow[];
  memory: ServiceMemory[];
  heap: ServiceHeap[];
}

const HEAP_IN_USE = `${METRIC_PREFIX}nodejs_heap_size_used_bytes`;
/** cumulative, so a window's share is a difference (any other scraper leaves it alone) */
const GC_SECONDS = `${METRIC_PREFIX}nodejs_gc_duration_seconds_sum`;
/** cumulative too (shared/metrics/event-loop.ts), where nodejs_eventloop_lag_* restart at each scrape (the console's, every 2 s) */
const LOOP_DELAY_BUCKET = `${METRIC_PREFIX}event_loop_delay_seconds_bucket`;
/**
 * The request each service waits on, whose slowest in a window says which hop held the readings:
 * the gateway's publish of an envelope to its PUBACK (the DMZ broker), and the distributor's
 * request to the database.
 */
export const REQUEST_SECONDS: Record<string, string> = {
  gateway: `${METRIC_PREFIX}gateway_publish_seconds_bucket`,
  distributor: `${METRIC_PREFIX}distributor_write_seconds_bucket`,
};
/** the simulated field clients: this process */
const BENCH_PROCESS = 'benchmark (its own process)';
/** the simulated devices, each a process of its own: their CPU in all */
const DEVICES = 'simulated devices (a process each)';

/** seconds per window */
const WINDOW_S = 10;
/** milliseconds between the paced clients' submissions */
const TICK_MS = 100;
/** milliseconds between probe readings */
const PROBE_EVERY_MS = 50;
/** milliseconds between looks into the database for the probes */
const POLL_EVERY_MS = 10;
/** milliseconds after which a probe is no longer looked for (it then counts as over every bound) */
const PROBE_GIVE_UP_MS = 30_000;

/**
 * The batched load held at a steady rate for minutes (npm run bench -- --long): paced clients (each
 * a burst every 100 ms, out of step) offer `readingsPerSecond` in all, and a probe device (a process
 * of its own) sends a reading every 50 ms whose arrival in the database is watched, as the latency
 * scenario does. Per
 * 10 s window: the points the database accepted (its own counter, cheap to read under load) and
 * the probes' p99, and every service's resident memory: a leak shows as growth after the warm-up,
 * a stall (InfluxDB compacting) as a window that sags.
 * Checked by counting at the end: every reading stored once.
 */
export async function sustained(ctx: BenchContext, o: SustainedOptions): Promise<SustainedResult> {
  const ids = [...Array.from({ length: ctx.clients }, (_, i) => `long-${i}`), 'longprobe-0'];
  const perTick = Math.max(1, Math.round(((o.readingsPerSecond / 1000) * TICK_MS) / ctx.clients));
  const apart = o.devices === 'apart' ? mkdtempSync(join(DEVICE_STORAGE, 'fieldstream-bench-devices-')) : undefined;
  const removeApart = () => apart !== undefined && rmSync(apart, { recursive: true, force: true });
  // Also when the run fails; a run killed outright leaves it behind, as it leaves its own folder.
  process.once('exit', removeApart);
  const input = (id: string, mode: Parameters<typeof deviceInput>[2]) => {
    const i = deviceInput(ctx, id, mode);
    return apart === undefined ? i : { ...i, settings: { ...i.settings, FIELD_DATA_DIR: join(apart, id) } };
  };
  // Each device a process of its own, out of step with the others. Their timestamps start now, as
  // field devices' do, so every reading lands in the database's current shard, whose cache fills,
  // is written out and compacted while the load runs; one reading a millisecond apart on each
  // device (its series), so each is a point of its own and the data's clock runs ahead of the
  // wall clock (an hour in 10 minutes at 6,000 readings/s a device).
  const timestampBase = Date.now();
  const paced = await Promise.all(
    ids.slice(0, -1).map((id, i) =>
      startDeviceProcess(input(id, { kind: 'paced', perTick, tickMs: TICK_MS, offsetMs: (i * TICK_MS) / ctx.clients, timestampBase }), { nice: apart === undefined ? 0 : DEVICE_NICE }),
    ),
  );
  const probe = await startDeviceProcess(input('longprobe-0', { kind: 'probe', everyMs: PROBE_EVERY_MS, pollEveryMs: POLL_EVERY_MS, giveUpMs: PROBE_GIVE_UP_MS }));
  const devicePids = () => [...paced, probe].flatMap((d) => (d.pid === undefined ? [] : [d.pid]));
  /** `read` of every process of the stack still running, by name */
  const perService = <T>(read: (pid: number) => T, out = new Map<string, T>()) => {
    for (const [name, pid] of Object.entries(o.services())) {
      if (pid === undefined) continue;
      try {
        out.set(name, read(pid));
      } catch {
        /* gone */
      }
    }
    return out;
  };
  const memorySamples = new Map<string, { atS: number; m: ResidentMemory }[]>();
  const sampleMemory = (atS: number) => {
    for (const [name, m] of perService(residentMemory)) memorySamples.set(name, [...(memorySamples.get(name) ?? []), { atS, m }]);
  };
  const durationMs = o.minutes * 60_000;
  const warmUpMs = Math.min(60_000, durationMs / 2);
  /** readings the paced devices submitted so far (each reports after every tick) */
  const submitted = () => sum(paced.map((d) => d.submitted));
  const windows: SustainedWindow[] = [];
  const start = Date.now();
  sampleMemory(0);
  const heapSamples = new Map<string, { atS: number; bytes: number }[]>();
  /** each Node service's garbage collection so far, in seconds, and its event-loop delay buckets, as last read */
  const gcSeconds = new Map<string, number>();
  const loopBuckets = new Map<string, Map<number, number>>();
  const requestBuckets = new Map<string, Map<number, number>>();
  /** Reads each Node service's heap in use (kept), GC time, event-loop delay and slowest request; returns those since the last read. */
  const sampleHeaps = async (atS: number): Promise<Map<string, Omit<ProcessWindow, 'cpuPercent'>>> => {
    const since = new Map<string, Omit<ProcessWindow, 'cpuPercent'>>();
    await Promise.all(
      Object.entries(o.metricsOf?.() ?? {}).map(async ([name, base]) => {
        if (base === undefined) return;
        try {
          const samples = parseExposition(await (await fetch(`${base}/metrics`)).text());
          const bytes = sumOf(samples, HEAP_IN_USE);
          if (bytes !== undefined) heapSamples.set(name, [...(heapSamples.get(name) ?? []), { atS, bytes }]);
          const out: Omit<ProcessWindow, 'cpuPercent'> = {};
          const gc = sumOf(samples, GC_SECONDS);
          const before = gcSeconds.get(name);
          if (gc !== undefined && before !== undefined) out.gcMs = Math.round((gc - before) * 10_000) / 10;
          if (gc !== undefined) gcSeconds.set(name, gc);
          const buckets = bucketsOf(samples, LOOP_DELAY_BUCKET);
          const earlier = loopBuckets.get(name);
          if (buckets.size > 0 && earlier) out.heldOverMs = heldOverMs(earlier, buckets);
          if (buckets.size > 0) loopBuckets.set(name, buckets);
          const request = Object.entries(REQUEST_SECONDS).find(([prefix]) => name.startsWith(prefix))?.[1];
          const requests = request ? bucketsOf(samples, request) : new Map<number, number>();
          const requestsBefore = requestBuckets.get(name);
          if (requests.size > 0 && requestsBefore) out.requestOverMs = heldOverMs(requestsBefore, requests);
          if (requests.size > 0) requestBuckets.set(name, requests);
          since.set(name, out);
        } catch {
          /* a scrape missed: one sample fewer */
        }
      }),
    );
    return since;
  };
  // This process's own loop (the windows' readings): measured the same way, here.
  let benchLoopMaxS = 0;
  const stopBenchProbe = probeEventLoop({ observe: (s) => (benchLoopMaxS = Math.max(benchLoopMaxS, s)) });
  let benchGcMs = 0;
  const gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) benchGcMs += e.duration;
  });
  gcObserver.observe({ entryTypes: ['gc'] });
  /** CPU seconds so far of every process of the stack, of the simulated devices' and of this one */
  const cpuSeconds = () => {
    const self = process.cpuUsage();
    let devices = 0;
    for (const pid of devicePids()) {
      try {
        devices += processCpuSeconds(pid);
      } catch {
        /* gone */
      }
    }
    return perService(processCpuSeconds, new Map([[BENCH_PROCESS, (self.user + self.system) / 1e6], [DEVICES, devices]]));
  };
  // Windows: the database's own counters (accepted points; snapshots, compactions and GC pauses,
  // to tell whether a slow window is the database's doing), read every 10 s.
  let mark = await ctx.influx.activity();
  let hostMark = hostCpuTicks();
  let cpuMark = cpuSeconds();
  let offeredMark = submitted(); // the devices began at their own start, a little before the windows
  await sampleHeaps(0);
  for (let w = 1; w * WINDOW_S * 1000 <= durationMs; w++) {
    await sleep(start + w * WINDOW_S * 1000 - Date.now());
    const now = await ctx.influx.activity();
    const hostNow = hostCpuTicks();
    const host = hostCpuShare(hostMark, hostNow);
    hostMark = hostNow;
    const cpuNow = cpuSeconds();
    const processes: SustainedWindow['processes'] = {};
    for (const [name, seconds] of cpuNow) {
      const before = cpuMark.get(name);
      if (before !== undefined) processes[name] = { cpuPercent: Math.round(((seconds - before) / WINDOW_S) * 100) };
    }
    cpuMark = cpuNow;
    windows.push({
      endS: w * WINDOW_S,
      storedPerSecond: Math.round((now.pointsWritten - mark.pointsWritten) / WINDOW_S),
      offeredPerSecond: Math.round((submitted() - offeredMark) / WINDOW_S),
      probes: 0,
      p99Ms: 0,
      influx: {
        cacheSnapshots: now.cacheSnapshots - mark.cacheSnapshots,
        compactions: now.compactions - mark.compactions,
        compactionMs: Math.round(now.compactionMs - mark.compactionMs),
        gcPauseMs: Math.round((now.gcPauseMs - mark.gcPauseMs) * 10) / 10,
      },
      host,
      processes,
    });
    mark = now;
    offeredMark = submitted();
    sampleMemory(w * WINDOW_S);
    for (const [name, since] of await sampleHeaps(w * WINDOW_S)) {
      const p = processes[name];
      if (p) Object.assign(p, since);
    }
    const self = processes[BENCH_PROCESS];
    if (self) Object.assign(self, { heldOverMs: bucketFloorMs(benchLoopMaxS), gcMs: Math.round(benchGcMs * 10) / 10 });
    benchLoopMaxS = 0;
    benchGcMs = 0;
  }
  stopBenchProbe();
  gcObserver.disconnect();
  const [probeResult, ...loads] = await Promise.all([probe.stop(), ...paced.map((d) => d.stop())]);
  const { sentAt, seenAt: seen } = probeResult;
  removeApart();
  process.off('exit', removeApart);
  // Each window's probes: those sent in it; one never seen counts as slower than any bound.
  for (const w of windows) {
    const lat = sentAt
      .filter((t) => t - start < w.endS * 1000 && t - start >= (w.endS - WINDOW_S) * 1000)
      .map((t) => (seen.has(t) ? (seen.get(t) as number) - t : Infinity))
      .sort((a, b) => a - b);
    w.probes = lat.length;
    const p99 = percentile(lat, 0.99) ?? 0;
    w.p99Ms = Number.isFinite(p99) ? p99 : -1;
  }
  // The database's own time per write request (its access log, on in --long): whether a slow window's
  // wait was in the database or around it.
  const writes = serverWrites(existsSync(ctx.influx.logFile) ? readFileSync(ctx.influx.logFile, 'utf8') : '');
  if (writes.length > 0) {
    for (const w of windows) {
      const { slowestMs, over } = slowestWrite(writes, start + (w.endS - WINDOW_S) * 1000, start + w.endS * 1000, SLOW_WRITE_MS);
      w.influx.slowestWriteMs = slowestMs;
      w.influx.slowWrites = over;
    }
  }
  // Every device's readings counted device by device, the probe's included: a probe never stored
  // was a reading lost, whether or not it fell in a window's p99.
  const sent = Object.fromEntries([...loads, probeResult].map((r, i) => [ids[i] as string, r.submitted]));
  const heldByDevices = sum([...loads, probeResult].map((r) => r.held));
  const storedByDevice = async () => ({ ...(await ctx.influxStore.countByDevice('long')), ...(await ctx.influxStore.countByDevice('longprobe')) });
  const deadline = Date.now() + 600_000;
  let counted = tally(sent, await storedByDevice());
  // What the devices still held when they closed may never come: not waited for.
  while (counted.stored < counted.readings - heldByDevices && Date.now() < deadline) {
    await sleep(1_000);
    counted = tally(sent, await storedByDevice());
  }
  if (counted.off) process.stderr.write(`sustained: readings stored, device by device, where not as sent: ${counted.off}\n`);
  // The shards whose span holds the load's readings, from the first to the last the database has.
  const timeOf = async (selector: 'first' | 'last') => Number((await ctx.influx.rows(ctx.database, `SELECT ${selector}(v) FROM readings WHERE device =~ /^long-/`))[0]?.time);
  const [firstMs, lastMs] = [await timeOf('first'), await timeOf('last')];
  const shards = (await ctx.influx.shards(ctx.database)).filter((s) => s.startMs <= lastMs && s.endMs > firstMs).length;
  const memory = [...memorySamples.entries()].map(([service, samples]) => memoryOf(service, samples, warmUpMs / 1000, durationMs / 1000));
  const heap = [...heapSamples.entries()].map(([service, samples]) => heapOf(service, samples, warmUpMs / 1000, durationMs / 1000));
  return {
    scenario: `sustained: ${o.readingsPerSecond.toLocaleString('en')} readings/s batched for ${o.minutes} min, the devices ${o.devices === 'apart' ? 'apart (load devices at nice 10, queues in /dev/shm)' : 'sharing the services\' priority and disk'}`,
    devices: o.devices,
    maximumPerSecond: o.maximumPerSecond,
    offeredPerSecond: o.readingsPerSecond,
    minutes: o.minutes,
    startedAt: new Date(start).toISOString(),
    warmUpSeconds: warmUpMs / 1000,
    readings: counted.readings,
    probes: probeResult.submitted,
    lost: counted.lost,
    duplicated: counted.duplicated,
    heldByDevices,
    shards,
    windows,
    memory,
    heap,
  };
}

/** A histogram's buckets (`name`: its _bucket series): upper bound (s, +Inf included) → cumulative count. */
function bucketsOf(samples: readonly Sample[], name: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const x of samples) if (x.name === name && x.labels.le !== undefined) out.set(x.labels.le === '+Inf' ? Infinity : Number(x.labels.le), x.value);
  return out;
}

/**
 * The largest bucket bound (ms) that a tick between two reads of the cumulative buckets was later
 * than: the ticks above bound b are count(+Inf) − count(≤ b), and the largest b whose number grew
 * is the one. 0 when none was later than the smallest bound.
 */
export function heldOverMs(before: ReadonlyMap<number, number>, after: ReadonlyMap<number, number>): number {
  const above = (m: ReadonlyMap<number, number>, b: number) => (m.get(Infinity) ?? 0) - (m.get(b) ?? 0);
  let over = 0;
  for (const b of after.keys()) if (Number.isFinite(b) && above(after, b) > above(before, b)) over = Math.max(over, b);
  return Math.round(over * 1000);
}

/** The largest of the probe's bucket bounds (ms) below `seconds`: the same reading for this process. */
export function bucketFloorMs(seconds: number): number {
  let over = 0;
  for (const b of EVENT_LOOP_DELAY_BUCKETS_S) if (seconds > b) over = b;
  return Math.round(over * 1000);
}

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
