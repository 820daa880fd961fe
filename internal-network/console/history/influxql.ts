import type { InfluxSettings } from '../../shared/influx-settings.ts';
import { InfluxQlReader, quoteIdent, quoteString, type InfluxQlSeries } from '../../shared/influxql.ts';
import { CONSOLE } from '../../../shared/limits.ts';
import { MEASUREMENTS, type StoredPoint } from '../../distributor/points.ts';
import { postgresConnection, postgresEnabled, type PostgresSettings } from '../../shared/postgres-settings.ts';
import { bucketMs, type HistoryReader, type Series } from './history.ts';
import { PostgresHistory } from './postgres.ts';
import { devicePresencePoint, gatewayStatusPoint, type LastPresences } from './presences.ts';

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
   * (InfluxQL spec, "ORDER BY time DESC", "The LIMIT and SLIMIT clauses"), at most
   * CONSOLE.lastPresenceMaxPairs and lastPresenceMaxGateways groups. `state` is a field, so the
   * last `offline` is a statement of its own. The other tag (`republished`) comes as a column.
   */
  async lastPresences(fromMs: number): Promise<LastPresences> {
    const since = `time >= ${Math.floor(fromMs)}ms`;
    const last = (measurement: string, where: string, groups: string, max: number) =>
      `SELECT * FROM ${quoteIdent(measurement)} WHERE ${where} GROUP BY ${groups} ORDER BY time DESC LIMIT 1 SLIMIT ${max}`;
    const devices = rowsOf(await this.reader.query(last(MEASUREMENTS.status, since, '"device", "gateway"', CONSOLE.lastPresenceMaxPairs)), devicePresencePoint);
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
