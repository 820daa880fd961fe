import type { ConnectionsResult } from '../scenarios/connections.ts';
import type { FleetResult } from '../scenarios/fleet.ts';
import type { ReferenceFigures } from '../scenarios/references.ts';
import type { CpuShare } from './proc-stats.ts';
import type { TargetVerdict } from './targets.ts';

/** Every counted scenario: how many readings (or probes, or files) and that none was lost or doubled. */
export interface CountedResult {
  scenario: string;
  clients: number;
  readings: number;
  lost: number;
  duplicated: number;
}

export interface ThroughputResult extends CountedResult {
  seconds: number;
  readingsPerSecond: number;
  /** seconds until the clients had every reading in their durable queues */
  acceptedInSeconds?: number;
  /** copies that reached the distributor twice, refused there by the replay window */
  redelivered?: number;
  /** CPU time of each process during the scenario */
  cpu?: CpuShare[];
}

/** `readings`: the probes timed; `lost` and `duplicated`: the load's readings, counted device by device */
export interface LatencyResult extends CountedResult {
  /** readings of the load sent beside the probes (absent in reports before they were counted) */
  loadReadings?: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface FilesResult extends CountedResult {
  seconds: number;
  mbPerSecond: number;
}

export type ScenarioResult = ThroughputResult | LatencyResult | FilesResult;

export interface BenchReport {
  when: string;
  /** 10,000 devices through Caddy, one reading a second each (a small fleet in a quick run) */
  fleet?: FleetResult | undefined;
  machine: { cpus: number; cpu: string | undefined; memoryGiB: number; node: string };
  /** the command line that ran it (absent in reports before it was recorded) */
  command?: string;
  quick: boolean;
  /** service settings given with --set */
  settings: Record<string, string>;
  results: ScenarioResult[];
  connections: ConnectionsResult | undefined;
  /** ours against the database ceiling, the broker ceiling and the Node-RED peer, measured in the same run */
  references: ReferenceFigures;
  /** each target, and this run against it (none for a quick run) */
  targets: TargetVerdict[];
}

/**
 * Several runs of one scenario as one result: readings and seconds added up (so the rate is the
 * overall rate, not a mean of rates), CPU seconds added up per component.
 */
export function combineRuns(scenario: string, runs: readonly ThroughputResult[]): ThroughputResult {
  const sum = (f: (r: ThroughputResult) => number) => runs.reduce((n, r) => n + f(r), 0);
  const cpu = new Map<string, number>();
  for (const r of runs) for (const c of r.cpu ?? []) cpu.set(c.component, (cpu.get(c.component) ?? 0) + c.cpuSeconds);
  const readings = sum((r) => r.readings);
  const seconds = sum((r) => r.seconds);
  return {
    scenario,
    clients: runs[0]?.clients ?? 0,
    readings,
    seconds,
    readingsPerSecond: Math.round(readings / seconds),
    acceptedInSeconds: sum((r) => r.acceptedInSeconds ?? 0),
    lost: sum((r) => r.lost),
    duplicated: sum((r) => r.duplicated),
    redelivered: sum((r) => r.redelivered ?? 0),
    cpu: [...cpu.entries()].map(([component, cpuSeconds]) => ({ component, cpuSeconds: Math.round(cpuSeconds * 100) / 100 })).sort((a, b) => b.cpuSeconds - a.cpuSeconds),
  };
}
