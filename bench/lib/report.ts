import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import type { BenchReport, FilesResult, LatencyResult, ScenarioResult, ThroughputResult } from './results.ts';
import { targetsTable } from './targets.ts';
import { renderFleet } from './load-reports.ts';
import { renderConnections } from '../scenarios/connections.ts';

const isThroughput = (r: ScenarioResult): r is ThroughputResult => 'readingsPerSecond' in r;
const isLatency = (r: ScenarioResult): r is LatencyResult => 'p50Ms' in r;
const isFiles = (r: ScenarioResult): r is FilesResult => 'mbPerSecond' in r;

export type Machine = BenchReport['machine'];

/** The machine the benchmark runs on, as every report gives it. */
export function thisMachine(): Machine {
  return { cpus: cpus().length, cpu: cpus()[0]?.model, memoryGiB: Math.round(totalmem() / 1024 ** 3), node: process.version };
}

/** The command that runs the benchmark with `args` (each quoted for a POSIX shell where it needs it). */
export function benchCommand(args: readonly string[]): string {
  const quoted = args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`));
  return `npm run bench${quoted.length > 0 ? ` -- ${quoted.join(' ')}` : ''}`;
}

/**
 * A report's first line: when it ran, on what machine, and the command that runs it again, so that
 * every figure under it can be reproduced (and told apart from another machine's).
 */
export function runLine(r: { when: string; machine: Machine; command?: string | undefined }): string {
  const m = r.machine;
  return `Run ${r.when} on ${m.cpus} cores (${m.cpu ?? 'CPU unknown'}), ${m.memoryGiB} GiB, Node ${m.node}${r.command ? `, by \`${r.command}\`` : ''}.`;
}

/** Where the CPU went: the CPU time per reading of each process, one column per scenario. */
export function cpuTable(measured: readonly ThroughputResult[]): string[] {
  const withCpu = measured.filter((m) => m.cpu !== undefined);
  const first = withCpu[0];
  if (!first?.cpu) return [];
  const us = (seconds: number, m: ThroughputResult) => `${Math.round((seconds / m.readings) * 1e6)} µs`;
  const perReading = (m: ThroughputResult, component: string) => {
    const c = m.cpu?.find((x) => x.component === component);
    return c ? us(c.cpuSeconds, m) : '—';
  };
  return [
    `| CPU time per reading | ${withCpu.map((m) => m.scenario).join(' | ')} |`,
    `|---|${withCpu.map(() => '---|').join('')}`,
    ...first.cpu.map((c) => `| ${c.component} | ${withCpu.map((m) => perReading(m, c.component)).join(' | ')} |`),
    `| all | ${withCpu.map((m) => us((m.cpu ?? []).reduce((n, c) => n + c.cpuSeconds, 0), m)).join(' | ')} |`,
  ];
}

/** Ours against the references measured in the same run. */
function referencesLines(report: BenchReport): string[] {
  const r = report.references;
  const pct = (x: number) => `${Math.round(x * 100)} %`;
  const cpu = r.peerCpu.filter((c) => c.cpuSeconds > 0).map((c) => `${c.component} ${c.cpuSeconds.toFixed(1)} s`);
  return [
    `Batched pipeline at ${pct(r.batchedShareOfDatabase)} of the database ceiling, ${r.batchedVsPeer.toFixed(2)} × the Node-RED peer (one reading per message: ${r.singleVsPeer.toFixed(2)} ×), ${pct(r.batchedShareOfBroker)} of the broker ceiling for its own ${r.envelopes.toLocaleString('en')} envelopes (${r.envelopeBytes.toLocaleString('en')} bytes each on average).`,
    ...(cpu.length > 0 ? [`The peer's CPU while it ran: ${cpu.join(', ')}.`] : []),
    `Each side measured warm: the first round after start, not counted, ran at ${r.warmUp.batched.toLocaleString('en')} readings/s batched and ${r.warmUp.peer.toLocaleString('en')} for the peer.`,
  ];
}

export function renderMarkdown(report: BenchReport): string {
  const { results, connections } = report;
  return [
    runLine(report),
    '',
    '| scenario | clients | readings | seconds | readings/s | lost | duplicated | redelivered, refused |',
    '|---|---|---|---|---|---|---|---|',
    ...results
      .filter(isThroughput)
      .map((x) => `| ${x.scenario} | ${x.clients} | ${x.readings.toLocaleString('en')} | ${x.seconds.toFixed(1)} | ${x.readingsPerSecond.toLocaleString('en')} | ${x.lost} | ${x.duplicated} | ${x.redelivered ?? '—'} |`),
    '',
    '| device → database latency | probes | p50 | p95 | p99 | max | readings of the load | lost | duplicated |',
    '|---|---|---|---|---|---|---|---|---|',
    ...results
      .filter(isLatency)
      .map((x) => `| ${x.scenario} | ${x.readings} | ${x.p50Ms} ms | ${x.p95Ms} ms | ${x.p99Ms} ms | ${x.maxMs} ms | ${x.loadReadings?.toLocaleString('en') ?? '—'} | ${x.lost} | ${x.duplicated} |`),
    '',
    ...results.filter(isFiles).map((x) => `Files: ${x.readings} × 10 MB in ${x.seconds.toFixed(1)} s, ${x.mbPerSecond} MB/s, each stored byte for byte.`),
    '',
    ...(report.fleet ? [...renderFleet(report.fleet), ''] : []),
    ...(connections
      ? [
          ...renderConnections(connections),
          '',
        ]
      : []),
    ...referencesLines(report),
    '',
    ...cpuTable(results.filter(isThroughput)),
    '',
    ...targetsTable(report.targets),
  ].join('\n');
}

/** Writes DIR/pipeline.json and DIR/pipeline.md; returns the Markdown. */
export function writeReport(dir: string, report: BenchReport): string {
  const md = renderMarkdown(report);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'pipeline.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileSync(join(dir, 'pipeline.md'), md + '\n');
  return md;
}
