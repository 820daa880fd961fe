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

/** at least `target`: met, or missed by the share it fell short */
function atLeast(value: number, target: number): string {
  return value >= target ? 'met' : `missed by ${pct((target - value) / target)}`;
}

/** at most `target`: met, or missed by the share it went over */
function atMost(value: number, target: number): string {
  return value <= target ? 'met' : `missed by ${pct((value - target) / target)}`;
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

export function targetsTable(targets: readonly TargetVerdict[]): string[] {
  if (targets.length === 0) return ['(A quick run: its small load is not held to the targets.)'];
  return ['| target | measured | |', '|---|---|---|', ...targets.map((t) => `| ${t.target} | ${t.measured} | ${t.verdict} |`)];
}
