import { z } from 'zod';
import { FieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { shownUrl, type InfluxSettings } from './influx-settings.ts';

/** InfluxDB's answer to /query (1.x, and 2.x's 1.x compatibility API), as far as its readers read it. */
const AnswerSchema = z.object({
  results: z.array(
    z.object({
      error: z.string().optional(),
      series: z
        .array(z.object({ tags: z.record(z.string(), z.string()).optional(), columns: z.array(z.string()), values: z.array(z.array(z.unknown())).optional() }))
        .optional(),
    }),
  ),
  error: z.string().optional(),
});
/** The series of a statement's answer: each value still to be checked by its reader. */
export type InfluxQlSeries = NonNullable<z.infer<typeof AnswerSchema>['results'][number]['series']>;

/** An InfluxQL identifier, double-quoted (InfluxQL spec, "Identifiers"): backslash and quote escaped. */
export const quoteIdent = (name: string) => `"${name.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
/** An InfluxQL string literal, single-quoted: backslash and quote escaped. */
export const quoteString = (value: string) => `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

/**
 * Reads InfluxDB through InfluxQL's /query, by GET (which InfluxDB takes for SELECT and SHOW only:
 * read only): InfluxDB 1.x (INFLUXDB_DATABASE, with a user and password if set), or 2.x through its
 * 1.x compatibility API (INFLUXDB_TOKEN; the database is INFLUXDB_DATABASE, the name a DBRP mapping
 * gives the bucket, as Grafana's InfluxQL data source reads it, else the bucket's own name, whose
 * mapping is automatic since 2.1). Every failure is `failure`, the reader's own code.
 */
export class InfluxQlReader {
  readonly description: string;
  private readonly headers: Record<string, string>;
  private readonly database: string;
  /** INFLUXDB_URL without a user and password (fetch refuses a URL that carries them) */
  private readonly base: string;

  constructor(
    private readonly s: Pick<InfluxSettings, 'INFLUXDB_TOKEN' | 'INFLUXDB_DATABASE' | 'INFLUXDB_BUCKET' | 'INFLUXDB_USERNAME' | 'INFLUXDB_PASSWORD' | 'INFLUXDB_TIMEOUT_MS'> & { INFLUXDB_URL: string },
    private readonly failure: ErrorCode,
  ) {
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

  /** The series of the statement's answer (none when nothing matched), times in epoch milliseconds. */
  async query(q: string): Promise<InfluxQlSeries> {
    const url = new URL('/query', this.base);
    url.searchParams.set('db', this.database);
    url.searchParams.set('epoch', 'ms');
    url.searchParams.set('q', q);
    let res: Response;
    let text: string;
    try {
      // The credential goes in a header, never in the URL (which servers and proxies log).
      res = await fetch(url, { headers: this.headers, signal: AbortSignal.timeout(this.s.INFLUXDB_TIMEOUT_MS) });
      text = await res.text();
    } catch (err) {
      throw new FieldStreamError(this.failure, `${this.description} did not answer: ${(err as Error).message.slice(0, 200)}`);
    }
    if (!res.ok) throw new FieldStreamError(this.failure, `${this.description} answered ${res.status}: ${text.slice(0, 200)}`);
    let answer: z.infer<typeof AnswerSchema>;
    try {
      answer = AnswerSchema.parse(JSON.parse(text));
    } catch {
      throw new FieldStreamError(this.failure, `${this.description} answered something that is not an InfluxQL result`);
    }
    const error = answer.error ?? answer.results[0]?.error;
    if (error !== undefined) throw new FieldStreamError(this.failure, `${this.description}: ${error.slice(0, 200)}`);
    return answer.results[0]?.series ?? [];
  }
}
