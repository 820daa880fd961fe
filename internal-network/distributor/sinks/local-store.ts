import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { FieldStreamError } from '../../../shared/errors.ts';
import type { StoredPoint } from '../points.ts';
import type { PointSink } from './sink.ts';

/**
 * The embedded default when no InfluxDB is configured: points appended as JSON lines to
 * DIR/YYYY-MM-DD.jsonl (UTC day of the write) and fsync'ed before the broker is acknowledged.
 * Read it back with `npm run readings`, or export it as line protocol for `influx write`.
 *
 * A redelivered message appends its points again; readers resolve that as InfluxDB does, by
 * (measurement, tags, time), so what they show is exactly-once.
 */
export class LocalPointStore implements PointSink {
  readonly description: string;
  private handle: { day: string; fh: FileHandle } | undefined;
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true });
    this.description = `local store ${dir}`;
  }

  write(points: readonly StoredPoint[]): Promise<void> {
    // Writes are serialised so lines of two batches never interleave.
    const next = this.chain.then(() => this.append(points));
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async append(points: readonly StoredPoint[]): Promise<void> {
    if (points.length === 0) return;
    const day = new Date().toISOString().slice(0, 10);
    try {
      if (this.handle?.day !== day) {
        await this.handle?.fh.close();
        this.handle = { day, fh: await open(join(this.dir, `${day}.jsonl`), 'a', 0o640) };
      }
      const text = points.map((p) => JSON.stringify({ ...p, time: new Date(p.time).toISOString() })).join('\n') + '\n';
      await this.handle.fh.write(text);
      await this.handle.fh.datasync();
    } catch (err) {
      throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `Cannot write to ${this.dir}: ${(err as Error).message}`, {}, { cause: err });
    }
  }

  async close(): Promise<void> {
    await this.chain;
    await this.handle?.fh.close();
    this.handle = undefined;
  }
}

/** Every point in a local store, de-duplicated by (measurement, tags, time), fields merged, in time order. */
export function readLocalStore(dir: string): StoredPoint[] {
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.jsonl')).sort();
  } catch {
    return [];
  }
  const byKey = new Map<string, StoredPoint>();
  for (const file of files) {
    for (const line of readFileSync(join(dir, file), 'utf8').split('\n')) {
      if (!line.trim()) continue;
      let raw: { measurement: string; tags: Record<string, string>; fields: StoredPoint['fields']; time: string };
      try {
        raw = JSON.parse(line);
      } catch {
        continue; // a torn last line after a crash: it was never acknowledged
      }
      const point: StoredPoint = { measurement: raw.measurement, tags: raw.tags, fields: raw.fields, time: Date.parse(raw.time) };
      const key = JSON.stringify([point.measurement, Object.entries(point.tags).sort(), point.time]);
      const existing = byKey.get(key);
      byKey.set(key, existing ? { ...existing, fields: { ...existing.fields, ...point.fields } } : point);
    }
  }
  return [...byKey.values()].sort((a, b) => a.time - b.time);
}
