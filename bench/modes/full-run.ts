import { loadCa } from '../../pki/onboarding.ts';
import { compareOrder } from '../lib/compare.ts';
import type { BenchContext } from '../lib/context.ts';
import { runFleet } from '../lib/fleet-stack.ts';
import type { BenchOptions } from '../lib/options.ts';
import type { CpuMeter } from '../lib/proc-stats.ts';
import { combineRuns, type ScenarioResult, type ThroughputResult } from '../lib/results.ts';
import { Scraper } from '../lib/scraper.ts';
import { serviceMetrics } from '../lib/service-metrics.ts';
import { heldOnDirectGateway, type ConnectionsResult } from '../scenarios/connections.ts';
import { fileTransfer } from '../scenarios/files.ts';
import type { FleetResult } from '../scenarios/fleet.ts';
import { latencyAtLoad } from '../scenarios/latency.ts';
import { measureReferences, type ReferenceFigures } from '../scenarios/references.ts';
import { throughput, type ThroughputOptions } from '../scenarios/throughput.ts';

/** `--quick`'s rounds of a setting that restarts services: one on, one off (counts are checked, not ratios) */
const QUICK_PAIR = [true, false] as const;

/** milliseconds between the scraper's rounds in the metrics scenario */
const SCRAPE_INTERVAL_MS = 1000;

/** The batched load's variants, each against its reference, in the order their rounds run. */
function pairedRounds(batched: ThroughputOptions, quick: boolean) {
  /** The same load, deleted on the device at the gateway's ack: a reference for what receipts cost. */
  const noReceipts = { ...batched, name: 'batched, receipts off (reference)', prefix: 'noreceipt', receipts: false };
  /** The batched load with every service's metrics on, scraped each second (Prometheus at its harshest). */
  const metricsOn = { ...batched, name: 'batched, metrics on, scraped every second' };
  /** The same with the services' metrics off: nothing counted, nothing served (the reference). */
  const metricsOff = { ...batched, name: 'batched, metrics off (reference)' };
  /** The batched load with the console's anomaly detection on, and off (the reference). */
  const anomalyOn = { ...batched, name: 'batched, anomaly detection on' };
  const anomalyOff = { ...batched, name: 'batched, anomaly detection off (reference)' };
  /**
   * On and off four times each, in the order on, off, off, on, twice, as --compare runs them: the
   * runs that restart services are short and the host's speed drifts, so more pairs give a steadier
   * ratio than one pair does. With --quick (the tests, which check counts only, not ratios) one pair:
   * a quarter of the restarts.
   */
  const restartedOrder = quick ? QUICK_PAIR : compareOrder(false);
  return {
    batched,
    noReceipts,
    metricsOn,
    metricsOff,
    anomalyOn,
    anomalyOff,
    /** Receipts on and off, twice each, on-off-off-on (each run with devices of its own); nothing restarts. With --quick one pair. */
    receipts: (quick ? [batched, noReceipts] : [batched, noReceipts, noReceipts, batched]).map((o, i): ThroughputOptions => ({ ...o, prefix: `${o.prefix}${i}` })),
    metrics: restartedOrder.map((metrics, i) => ({ ...(metrics ? metricsOn : metricsOff), prefix: `metrics${i}`, metrics })),
    anomaly: restartedOrder.map((anomaly, i) => ({ ...(anomaly ? anomalyOn : anomalyOff), prefix: `anomaly${i}`, anomaly })),
  };
}

export interface FullRunResult {
  results: ScenarioResult[];
  connections: ConnectionsResult;
  fleet: FleetResult;
  references: ReferenceFigures;
}

/**
 * `npm run bench` without a mode: every scenario in turn on the one stack (bench/pipeline.ts says
 * what each measures), the references and the fleet included. The caller shuts the stack down.
 */
export async function fullRun(
  ctx: BenchContext,
  meter: CpuMeter,
  o: { batched: ThroughputOptions; warmUp: ThroughputOptions; single: ThroughputOptions; options: BenchOptions },
): Promise<FullRunResult> {
  const { stack, influx, certs, database } = ctx;
  const r = pairedRounds(o.batched, o.options.quick);
  const results: ScenarioResult[] = [];
  const warmUp = await throughput(ctx, meter, o.warmUp);
  const rounds: ThroughputResult[] = [];
  for (const round of r.receipts) rounds.push(await throughput(ctx, meter, round));
  const batched = combineRuns(r.batched.name, rounds.filter((_, i) => r.receipts[i]?.receipts !== false));
  results.push(batched);
  results.push(combineRuns(r.noReceipts.name, rounds.filter((_, i) => r.receipts[i]?.receipts === false)));

  const m = stack.metrics;
  const scraper = new Scraper([...m.gateways, m.distributor, m.commandApi, m.brokerExporter], SCRAPE_INTERVAL_MS);
  const metricsRounds: ThroughputResult[] = [];
  for (const round of r.metrics) {
    await serviceMetrics(stack, round.metrics);
    if (round.metrics) scraper.start();
    try {
      metricsRounds.push(await throughput(ctx, meter, round));
    } finally {
      await scraper.stop();
    }
  }
  if (scraper.stats.scrapes === 0 || scraper.stats.failed > 0) throw new Error(`the metrics scraper read ${scraper.stats.scrapes} pages, ${scraper.stats.failed} failed`);
  results.push(combineRuns(r.metricsOn.name, metricsRounds.filter((_, i) => r.metrics[i]?.metrics)));
  results.push(combineRuns(r.metricsOff.name, metricsRounds.filter((_, i) => !r.metrics[i]?.metrics)));

  // Each round on a freshly started console, so that scoring left over from one round cannot
  // spill into the next.
  const anomalyRounds: ThroughputResult[] = [];
  for (const round of r.anomaly) {
    await stack.console.restartWith({ CONSOLE_ANOMALY: round.anomaly ? 'on' : 'off' });
    // The setting took: the console says once started (just after it listens) whether it scores.
    const said = new RegExp(`"anomaly":${round.anomaly}[,}]`);
    for (let waited = 0; !said.test(stack.console.logSinceStart()); waited += 100) {
      if (waited > 10_000) throw new Error(`the console did not start with anomaly detection ${round.anomaly ? 'on' : 'off'}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    anomalyRounds.push(await throughput(ctx, meter, round));
  }
  results.push(combineRuns(r.anomalyOn.name, anomalyRounds.filter((_, i) => r.anomaly[i]?.anomaly)));
  results.push(combineRuns(r.anomalyOff.name, anomalyRounds.filter((_, i) => !r.anomaly[i]?.anomaly)));

  const single = await throughput(ctx, meter, o.single);
  results.push(single);
  const refs = await measureReferences(ctx, meter, o.batched);
  results.push(...refs.results);
  const references = refs.figures({ batched, single, warmUp });
  results.push(await latencyAtLoad(ctx, { readingsPerSecond: Math.max(100, Math.round(batched.readingsPerSecond / 2)), seconds: o.options.latencySeconds }));
  results.push(await fileTransfer(ctx, o.options.files));
  const connections = await heldOnDirectGateway(stack, loadCa(certs), o.options.connections);
  const fleet = await runFleet(stack, influx, { certsDir: certs, database, ...o.options.fleet });
  return { results, connections, fleet, references };
}
