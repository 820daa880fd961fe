import { fleetMs } from './load-reports.ts';
import type { ConnectionsResult } from '../scenarios/connections.ts';
import type { FleetResult } from '../scenarios/fleet.ts';
import type { ServiceMemory } from './memory-figures.ts';
import type { SustainedResult } from '../scenarios/sustained.ts';
import { DATABASE_CEILING } from '../scenarios/database-ceiling.ts';
import { NODE_RED_PEER } from '../scenarios/node-red-peer.ts';
import type { BenchReport, LatencyResult, ThroughputResult } from './results.ts';

/** One of the targets the benchmark is held to, and how this run measured against it. */
export interface TargetVerdict {
  target: string;
  measured: string;
  /** met, or missed by how much (a share of the target) */
  verdict: string;
}

const pct = (x: number) => `${Math.round(x * 100)} %`;
const n = (x: number) => Math.round(x).toLocaleString('en');
const times = (x: number) => `${x.toFixed(2)} ×`;

/** How far a target was missed, as a share of it: never "0 %", which would read as met. */
const shortBy = (x: number) => `missed by ${Math.round(x * 100) === 0 ? 'under 1 %' : pct(x)}`;

/** at least `target`: met, or missed by the share it fell short */
function atLeast(value: number, target: number): string {
  return value >= target ? 'met' : shortBy((target - value) / target);
}

/** at most `target`: met, or missed by the share it went over */
function atMost(value: number, target: number): string {
  return value <= target ? 'met' : shortBy((value - target) / target);
}

/**
 * The targets (on one 2-core machine with every component on it) and this run against them. A
 * quick run's small load says nothing about them: it gets none.
 */
export function evaluateTargets(report: Omit<BenchReport, 'targets'>): TargetVerdict[] {
  if (report.quick) return [];
  const throughput = (name: string) => report.results.find((r): r is ThroughputResult => r.scenario === name && 'readingsPerSecond' in r);
  const latency = report.results.find((r): r is LatencyResult => 'p99Ms' in r);
  const batched = throughput('batched');
  const noReceipts = throughput('batched, receipts off (reference)');
  const metricsOn = throughput('batched, metrics on, scraped every second');
  const metricsOff = throughput('batched, metrics off (reference)');
  const anomalyOn = throughput('batched, anomaly detection on');
  const anomalyOff = throughput('batched, anomaly detection off (reference)');
  const single = throughput('one reading per message');
  const out: TargetVerdict[] = [];
  if (batched) out.push({ target: '≥ 50,000 readings/s end to end, batched', measured: n(batched.readingsPerSecond), verdict: atLeast(batched.readingsPerSecond, 50_000) });
  if (batched && noReceipts) {
    const share = batched.readingsPerSecond / noReceipts.readingsPerSecond;
    out.push({ target: 'batched with commit receipts within 10 % of receipts off', measured: `${pct(share)} of ${n(noReceipts.readingsPerSecond)}`, verdict: atLeast(share, 0.9) });
  }
  if (metricsOn && metricsOff) {
    const share = metricsOn.readingsPerSecond / metricsOff.readingsPerSecond;
    out.push({ target: 'batched with metrics on (scraped every second) within 5 % of metrics off', measured: `${pct(share)} of ${n(metricsOff.readingsPerSecond)}`, verdict: atLeast(share, 0.95) });
  }
  if (anomalyOn && anomalyOff) {
    const share = anomalyOn.readingsPerSecond / anomalyOff.readingsPerSecond;
    out.push({ target: 'batched with anomaly detection on within 5 % of off', measured: `${pct(share)} of ${n(anomalyOff.readingsPerSecond)}`, verdict: atLeast(share, 0.95) });
  }
  if (single) out.push({ target: '≥ 10,000 messages/s, one reading per message', measured: n(single.readingsPerSecond), verdict: atLeast(single.readingsPerSecond, 10_000) });
  if (latency) out.push({ target: 'p99 device → database ≤ 200 ms at half load', measured: `${latency.p99Ms} ms`, verdict: atMost(latency.p99Ms, 200) });
  const c = report.connections;
  if (c) {
    const held = c.connections >= 10_000 ? atMost(c.gatewayRssMiB, 1024) : `missed: ${n(c.connections)} of 10,000 devices`;
    out.push({ target: '10,000 devices on one gateway, under 1 GiB resident', measured: `${n(c.connections)} in ${c.gatewayRssMiB} MiB`, verdict: held });
  }
  const r = report.references;
  const database = throughput(DATABASE_CEILING);
  const peer = throughput(NODE_RED_PEER);
  if (database) out.push({ target: 'batched ≥ 15 % of the database ceiling', measured: `${pct(r.batchedShareOfDatabase)} of ${n(database.readingsPerSecond)}`, verdict: atLeast(r.batchedShareOfDatabase, 0.15) });
  if (peer) {
    out.push({ target: 'batched ≥ 3 × the Node-RED peer', measured: `${times(r.batchedVsPeer)} the peer's ${n(peer.readingsPerSecond)}`, verdict: atLeast(r.batchedVsPeer, 3) });
    out.push({ target: 'one reading per message ≥ the Node-RED peer', measured: `${times(r.singleVsPeer)} the peer's ${n(peer.readingsPerSecond)}`, verdict: atLeast(r.singleVsPeer, 1) });
  }
  return out;
}

