import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ScalarSchema } from '../../../shared/contract/primitives.ts';
import { DAY_MS, LIMITS } from '../../../shared/limits.ts';
import { FieldStreamError } from '../../../shared/errors.ts';
import { LineFile, readLines, readLinesSync } from '../../../shared/line-file.ts';
import { ONE_POINT_PER_MESSAGE, POINT_KEY, subMillisecondNs, type StoredPoint } from '../points.ts';
import type { PointSink } from './sink.ts';
import { makeDirDurablySync } from '../../../shared/durable-fs.ts';

/**
 * The embedded default when no InfluxDB is configured: points appended as JSON lines to
 * DIR/YYYY-MM-DD.jsonl (UTC day of the write) and fsync'ed before the broker is acknowledged.
 * Read it back with `npm run readings`, or export it as line protocol for `influx write`.
 *
 * A redelivered message appends its points again; readers resolve that as InfluxDB does, by
 * (measurement, tags, time), the time of a point kept one per message (points.ts
 * ONE_POINT_PER_MESSAGE) with the offset its message key gives it (subMillisecondNs), so what they
 * show is exactly-once, and two messages of one series and millisecond stay two points there as in
 * InfluxDB. Such a point's line keeps its key (`key`) for that, and for the line-protocol export.
 * Batches are appended one at a time, each whole and on lines of its own (line-file.ts).
 */
export class LocalPointStore implements PointSink {
  readonly description: string;
  private readonly file = new LineFile(0o640);

  constructor(private readonly dir: string) {
    makeDirDurablySync(dir);
    this.description = `local store ${dir}`;
  }

  async write(points: readonly StoredPoint[]): Promise<void> {
    if (points.length === 0) return;
    const text = points.map(storedLine).join('\n') + '\n';
    try {
      await this.file.append(join(this.dir, `${new Date().toISOString().slice(0, 10)}.jsonl`), text);
    } catch (err) {
      throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot write to ${this.dir}: ${(err as Error).message}`, {}, { cause: err });
    }
  }

  close(): Promise<void> {
    return this.file.end();
  }
}

/** characters: the longest message key a line may carry (a security event's, the longest, is a few hundred) */
const KEY_MAX_CHARS = 1024;

/**
 * A line of a local store, read back from disk (a trust boundary: the file may have been edited,
 * or torn by a crash): checked with zod, and skipped when it does not parse.
 */
const StoredLineSchema = z.strictObject({
  measurement: z.string().min(1).max(200),
  tags: z.record(z.string(), z.string()),
  fields: z.record(z.string(), ScalarSchema),
  time: z.iso.datetime(),
  /** the message key of a point kept one per message (points.ts POINT_KEY); absent on other points and older lines */
  key: z.string().min(1).max(KEY_MAX_CHARS).optional(),
});

/** A point as its line. */
function storedLine(p: StoredPoint): string {
  const key = p[POINT_KEY];
  const line = { measurement: p.measurement, tags: p.tags, fields: p.fields, time: new Date(p.time).toISOString() };
  return JSON.stringify(key !== undefined && ONE_POINT_PER_MESSAGE.has(p.measurement) ? { ...line, key } : line);
}

/** One line as a point, or undefined for a line that is not one (a torn last line after a crash: it was never acknowledged). */
export function parseStoredLine(line: string): StoredPoint | undefined {
  if (!line.trim()) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return undefined;
  }
  const parsed = StoredLineSchema.safeParse(raw);
  if (!parsed.success) return undefined;
  const { time, key, ...rest } = parsed.data;
  const point: StoredPoint = { ...rest, time: Date.parse(time) };
  if (key !== undefined) point[POINT_KEY] = key;
  return point;
}

/** The store's day files, oldest first (YYYY-MM-DD.jsonl, the UTC day of the write). */
export function dayFiles(dir: string): string[] {
  try {
    return readdirSync(dir).filter((f) => /^\d{4}-\d{2}-\d{2}\.jsonl$/.test(f)).sort();
  } catch {
    return [];
  }
}

/**
 * The points written on or after the day before `fromMs` (a point is written after it is taken, so
 * one taken at `fromMs` or later is in these files; the day before covers clocks a little apart),
 * line by line without reading whole files into memory. Copies are not removed. Every newer file is
 * read too, whatever the window's end: files are by the day of writing, and a backlog a device sent
 * days later holds points of the window (the console bounds how many such reads run at once).
 */
export async function* scanLocalStore(dir: string, fromMs: number): AsyncGenerator<StoredPoint> {
  const firstDay = new Date(fromMs - DAY_MS).toISOString().slice(0, 10);
  for (const file of dayFiles(dir).filter((f) => f.slice(0, 10) >= firstDay)) yield* scanDayFile(join(dir, file));
}

/**
 * The points of one day file, line by line; `mayHold`: a cheap look at a line, false for one not
 * worth parsing. A line longer than any point (LIMITS.localStoreLineMaxBytes) is skipped unheld.
 */
export async function* scanDayFile(path: string, mayHold?: (line: string) => boolean): AsyncGenerator<StoredPoint> {
  for await (const line of readLines(path, LIMITS.localStoreLineMaxBytes)) {
    if (line === undefined || (mayHold && !mayHold(line))) continue;
    const point = parseStoredLine(line);
    if (point) yield point;
  }
}

/** Every point in a local store, de-duplicated as InfluxDB keeps them (by measurement, tags, time and its offset), fields merged, in time order. */
export function readLocalStore(dir: string): StoredPoint[] {
  const byKey = new Map<string, StoredPoint>();
  for (const file of dayFiles(dir)) {
    for (const line of readLinesSync(join(dir, file), LIMITS.localStoreLineMaxBytes)) {
      const point = line === undefined ? undefined : parseStoredLine(line);
      if (!point) continue;
      const key = JSON.stringify([point.measurement, Object.entries(point.tags).sort(), point.time, subMillisecondNs(point)]);
      const existing = byKey.get(key);
      byKey.set(key, existing ? { ...existing, fields: { ...existing.fields, ...point.fields } } : point);
    }
  }
  return [...byKey.values()].sort((a, b) => a.time - b.time);
}
