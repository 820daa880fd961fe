import pg from 'pg';
import { FieldStreamError } from '../../../shared/errors.ts';
import { CONSOLE } from '../../../shared/limits.ts';
import type { StoredPoint } from '../../distributor/points.ts';
import { poolConfig, type PostgresConnection } from '../../shared/postgres-settings.ts';
import { readWithin } from '../../shared/postgres-read.ts';
import { createPool } from '../../shared/postgres-pool.ts';
import { bucketMs, type HistoryReader, type Series } from './history.ts';
import { devicePresencePoint, gatewayStatusPoint, knownFirst, type LastPresences } from './presences.ts';

/**
 * SQLSTATEs that mean "nothing written yet" (PostgreSQL docs, Appendix A): 42P01 undefined table,
 * 3F000 invalid schema name. The distributor makes its schema at its first write; until then the
 * history is empty, as InfluxDB answers for a measurement it has never held.
 */
const NOT_YET_WRITTEN = new Set(['42P01', '3F000']);

/**
 * History from PostgreSQL, in the tables the distributor's sink writes (docs/postgres.md): the same
 * answer as InfluxQL's `SELECT mean(field) … WHERE time >= from AND time <= to GROUP BY
 * time(bucket) fill(none)` (influxql.ts). Buckets are aligned on the epoch, as InfluxQL aligns
 * GROUP BY time() intervals (InfluxQL spec, "GROUP BY time intervals"), so the first one may start
 * before the window; only numbers are averaged (a field's JSON type is kept in the JSONB column).
 * Times are whole milliseconds both ways ('epoch' + ms, extract(epoch) × 1000: exact).
 * The mean is taken in numeric, as JSONB holds the numbers, then given as float8: avg(float8) fails
 * with SQLSTATE 22003 once its running sum passes the largest double (two readings of 1e308, which
 * JSON and the contract allow), so one device's values could make its history unreadable; the
 * mean of doubles always fits one.
 */
export class PostgresHistory implements HistoryReader {
  readonly description: string;
  private readonly pool: pg.Pool;
  private readonly timeoutMs: number;
  private readonly sql: string;
  private readonly schema: string;

  constructor(c: PostgresConnection) {
    this.description = c.description;
    this.timeoutMs = c.timeoutMs;
    this.schema = c.schema;
    // The schema name is a checked lower-case identifier (postgres-settings.ts): safe unquoted.
    this.sql =
      `SELECT (floor(extract(epoch FROM time) * 1000 / $5) * $5)::bigint AS t, avg((fields->$2)::numeric)::float8 AS v ` +
      `FROM ${c.schema}.readings ` +
      `WHERE device = $1 AND time >= 'epoch'::timestamptz + $3 * interval '1 millisecond' AND time <= 'epoch'::timestamptz + $4 * interval '1 millisecond' ` +
      `AND jsonb_typeof(fields->$2) = 'number' GROUP BY 1 ORDER BY 1`;
    this.pool = createPool({
      ...poolConfig(c),
      // A page asks one series at a time; two connections are plenty, and idle ones are let go.
      max: 2,
      idleTimeoutMillis: 10_000,
      allowExitOnIdle: true,
      application_name: 'fieldstream-console',
    });
    // A connection the server closed while idle (a restart) is replaced at the next query.
    this.pool.on('error', () => undefined);
  }

  async series(device: string, field: string, fromMs: number, toMs: number): Promise<Series> {
    const rows = (await this.read(this.sql, [device, field, Math.floor(fromMs), Math.floor(toMs), bucketMs(fromMs, toMs)])) as Array<{ t: string; v: number | null }>;
    const out: Series = [];
    for (const r of rows) if (r.v !== null) out.push([Number(r.t), r.v]);
    return out;
  }

  /**
   * The last row of each (device, gateway) pair of `device_status`, and of each (gateway, state) of
   * `gateway_status`, since `fromMs` (DISTINCT ON, PostgreSQL docs "SELECT", "DISTINCT Clause"), at
   * most `maxPairs` and twice CONSOLE.lastPresenceMaxGateways rows. Times in epoch ms (`time` the
   * output's name too: the table's column is ordered by, qualified).
   *
   * The pairs come in id order, not by whose they are: when the bound is reached, ids sorting first
   * (invented ones, as many as a DMZ cares to publish) may have taken every place. The `known`
   * devices' rows are then read on their own (`device = ANY`, the primary key's first column) and
   * come first (presences.ts knownFirst). Fewer rows than the bound: every pair is in the one answer.
   */
  async lastPresences(fromMs: number, known: ReadonlySet<string>, maxPairs: number = CONSOLE.lastPresenceMaxPairs): Promise<LastPresences> {
    const ms = (column: string) => `(extract(epoch FROM ${column}) * 1000)::float8 AS ${column}`;
    const from = `time >= 'epoch'::timestamptz + $1 * interval '1 millisecond'`;
    const last = (where: string) =>
      `SELECT DISTINCT ON (device, gateway) device, gateway, state, cert_days_left, ${ms('cert_not_after')}, ${ms('since')}, ${ms('time')} ` +
      `FROM ${this.schema}.device_status WHERE ${where} ORDER BY device, gateway, device_status.time DESC LIMIT $2`;
    const points = (rows: Array<Record<string, unknown>>, point: (r: Record<string, unknown>) => StoredPoint | undefined) => rows.map(point).filter((p): p is StoredPoint => p !== undefined);
    const every = (await this.read(last(from), [Math.floor(fromMs), maxPairs])) as Array<Record<string, unknown>>;
    let devices = points(every, devicePresencePoint);
    if (every.length >= maxPairs && known.size > 0) {
      const theirs = (await this.read(last(`${from} AND device = ANY($3::text[])`), [Math.floor(fromMs), maxPairs, [...known]])) as Array<Record<string, unknown>>;
      devices = knownFirst([...points(theirs, devicePresencePoint), ...devices.filter((p) => !known.has(p.tags.device as string))], known, maxPairs);
    }
    const gateways = (await this.read(
      `SELECT DISTINCT ON (gateway, state) gateway, state, ${ms('since')}, ${ms('time')} FROM ${this.schema}.gateway_status WHERE ${from} ORDER BY gateway, state, gateway_status.time DESC LIMIT $2`,
      [Math.floor(fromMs), 2 * CONSOLE.lastPresenceMaxGateways],
    )) as Array<Record<string, unknown>>;
    return { devices, gateways: points(gateways, gatewayStatusPoint) };
  }

  /** The rows of a read; none before the distributor made its tables; any failure CONSOLE_HISTORY_FAILED. */
  private async read(sql: string, params: unknown[]): Promise<unknown[]> {
    try {
      return await readWithin(this.pool, this.timeoutMs, sql, params);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'string' && NOT_YET_WRITTEN.has(code)) return [];
      throw new FieldStreamError('CONSOLE_HISTORY_FAILED', `${this.description}: ${typeof code === 'string' ? `SQLSTATE ${code} ` : ''}${(err as Error).message.slice(0, 200)}`);
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