/** The field loads' targets of a full run (none for a quick one): the fleet's, and memory per connection. */
export function fieldLoadTargets(report: Omit<BenchReport, 'targets'>): TargetVerdict[] {
  if (report.quick) return [];
  return [...(report.fleet ? fleetTargets(report.fleet) : []), ...(report.connections ? [connectionMemoryTarget(report.connections)] : [])];
}

/** KiB of a gateway's resident memory per device connection, at 10,000 connections */
const GATEWAY_KIB_PER_CONNECTION = 40;

/** The per-connection memory target, on the connections scenario's 10,000 devices on one gateway. */
export function connectionMemoryTarget(c: ConnectionsResult): TargetVerdict {
  return {
    target: `≤ ${GATEWAY_KIB_PER_CONNECTION} KiB of gateway memory per connection, 10,000 connections`,
    measured: `${c.kibPerConnection} KiB (${n(c.connections)} connections)${c.bare ? `; a bare WSS server in Node, the same run: ${c.bare.kibPerConnection} KiB` : ''}`,
    verdict: c.connections >= 10_000 ? atMost(c.kibPerConnection, GATEWAY_KIB_PER_CONNECTION) : `not measured: ${n(c.connections)} of 10,000 connections`,
  };
}

/** The fleet's targets: 10,000 devices through Caddy, one reading a second each for 60 s. */
export function fleetTargets(f: FleetResult): TargetVerdict[] {
  const full = f.devices >= 10_000 && f.seconds >= 60;
  // The targets are for a reading per frame; a fleet sending several a frame is another load.
  const held = (verdict: string) =>
    f.readingsPerFrame > 1 ? `not held to it: ${f.readingsPerFrame} readings a frame` : full ? verdict : `not held to it: ${n(f.devices)} devices × ${f.seconds} s`;
  const gatewayKiB = Math.max(...f.edges.map((e) => e.gatewayKiBPerConnection));
  return [
    { target: 'fleet: 10,000 devices × 60 s through Caddy (10,000 messages/s), 0 lost', measured: `${n(f.lost)} lost of ${n(f.readings)}`, verdict: held(f.lost === 0 ? 'met' : `missed: ${n(f.lost)} lost`) },
    {
      target: 'fleet: p99 device → database ≤ 250 ms',
      measured: `${fleetMs(f.latency.p99Ms, f.latency.lateAfterMs)} (${n(f.latency.samples + f.latency.late)} readings watched, ${n(f.latency.late)} not seen within ${n(f.latency.lateAfterMs)} ms; ${f.acks === 'none' ? 'devices reading no acks' : 'every frame acked'})`,
      verdict: held(f.latency.p99Ms === null ? `missed: over ${n(f.latency.lateAfterMs)} ms` : atMost(f.latency.p99Ms, 250)),
    },
    { target: `fleet: ≤ ${GATEWAY_KIB_PER_CONNECTION} KiB of gateway memory per connection`, measured: `${gatewayKiB} KiB`, verdict: held(atMost(gatewayKiB, GATEWAY_KIB_PER_CONNECTION)) },
  ];
}

