// Percentiles of the benchmark's latencies: one definition for every scenario (latency, fleet, sustained).

/**
 * The index, in `n` values sorted ascending, of their `f` quantile (0 < f ≤ 1) by the nearest-rank
 * method: the smallest value with at least f·n of the values at or below it, rank ⌈f·n⌉ (counted
 * from 1). Not ⌊f·n⌋ (from 0), which takes the value one rank above it whenever f·n is whole: the
 * p99 of 100 readings was their largest, the p50 of two their larger, and one reading late in a
 * fleet window of 100 made that window's p99 "over 10 s". -1 for no values.
 */
export function nearestRankIndex(n: number, f: number): number {
  if (n <= 0) return -1;
  // f·n in floating point may come out a hair over a whole number (0.07 × 100 = 7.000000000000001).
  const rank = Math.ceil(f * n - 1e-9);
  return Math.min(n - 1, Math.max(0, rank - 1));
}

/** The `f` quantile of `sorted` (ascending) by nearest rank; undefined for no values. */
export function percentile<T>(sorted: readonly T[], f: number): T | undefined {
  return sorted[nearestRankIndex(sorted.length, f)];
}
