import { CONSOLE } from '../../../shared/limits.ts';

/** A field's values over a window: [epoch ms, value], oldest first. */
export type Series = Array<[number, number]>;

/**
 * Where the console reads a device's history: InfluxDB (1.x, or 2.x through its 1.x query API) or
 * the local store of `npm start`. At most CONSOLE.historyMaxPoints points, averaged per bucket.
 */
export interface HistoryReader {
  readonly description: string;
  series(device: string, field: string, fromMs: number, toMs: number): Promise<Series>;
}

/** Milliseconds per bucket so that a window holds at most CONSOLE.historyMaxPoints buckets. */
export function bucketMs(fromMs: number, toMs: number): number {
  return Math.max(1, Math.ceil((toMs - fromMs + 1) / CONSOLE.historyMaxPoints));
}

/**
 * Points averaged per bucket (bucket start as their time), as InfluxQL's
 * `mean() GROUP BY time(bucket)` does, so both stores give the same shape.
 */
export function downsample(points: ReadonlyArray<readonly [number, number]>, fromMs: number, toMs: number): Series {
  const size = bucketMs(fromMs, toMs);
  const sums = new Map<number, { sum: number; n: number }>();
  for (const [t, v] of points) {
    if (t < fromMs || t > toMs) continue;
    const b = fromMs + Math.floor((t - fromMs) / size) * size;
    const s = sums.get(b);
    if (s) {
      s.sum += v;
      s.n++;
    } else sums.set(b, { sum: v, n: 1 });
  }
  return [...sums].sort((a, b) => a[0] - b[0]).map(([t, s]) => [t, s.sum / s.n]);
}
