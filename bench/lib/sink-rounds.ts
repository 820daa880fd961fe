import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { throughput, type ThroughputOptions } from '../scenarios/throughput.ts';
import { type BenchContext, sleep } from './context.ts';
import type { CpuMeter } from './proc-stats.ts';
import { cpuTable, runLine } from './report.ts';
import { compareOrder } from './compare.ts';
import { combineRuns, type BenchReport, type ThroughputResult } from './results.ts';
import type { ReadingStore } from './stores.ts';

export type SinkName = 'influxdb' | 'postgres';

/**
 * --sink postgres: the batched load into InfluxDB (the reference) and into PostgreSQL, each round
 * on a distributor restarted to write to that one store only. Four rounds each, in the order I, P,
 * P, I, twice, as the other restarted comparisons run (compare.ts), so that the host's drift and the
 * first round's warm-up weigh on both alike; with --quick (the tests, which check counts) one cycle.
 */
export const sinkOrder = (quick: boolean): readonly SinkName[] => compareOrder(quick).map((reference) => (reference ? 'influxdb' : 'postgres'));

export const SINK_SCENARIO: Record<SinkName, string> = {
  influxdb: 'batched into InfluxDB 1.x (reference)',
  postgres: 'batched into PostgreSQL',
};

/** Where the distributor writes in a round: one of the two URLs, the other setting emptied (unset). */
export interface SinkTargets {
  influxUrl: string;
  postgresUrl: string;
  stores: Record<SinkName, ReadingStore>;
}

export async function sinkRounds(ctx: BenchContext, meter: CpuMeter, stack: LocalStack, base: ThroughputOptions, t: SinkTargets): Promise<ThroughputResult[]> {
  const rounds: ThroughputResult[] = [];
  const order = sinkOrder(ctx.quick);
  for (const [i, sink] of order.entries()) {
    const distributor = stack.distributor;
    await distributor.restartWith(sink === 'postgres' ? { INFLUXDB_URL: '', POSTGRES_URL: t.postgresUrl } : { INFLUXDB_URL: t.influxUrl, POSTGRES_URL: '' });
    // The setting took: the distributor says where it writes once started.
    const said = sink === 'postgres' ? /"timeseries":"PostgreSQL [^"+]*"/ : /"timeseries":"InfluxDB [^"+]*"/;
    for (let waited = 0; !said.test(distributor.logSinceStart()); waited += 100) {
      if (waited > 10_000) throw new Error(`the distributor did not start writing to ${sink} alone`);
      await sleep(100);
    }
    rounds.push(await throughput(ctx, meter, { ...base, name: SINK_SCENARIO[sink], prefix: `sink${i}`, store: t.stores[sink] }));
  }
  const of = (sink: SinkName) => combineRuns(SINK_SCENARIO[sink], rounds.filter((_, i) => order[i] === sink));
  return [of('influxdb'), of('postgres')];
}

export type SinkReport = Pick<BenchReport, 'when' | 'machine' | 'command' | 'quick' | 'settings'> & { sink: 'postgres'; results: ThroughputResult[]; postgresVsInfluxdb: number };

/** Writes DIR/pipeline-postgres.json and .md (the full benchmark's pipeline.json is left alone); returns the Markdown. */
export function writeSinkReport(dir: string, report: SinkReport): string {
  const md = [
    runLine(report),
    '',
    '| scenario | clients | readings | seconds | readings/s | lost | duplicated | redelivered, refused |',
    '|---|---|---|---|---|---|---|---|',
    ...report.results.map((x) => `| ${x.scenario} | ${x.clients} | ${x.readings.toLocaleString('en')} | ${x.seconds.toFixed(1)} | ${x.readingsPerSecond.toLocaleString('en')} | ${x.lost} | ${x.duplicated} | ${x.redelivered ?? '—'} |`),
    '',
    `PostgreSQL at ${Math.round(report.postgresVsInfluxdb * 100)} % of InfluxDB's readings/s (${sinkOrder(report.quick).length / 2} rounds each, order ${sinkOrder(report.quick).map((s) => (s === 'postgres' ? 'P' : 'I')).join(' ')}).`,
    '',
    ...cpuTable(report.results),
  ].join('\n');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'pipeline-postgres.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileSync(join(dir, 'pipeline-postgres.md'), md + '\n');
  return md;
}
