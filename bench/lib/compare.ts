import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { throughput, type ThroughputOptions } from '../scenarios/throughput.ts';
import type { BenchContext } from './context.ts';
import type { CpuMeter } from './proc-stats.ts';
import { cpuTable } from './report.ts';
import { combineRuns, type ThroughputResult } from './results.ts';

/**
 * `--compare KEY=VALUE`: what one setting of the services changes, measured in rounds that
 * alternate with and without it (on, off, off, on, twice: the host's speed drifts, and pairs in
 * this order cancel a steady drift). Before each round every Node service of the stack is restarted
 * with the setting or with its value as the stack had it, so both start from fresh processes.
 */
export const COMPARE_ORDER = [true, false, false, true, true, false, false, true] as const;
/** `--quick` (the tests, which check counts, not figures): one such cycle, half the rounds and restarts */
export const QUICK_COMPARE_ORDER = COMPARE_ORDER.slice(0, 4);

/** the rounds' order, on (true) or off, for a run quick or not */
export const compareOrder = (quick: boolean): readonly boolean[] => (quick ? QUICK_COMPARE_ORDER : COMPARE_ORDER);

export interface CompareResult {
  setting: Record<string, string>;
  /** rounds per side */
  rounds: number;
  /** per scenario: the rounds with the setting, and without it */
  pairs: Array<{ on: ThroughputResult; off: ThroughputResult }>;
}

export async function compareSetting(
  ctx: BenchContext,
  meter: CpuMeter,
  stack: LocalStack,
  setting: Record<string, string>,
  scenarios: readonly ThroughputOptions[],
  order: readonly boolean[],
): Promise<CompareResult> {
  const nodeServices = stack.all.filter((p) => p.spec.command === process.execPath);
  const original = new Map(nodeServices.map((p) => [p, Object.fromEntries(Object.keys(setting).map((k) => [k, p.spec.env[k]]))]));
  const runs = scenarios.map(() => ({ on: [] as ThroughputResult[], off: [] as ThroughputResult[] }));
  try {
    for (const [i, on] of order.entries()) {
      await restartWithSetting(nodeServices, (p) => (on ? setting : (original.get(p) ?? {})));
      for (const [s, scenario] of scenarios.entries()) {
        const round = await throughput(ctx, meter, { ...scenario, prefix: `cmp${scenario.prefix}${i}` });
        runs[s]?.[on ? 'on' : 'off'].push(round);
      }
    }
  } finally {
    await restartWithSetting(nodeServices, (p) => original.get(p) ?? {});
  }
  const label = Object.entries(setting)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  return {
    setting,
    rounds: order.length / 2,
    pairs: scenarios.map((s, i) => ({
      on: combineRuns(`${s.name}, ${label}`, runs[i]?.on ?? []),
      off: combineRuns(`${s.name}, as configured`, runs[i]?.off ?? []),
    })),
  };
}

/**
 * Stops the processes, sets (or, for undefined, removes) each one's variables, starts them again.
 * All at once, not one after another: they wait for nothing of each other at start (each reconnects
 * to what it needs), and one after another nine such restarts were most of a quick comparison's time.
 */
async function restartWithSetting(processes: readonly ManagedProcess[], envOf: (p: ManagedProcess) => Record<string, string | undefined>): Promise<void> {
  await Promise.all(processes.map((p) => p.stop()));
  for (const p of processes) {
    for (const [k, v] of Object.entries(envOf(p))) {
      if (v === undefined) delete p.spec.env[k];
      else p.spec.env[k] = v;
    }
  }
  await Promise.all(processes.map((p) => p.start()));
}

export function renderCompare(c: CompareResult): string[] {
  const rows = c.pairs.flatMap(({ on, off }) => [on, off]);
  return [
    `| scenario | rounds | readings | readings/s | lost | duplicated |`,
    `|---|---|---|---|---|---|`,
    ...rows.map((r) => `| ${r.scenario} | ${c.rounds} | ${r.readings.toLocaleString('en')} | ${r.readingsPerSecond.toLocaleString('en')} | ${r.lost} | ${r.duplicated} |`),
    '',
    ...c.pairs.map(({ on, off }) => `${on.scenario}: ${Math.round((on.readingsPerSecond / off.readingsPerSecond) * 100)} % of ${off.scenario}.`),
    '',
    ...cpuTable(rows),
  ];
}
