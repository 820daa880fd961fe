import { Point } from '@influxdata/influxdb-client';
import type { StoredPoint } from '../points.ts';

/**
 * InfluxDB line protocol through the client library's Point, which owns the escaping rules.
 * Every number is written as a float: InfluxDB fixes a field's type at its first write, and a
 * reading that is 23 today and 23.5 tomorrow must not be refused as a type conflict.
 */
export function toInfluxPoint(p: StoredPoint): Point {
  const point = new Point(p.measurement);
  for (const key of Object.keys(p.tags).sort()) point.tag(key, p.tags[key] as string);
  for (const [key, value] of Object.entries(p.fields)) {
    if (typeof value === 'number') point.floatField(key, value);
    else if (typeof value === 'boolean') point.booleanField(key, value);
    else point.stringField(key, value);
  }
  return point.timestamp(p.time); // milliseconds: every write uses precision=ms
}

export function toLineProtocol(points: readonly StoredPoint[]): string {
  return points
    .map((p) => toInfluxPoint(p).toLineProtocol())
    .filter((l): l is string => l !== undefined)
    .join('\n');
}
