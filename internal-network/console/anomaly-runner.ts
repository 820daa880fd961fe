import { LimitedLog } from '../../shared/limited-log.ts';
import { CONSOLE, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Anomaly } from './fleet/types.ts';

export interface Reading {
  device: string;
  time: number;
  fields: Record<string, number>;
}

/**
 * The reading to score of a point the stored feed brought: a device's readings, their numeric
 * fields; undefined for anything else, or a reading with none. Its fields are an object without a
 * prototype: a field a device named "__proto__" (the contract takes any name), copied into a plain
 * object, set its prototype instead, and was never scored.
 */
export function readingOf(p: { measurement: string; tags: Record<string, string>; fields: Record<string, unknown>; time: number }): Reading | undefined {
  const device = p.tags.device;
  if (p.measurement !== 'readings' || device === undefined) return undefined;
  const fields = Object.create(null) as Record<string, number>;
  let n = 0;
  for (const [k, v] of Object.entries(p.fields)) if (typeof v === 'number') (fields[k] = v), n++;
  return n > 0 ? { device, time: p.time, fields } : undefined;
}

/** What scores readings (internal-network/console/anomaly/). */
export interface ReadingScorer {
  score(reading: Reading): Anomaly[];
  /** devices it scores now, and readings it refused to score because it held as many devices as
   * it may (AnomalyScorer: maxDevices, none idle) */
  stats?(): { devices: number; devicesRefused: number };
}

/** readings scored per turn of the event loop before it yields to the console's other work, at
 * most (a turn also ends after CONSOLE.anomalyTurnMaxMs: a reading that grows a forest costs
 * milliseconds, and after a restart every restored device grows its own at its first row) */
const CHUNK = 500;

/**
 * Scores readings off every write path: the stored feed hands them over (already written), they
 * wait in a bounded queue and are scored a chunk at a time between the console's other work. When
 * more arrive than can be scored, the newest beyond CONSOLE.anomalyQueueMax readings, or
 * CONSOLE.anomalyQueueMaxValues values (their fields, all together), are skipped and counted.
 */
export class AnomalyRunner {
  private queue: Reading[] = [];
  /** index of the next reading to score (the array is compacted now and then, not shifted each time) */
  private head = 0;
  private scheduled = false;
  /** values (fields) of the readings waiting: bounded too, as a reading holds up to 256 of them */
  private values = 0;
  skipped = 0;
  /** readings scored (not those of devices the scorer refused: `unscored`) */
  scored = 0;
  /** readings of devices the scorer had no room for: counted as scored, they hid that most of a
   * fleet larger than its maxDevices had no anomaly detection */
  unscored = 0;

  private readonly failures: LimitedLog;

  constructor(
    private readonly scorer: ReadingScorer,
    private readonly found: (a: Anomaly) => void,
    private readonly log: Logger,
  ) {
    this.failures = new LimitedLog(log, { level: 'error', maxPerWindow: CONSOLE.anomalyFailureLogMaxPerWindow, windowMs: TIMINGS.floodLogIntervalMs, what: 'readings anomaly scoring failed for' });
  }

  offer(r: Reading): void {
    const values = valuesOf(r);
    if (this.pending >= CONSOLE.anomalyQueueMax || this.values + values > CONSOLE.anomalyQueueMaxValues) {
      if (this.skipped++ === 0) this.log.warn({ queued: this.pending, values: this.values }, 'anomaly scoring behind: readings skipped (counted)');
      return;
    }
    this.values += values;
    this.queue.push(r);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.run());
    }
  }

  /** devices the scorer scores now (undefined: it does not say) */
  get devices(): number | undefined {
    return this.scorer.stats?.().devices;
  }

  get pending(): number {
    return this.queue.length - this.head;
  }

  private run(): void {
    const started = performance.now();
    const last = Math.min(this.queue.length, this.head + CHUNK);
    const refusedBefore = this.scorer.stats?.().devicesRefused ?? 0;
    let n = 0;
    while (this.head < last) {
      const r = this.queue[this.head++] as Reading;
      this.values -= valuesOf(r);
      n++;
      try {
        for (const a of this.scorer.score(r)) this.found(a);
      } catch (err) {
        // Limited: were the scorer to fail on every reading, a line each at the feed's rate.
        this.failures.write({ code: 'CONSOLE_INTERNAL', err, deviceId: r.device }, 'anomaly scoring failed for a reading');
      }
      if (performance.now() - started >= CONSOLE.anomalyTurnMaxMs) break;
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
      this.values = 0;
    } else if (this.head > CONSOLE.anomalyQueueMax / 2) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    const refused = (this.scorer.stats?.().devicesRefused ?? 0) - refusedBefore;
    this.unscored += refused;
    this.scored += n - refused;
    if (this.pending > 0) setImmediate(() => this.run());
    else this.scheduled = false;
  }
}

/** The values a reading holds (its fields): what its place in the queue costs. */
function valuesOf(r: Reading): number {
  let n = 0;
  for (const _ in r.fields) n++;
  return n;
}
