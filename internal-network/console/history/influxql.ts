import type { InfluxSettings } from '../../shared/influx-settings.ts';
import { InfluxQlReader, quoteIdent, quoteString, type InfluxQlSeries } from '../../shared/influxql.ts';
import { CONSOLE } from '../../../shared/limits.ts';
import { MEASUREMENTS, type StoredPoint } from '../../distributor/points.ts';
import { postgresConnection, postgresEnabled, type PostgresSettings } from '../../shared/postgres-settings.ts';
import { bucketMs, type HistoryReader, type Series } from './history.ts';
import { PostgresHistory } from './postgres.ts';
import { devicePresencePoint, gatewayStatusPoint, knownFirst, type LastPresences } from './presences.ts';

export { quoteIdent, quoteString };

/**
 * History through InfluxQL's /query (internal-network/shared/influxql.ts: InfluxDB 1.x, or 2.x
 * through its 1.x compatibility API, as Grafana's InfluxQL data source reads it). The device id and
 * field name are checked by the caller and quoted here; the window is numbers only.
 */
export class InfluxQlHistory implements HistoryReader {
  private readonly reader: InfluxQlReader;

  constructor(s: InfluxSettings & { INFLUXDB_URL: string }) {
    this.reader = new InfluxQlReader(s, 'CONSOLE_HISTORY_FAILED');
  }

  get description(): string {
    return this.reader.description;
  }

  async series(device: string, field: string, fromMs: number, toMs: number): Promise<Series> {
    const q =
      `SELECT mean(${quoteIdent(field)}) FROM "readings" WHERE "device" = ${quoteString(device)} ` +
      `AND time >= ${Math.floor(fromMs)}ms AND time <= ${Math.floor(toMs)}ms GROUP BY time(${bucketMs(fromMs, toMs)}ms) fill(none)`;
    const values = (await this.reader.query(q))[0]?.values ?? [];
    const out: Series = [];
    for (const [t, v] of values) if (typeof t === 'number' && typeof v === 'number') out.push([t, v]);
    return out;
  }

  /**
   * The last point of each (device, gateway) series of `device_status` and of each gateway's
   * `gateway_status` (and its last `offline`) since `fromMs`: `ORDER BY time DESC LIMIT 1` per group
   * (InfluxQL spec, "ORDER BY time DESC", "The LIMIT and SLIMIT clauses"), at most `maxPairs` and
   * CONSOLE.lastPresenceMaxGateways groups. `state` is a field, so the last `offline` is a statement
   * of its own. The other tag (`republished`) comes as a column.
   *
   * The pairs come in the order of their tags, not by whose they are: when the bound is reached,
   * ids sorting first (invented ones, as many as a DMZ cares to publish) may have taken every place.
   * The `known` devices' pairs are then read on their own, by id (CONSOLE.lastPresenceIdsPerQuery
   * at a time, each an index lookup), and come first (presences.ts knownFirst). Fewer groups than the
   * bound: every pair is in the one answer, which is all a store within its bound costs.
   */
  async lastPresences(fromMs: number, known: ReadonlySet<string>, maxPairs: number = CONSOLE.lastPresenceMaxPairs): Promise<LastPresences> {
    const since = `time >= ${Math.floor(fromMs)}ms`;
    // SLIMIT 0 is no limit at all (InfluxQL spec): a bound of 0 reads one group, not every one.
    const last = (measurement: string, where: string, groups: string, max: number) =>
      `SELECT * FROM ${quoteIdent(measurement)} WHERE ${where} GROUP BY ${groups} ORDER BY time DESC LIMIT 1 SLIMIT ${Math.max(1, max)}`;
    const pairs = '"device", "gateway"';
    const every = await this.reader.query(last(MEASUREMENTS.status, since, pairs, maxPairs));
    let devices = rowsOf(every, devicePresencePoint);
    if (every.length >= maxPairs && known.size > 0) {
      const theirs: StoredPoint[] = [];
      const ids = [...known];
      let room = maxPairs;
      for (let i = 0; i < ids.length && room > 0; i += CONSOLE.lastPresenceIdsPerQuery) {
        const which = ids
          .slice(i, i + CONSOLE.lastPresenceIdsPerQuery)
          .map((id) => `"device" = ${quoteString(id)}`)
          .join(' OR ');
        const answer = await this.reader.query(last(MEASUREMENTS.status, `${since} AND (${which})`, pairs, room));
        room -= answer.length;
        theirs.push(...rowsOf(answer, devicePresencePoint));
      }
      devices = knownFirst([...theirs, ...devices.filter((p) => !known.has(p.tags.device as string))], known, maxPairs);
    }
    const gateways = [
      ...rowsOf(await this.reader.query(last(MEASUREMENTS.gatewayStatus, since, '"gateway"', CONSOLE.lastPresenceMaxGateways)), gatewayStatusPoint),
      ...rowsOf(await this.reader.query(last(MEASUREMENTS.gatewayStatus, `${since} AND "state" = 'offline'`, '"gateway"', CONSOLE.lastPresenceMaxGateways)), gatewayStatusPoint),
    ];
    return { devices, gateways };
  }
}

/** Each row of the series as an object of its group's tags and its columns, made a point by `point` (undefined: left out). */
function rowsOf(series: InfluxQlSeries, point: (row: Record<string, unknown>) => StoredPoint | undefined): StoredPoint[] {
  const out: StoredPoint[] = [];
  for (const s of series) {
    for (const values of s.values ?? []) {
      const row: Record<string, unknown> = { ...s.tags };
      s.columns.forEach((c, i) => {
        if (values[i] !== null && values[i] !== undefined) row[c] = values[i];
      });
      const p = point(row);
      if (p) out.push(p);
    }
  }
  return out;
}

/**
 * PostgreSQL when POSTGRES_URL or PGHOST is set (the distributor's settings: where it writes), else
 * InfluxDB when INFLUXDB_URL is, else the local store. With both databases set the distributor
 * writes each message to both, so either answers alike; PostgreSQL, configured on purpose, is read.
 */
export function selectHistory(s: InfluxSettings & PostgresSettings, local: () => HistoryReader): HistoryReader {
  if (postgresEnabled(s)) return new PostgresHistory(postgresConnection(s));
  return s.INFLUXDB_URL ? new InfluxQlHistory({ ...s, INFLUXDB_URL: s.INFLUXDB_URL }) : local();
}
