import pg from 'pg';
import type { InfluxV1 } from '../../scripts/local-stack/databases.ts';

/**
 * Where a throughput round's readings are counted: InfluxDB (the reference) or PostgreSQL
 * (--sink postgres). Each store has a cheap sign that a round's readings should all be in, asked
 * often while the pipeline is under load, and exact counts, asked only once that sign is given.
 */
export interface ReadingStore {
  readonly name: string;
  /** a mark taken before a round starts, for `arrived` */
  mark(): Promise<number>;
  /** cheaply: should the readings of the round (each device's last one at `last`) all be stored by now? */
  arrived(mark: number, total: number, last: ReadonlyArray<readonly [device: string, timeMs: number]>): Promise<boolean>;
  /** readings stored for devices PREFIX-* */
  count(prefix: string): Promise<number>;
  /** the same, device by device (devices with none are absent) */
  countByDevice(prefix: string): Promise<Record<string, number>>;
  /** the sum of their field v */
  sum(prefix: string): Promise<number>;
  /** copies the distributor refused as duplicates (SECURITY_DUPLICATE) for those devices */
  redelivered(prefix: string): Promise<number>;
}

/** InfluxDB 1.x: its own counter of points accepted is the cheap sign (counting costs it CPU). */
export function influxStore(influx: InfluxV1, database: string, scalar: (q: string) => Promise<number>): ReadingStore {
  return {
    name: 'InfluxDB',
    mark: () => influx.pointsWritten(),
    arrived: async (mark, total) => (await influx.pointsWritten()) - mark >= total,
    count: (prefix) => scalar(`SELECT count(v) FROM readings WHERE device =~ /^${prefix}-/`),
    countByDevice: async (prefix) => {
      const body = await influx.query(`SELECT count(v) FROM readings WHERE device =~ /^${prefix}-/ GROUP BY device`, database);
      return Object.fromEntries((body.results?.[0]?.series ?? []).map((s) => [s.tags?.device ?? '', Number(s.values[0]?.[1] ?? 0)]));
    },
    sum: (prefix) => scalar(`SELECT sum(v) FROM readings WHERE device =~ /^${prefix}-/`),
    redelivered: (prefix) => scalar(`SELECT count(message_id) FROM security_events WHERE reason = 'SECURITY_DUPLICATE' AND device =~ /^${prefix}-/`),
  };
}

/**
 * PostgreSQL (docs/postgres.md schema): the cheap sign is each device's last reading being there,
 * a primary-key lookup per device; counting a round's rows is a range scan of that key, done only
 * then. Device ids PREFIX-N sort between 'PREFIX-' and 'PREFIX.' ('.' follows '-'; the C collation
 * the test server is made with, and any other that orders ASCII punctuation so).
 */
export class PostgresStore implements ReadingStore {
  readonly name = 'PostgreSQL';
  private readonly pool: pg.Pool;

  constructor(
    connection: pg.PoolConfig,
    private readonly schema: string,
  ) {
    this.pool = new pg.Pool({ ...connection, max: 1, application_name: 'fieldstream-bench' });
  }

  async mark(): Promise<number> {
    return 0;
  }

  async arrived(_mark: number, _total: number, last: ReadonlyArray<readonly [string, number]>): Promise<boolean> {
    const r = await this.pool
      .query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${this.schema}.readings r JOIN unnest($1::text[], $2::bigint[]) AS l(device, ms)
         ON r.device = l.device AND r.time = 'epoch'::timestamptz + l.ms * interval '1 millisecond'`,
      [last.map(([d]) => d), last.map(([, t]) => t)],
      )
      // The distributor makes its tables at its first write: until then, nothing has arrived.
      .catch((err: { code?: string }) => {
        if (err.code === '42P01') return undefined;
        throw err;
      });
    return (r?.rows[0]?.n ?? 0) >= last.length;
  }

  private range = (prefix: string) => [`${prefix}-`, `${prefix}.`];

  async count(prefix: string): Promise<number> {
    return this.scalar(`SELECT count(*) AS v FROM ${this.schema}.readings WHERE device >= $1 AND device < $2`, this.range(prefix));
  }

  async countByDevice(prefix: string): Promise<Record<string, number>> {
    const r = await this.pool.query<{ device: string; n: number }>(
      `SELECT device, count(*)::int AS n FROM ${this.schema}.readings WHERE device >= $1 AND device < $2 GROUP BY device`,
      this.range(prefix),
    );
    return Object.fromEntries(r.rows.map((row) => [row.device, row.n]));
  }

  async sum(prefix: string): Promise<number> {
    return this.scalar(`SELECT sum((fields->>'v')::bigint) AS v FROM ${this.schema}.readings WHERE device >= $1 AND device < $2`, this.range(prefix));
  }

  async redelivered(prefix: string): Promise<number> {
    return this.scalar(`SELECT count(*) AS v FROM ${this.schema}.security_events WHERE reason = 'SECURITY_DUPLICATE' AND device >= $1 AND device < $2`, this.range(prefix));
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  private async scalar(sql: string, params: unknown[]): Promise<number> {
    const r = await this.pool.query<{ v: string | number | null }>(sql, params);
    return Number(r.rows[0]?.v ?? 0);
  }
}