/** ms: the sustained load's bound on each 10 s window's p99 */
export const SUSTAINED_WINDOW_P99_MS = 500;

/** The sustained load's targets: memory flat after the first minute, p99 ≤ 500 ms in every window, no sag. */
export function sustainedTargets(s: SustainedResult): TargetVerdict[] {
  // The database apart: its cache and index grow with the points written until it compacts.
  // Judged on anonymous resident memory: what a process holds itself (ServiceMemory).
  const grew = [...s.memory].filter((m) => m.service !== 'InfluxDB').sort((a, b) => b.anon.growthPercent - a.anon.growthPercent)[0];
  const db = s.memory.find((m) => m.service === 'InfluxDB');
  const growth = (m: ServiceMemory) => `${m.service} ${m.anon.firstFloorMiB} → ${m.anon.secondFloorMiB} MiB (${m.anon.growthPercent} %; ${m.anon.slopeMiBPerMinute} MiB/min)`;
  const p99s = s.windows.map((w) => (w.p99Ms < 0 ? Infinity : w.p99Ms));
  const worstP99 = Math.max(0, ...p99s);
  // The first minute is the warm-up (the pipeline fills up): a sag is looked for after it.
  const after = s.windows.filter((w) => w.endS > s.warmUpSeconds);
  // Against what the devices submitted in that window: a window in which the benchmark's own
  // process fell behind and offered less is not the pipeline's sag.
  const share = (w: SustainedResult['windows'][number]) => w.storedPerSecond / Math.max(1, w.offeredPerSecond);
  const lowest = (after.length > 0 ? after : s.windows).reduce<SustainedResult['windows'][number] | undefined>((low, w) => (low === undefined || share(w) < share(low) ? w : low), undefined);
  const held = (verdict: string) => (s.minutes >= 10 ? verdict : `${verdict} (over ${s.minutes} min, not 10)`);
  return [
    { target: 'sustained: every reading stored once', measured: `${n(s.lost)} lost of ${n(s.readings)}`, verdict: s.lost === 0 && s.duplicated === 0 ? 'met' : `missed: ${n(s.lost)} lost, ${n(s.duplicated)} duplicated` },
    {
      target: 'sustained: every service\'s memory flat after warm-up (the floor of its anonymous resident memory rising ≤ 10 %)',
      measured: grew ? `most: ${growth(grew)}` : '—',
      verdict: held(atMost(grew?.anon.growthPercent ?? 0, 10)),
    },
    ...(db
      ? [{ target: 'sustained: the database\'s memory flat after warm-up (the floor of its anonymous resident memory rising ≤ 10 %)', measured: growth(db), verdict: held(atMost(db.anon.growthPercent, 10)) }]
      : []),
    { target: `sustained: p99 device → database ≤ ${SUSTAINED_WINDOW_P99_MS} ms in every 10 s window`, measured: Number.isFinite(worstP99) ? `worst window ${worstP99} ms` : 'a probe never arrived', verdict: held(atMost(worstP99, SUSTAINED_WINDOW_P99_MS)) },
    {
      target: 'sustained: no window after warm-up storing under 90 % of the readings offered in it',
      measured: lowest ? `lowest ${n(lowest.storedPerSecond)} of ${n(lowest.offeredPerSecond)}/s (${lowest.endS - 10}–${lowest.endS} s)` : '—',
      verdict: lowest ? held(atLeast(share(lowest), 0.9)) : 'no window',
    },
  ];
}

export function targetsTable(targets: readonly TargetVerdict[]): string[] {
  if (targets.length === 0) return ['(A quick run: its small load is not held to the targets.)'];
  return ['| target | measured | |', '|---|---|---|', ...targets.map((t) => `| ${t.target} | ${t.measured} | ${t.verdict} |`)];
}
