import { FieldStreamError } from '../../../shared/errors.ts';
import { CONSOLE } from '../../../shared/limits.ts';
import type { LastPresences } from './presences.ts';

/** A field's values over a window: [epoch ms, value], oldest first. */
export type Series = Array<[number, number]>;

/**
 * Where the console reads a device's history: InfluxDB (1.x, or 2.x through its 1.x query API) or
 * the local store of `npm start`. At most CONSOLE.historyMaxPoints points, averaged per bucket.
 */
export interface HistoryReader {
  readonly description: string;
  series(device: string, field: string, fromMs: number, toMs: number): Promise<Series>;
  /** The devices' and gateways' last presences from `fromMs` on, the `known` devices' first, read
   * once at the console's start (presences.ts); a reader without it gives none. */
  lastPresences?(fromMs: number, known: ReadonlySet<string>, maxPairs?: number): Promise<LastPresences>;
  /** Gives back what the reader holds open (a pool of connections), as the console closes. */
  close?(): Promise<void>;
}

/** Milliseconds per bucket so that a window holds at most CONSOLE.historyMaxPoints buckets. */
export function bucketMs(fromMs: number, toMs: number): number {
  return Math.max(1, Math.ceil((toMs - fromMs + 1) / CONSOLE.historyMaxPoints));
}

/**
 * Points averaged per bucket (bucket start as their time), as InfluxQL's
 * `mean() GROUP BY time(bucket)` does, so every store gives the same answer: buckets lie on the
 * epoch's grid, not the window's (InfluxQL spec, "GROUP BY time intervals"; postgres.ts likewise),
 * so the first may start before `fromMs`.
 */
export function downsample(points: ReadonlyArray<readonly [number, number]>, fromMs: number, toMs: number): Series {
  const size = bucketMs(fromMs, toMs);
  const sums = new Map<number, { sum: number; n: number }>();
  for (const [t, v] of points) {
    if (t < fromMs || t > toMs) continue;
    const b = Math.floor(t / size) * size;
    const s = sums.get(b);
    if (s) {
      s.sum += v;
      s.n++;
    } else sums.set(b, { sum: v, n: 1 });
  }
  return [...sums].sort((a, b) => a[0] - b[0]).map(([t, s]) => [t, s.sum / s.n]);
}

/**
 * A history reader that runs at most CONSOLE.historyMaxConcurrent reads at once (one may scan a
 * month of a store, or hold a database connection), queues at most CONSOLE.historyMaxQueued more
 * and refuses the rest with CONSOLE_HISTORY_BUSY, so logged-in clients asking over and over cannot
 * pile up reads without end; and takes at most CONSOLE.historyMaxPerUser running or waiting from
 * one user, so one of them cannot take every place from the others.
 */
export class LimitedHistory {
  readonly description: string;
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  /** reads running or waiting, by user */
  private readonly held = new Map<string, number>();

  constructor(
    private readonly inner: HistoryReader,
    private readonly maxRunning: number = CONSOLE.historyMaxConcurrent,
    private readonly maxWaiting: number = CONSOLE.historyMaxQueued,
    private readonly maxPerUser: number = CONSOLE.historyMaxPerUser,
  ) {
    this.description = inner.description;
  }

  /** `user`: who asks (the credential's name), whose reads are counted together. */
  async series(user: string, device: string, field: string, fromMs: number, toMs: number): Promise<Series> {
    const mine = this.held.get(user) ?? 0;
    if (mine >= this.maxPerUser) throw new FieldStreamError('CONSOLE_HISTORY_BUSY', `${mine} history reads of yours are running or waiting; ask again when they are done.`, { perUser: this.maxPerUser });
    if (this.running >= this.maxRunning && this.waiting.length >= this.maxWaiting) throw new FieldStreamError('CONSOLE_HISTORY_BUSY');
    this.held.set(user, mine + 1);
    try {
      if (this.running >= this.maxRunning) {
        // The slot is handed over by the read that ends (running stays counted), so none is taken twice.
        await new Promise<void>((resolve) => this.waiting.push(resolve));
      } else this.running++;
      try {
        return await this.inner.series(device, field, fromMs, toMs);
      } finally {
        const next = this.waiting.shift();
        if (next) next();
        else this.running--;
      }
    } finally {
      const left = (this.held.get(user) ?? 1) - 1;
      if (left > 0) this.held.set(user, left);
      else this.held.delete(user);
    }
  }
}
