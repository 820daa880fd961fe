import { z } from 'zod';
import { FieldStreamError } from '../../../shared/errors.ts';
import { shownUrl, type InfluxSettings } from '../../shared/influx-settings.ts';
import { postgresConnection, postgresEnabled, type PostgresSettings } from '../../shared/postgres-settings.ts';
import { bucketMs, type HistoryReader, type Series } from './history.ts';
import { PostgresHistory } from './postgres.ts';

/** InfluxDB's answer to /query (1.x, and 2.x's 1.x compatibility API), as far as the console reads it. */
const QueryAnswerSchema = z.object({
  results: z
    .array(
      z.object({
        error: z.string().optional(),
        series: z.array(z.object({ columns: z.array(z.string()), values: z.array(z.array(z.union([z.number(), z.string(), z.boolean(), z.null()]))).optional() })).optional(),
      }),
    )
    .min(1),
  error: z.string().optional(),
});

/** An InfluxQL identifier, double-quoted (InfluxQL spec, "Identifiers"): backslash and quote escaped. */
export const quoteIdent = (name: string) => `"${name.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
/** An InfluxQL string literal, single-quoted: backslash and quote escaped. */
export const quoteString = (value: string) => `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

/**
 * History through InfluxQL's /query: InfluxDB 1.x (INFLUXDB_DATABASE, with a user and password if
 * set), or 2.x through its 1.x compatibility API (INFLUXDB_TOKEN; the database is INFLUXDB_DATABASE,
 * the name a DBRP mapping gives the bucket, as Grafana's InfluxQL data source reads it, else the
 * bucket's own name, whose mapping is automatic since 2.1). The device id and field name are
 * checked by the caller and quoted here; the window is numbers only.
 */
export class InfluxQlHistory implements HistoryReader {
  readonly description: string;
  private readonly headers: Record<string, string>;
  private readonly database: string;

  /** INFLUXDB_URL without a user and password (fetch refuses a URL that carries them) */
  private readonly base: string;

  constructor(private readonly s: InfluxSettings & { INFLUXDB_URL: string }) {
    this.database = s.INFLUXDB_TOKEN !== undefined ? (s.INFLUXDB_DATABASE ?? s.INFLUXDB_BUCKET ?? '') : (s.INFLUXDB_DATABASE ?? '');
    this.base = shownUrl(s.INFLUXDB_URL);
    this.description = `InfluxDB ${this.base} (${this.database})`;
    // A user and password in the URL, as the distributor takes them (http://user:password@host),
    // unless INFLUXDB_USERNAME says otherwise: sent in the header, never in the URL or a message.
    const inUrl = new URL(s.INFLUXDB_URL);
    const username = s.INFLUXDB_USERNAME ?? (inUrl.username !== '' ? decodeURIComponent(inUrl.username) : undefined);
    const password = s.INFLUXDB_USERNAME !== undefined ? s.INFLUXDB_PASSWORD : decodeURIComponent(inUrl.password);
    this.headers =
      s.INFLUXDB_TOKEN !== undefined
        ? { authorization: `Token ${s.INFLUXDB_TOKEN}` }
        : username !== undefined
          ? { authorization: `Basic ${Buffer.from(`${username}:${password ?? ''}`).toString('base64')}` }
          : {};
  }

  async series(device: string, field: string, fromMs: number, toMs: number): Promise<Series> {
    const q =
      `SELECT mean(${quoteIdent(field)}) FROM "readings" WHERE "device" = ${quoteString(device)} ` +
      `AND time >= ${Math.floor(fromMs)}ms AND time <= ${Math.floor(toMs)}ms GROUP BY time(${bucketMs(fromMs, toMs)}ms) fill(none)`;
    const answer = await this.query(q);
    const values = answer.results[0]?.series?.[0]?.values ?? [];
    const out: Series = [];
    for (const [t, v] of values) if (typeof t === 'number' && typeof v === 'number') out.push([t, v]);
    return out;
  }

  private async query(q: string): Promise<z.infer<typeof QueryAnswerSchema>> {
    const url = new URL('/query', this.base);
    url.searchParams.set('db', this.database);
    url.searchParams.set('epoch', 'ms');
    url.searchParams.set('q', q);
    let res: Response;
    try {
      // The credential goes in a header, never in the URL (which servers and proxies log).
      res = await fetch(url, { headers: this.headers, signal: AbortSignal.timeout(this.s.INFLUXDB_TIMEOUT_MS) });
    } catch (err) {
      throw new FieldStreamError('CONSOLE_HISTORY_FAILED', `${this.description} did not answer: ${(err as Error).message}`);
    }
    const text = await res.text();
    if (!res.ok) throw new FieldStreamError('CONSOLE_HISTORY_FAILED', `${this.description} answered ${res.status}: ${text.slice(0, 200)}`);
    let parsed: z.infer<typeof QueryAnswerSchema>;
    try {
      parsed = QueryAnswerSchema.parse(JSON.parse(text));
    } catch {
      throw new FieldStreamError('CONSOLE_HISTORY_FAILED', `${this.description} answered something that is not an InfluxQL result`);
    }
    const error = parsed.error ?? parsed.results[0]?.error;
    if (error !== undefined) throw new FieldStreamError('CONSOLE_HISTORY_FAILED', `${this.description}: ${error.slice(0, 200)}`);
    return parsed;
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
