import type { InfluxSettings } from '../../shared/influx-settings.ts';
import { InfluxQlReader, quoteIdent, quoteString } from '../../shared/influxql.ts';
import { postgresConnection, postgresEnabled, type PostgresSettings } from '../../shared/postgres-settings.ts';
import { bucketMs, type HistoryReader, type Series } from './history.ts';
import { PostgresHistory } from './postgres.ts';

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
