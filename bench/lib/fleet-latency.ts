// The fleet's latency figures (bench/scenarios/fleet.ts): percentiles of the watched readings, whole and by window of due time.

import { nearestRankIndex } from './percentile.ts';

/** seconds of due time in each window of FleetResult.latencyByWindow */
export const LATENCY_WINDOW_S = 10;

/** The watched readings due in one window of the run: how many, and their latency (as FleetResult.latency). */
export interface LatencyWindow {
  fromS: number;
  toS: number;
  watched: number;
  p50Ms: number | null;
  p99Ms: number | null;
  late: number;
}

/**
 * p50, p95, p99 and max of the watched readings, `late` of them not seen in time: a percentile that
 * falls among the late ones is null. (Leaving them out made a run where nearly all were late report
 * the few seen early as its p99.) Nearest rank (percentile.ts), the late ones ranked last.
 */
export function watchedPercentiles(seen: readonly number[], late: number): { p50Ms: number | null; p95Ms: number | null; p99Ms: number | null; maxMs: number | null } {
  const sorted = [...seen].sort((a, b) => a - b);
  const total = sorted.length + late;
  const at = (f: number): number | null => {
    if (total === 0) return 0;
    const i = nearestRankIndex(total, f);
    return i < sorted.length ? (sorted[i] as number) : null;
  };
  return { p50Ms: at(0.5), p95Ms: at(0.95), p99Ms: at(0.99), maxMs: late > 0 ? null : (sorted[sorted.length - 1] ?? 0) };
}

/**
 * The watched readings by when they were due (seconds from the start of the load), the warm-up in
 * a window of its own, then in windows of LATENCY_WINDOW_S: a tail from the first seconds (services and devices starting together) and one
 * spread over the run (the machine short of CPU throughout) read the same in the percentiles of the
 * whole run.
 */
export function latencyWindows(seen: ReadonlyArray<{ dueS: number; ms: number }>, lateDueS: readonly number[], seconds: number, warmUpS = 0): LatencyWindow[] {
  const windows: LatencyWindow[] = [];
  // The warm-up is a window of its own, whatever its length.
  for (let fromS = 0; fromS < seconds; fromS = fromS === 0 && warmUpS > 0 ? warmUpS : fromS + LATENCY_WINDOW_S) {
    const toS = Math.min(seconds, fromS === 0 && warmUpS > 0 ? warmUpS : fromS + LATENCY_WINDOW_S);
    // The last window takes whatever is due from its start on.
    const inside = (dueS: number) => dueS >= fromS && (dueS < toS || toS === seconds);
    const ms = seen.filter((x) => inside(x.dueS)).map((x) => x.ms);
    const late = lateDueS.filter(inside).length;
    const { p50Ms, p99Ms } = watchedPercentiles(ms, late);
    windows.push({ fromS, toS, watched: ms.length + late, p50Ms, p99Ms, late });
  }
  return windows;
}
