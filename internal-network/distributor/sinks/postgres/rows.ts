import { createHash } from 'node:crypto';
import type { Scalar } from '../../../../shared/contract/primitives.ts';
import { MEASUREMENTS, POINT_KEY, RESPONSE_COMMAND_FIELD, type StoredPoint } from '../../points.ts';
import { LIMITS } from '../../../../shared/limits.ts';
import { copyRows } from './copy.ts';
import { overflowField, type EventDeviceTag } from '../../event-tags.ts';
import { OVERFLOW_TAG_VALUE } from '../../security/tag-admission.ts';

/**
 * From points to rows, without a database: each measurement has its table (schema.ts), each table
 * a staging table of the same columns as the rows (a temporary table, one per connection) and the
 * statements that move a batch through it, in one transaction (sink.ts):
 *
 *   CREATE TEMP TABLE IF NOT EXISTS fieldstream_stage_t_H (c0 text, c1 bigint, …) ON COMMIT DELETE ROWS
 *   COPY pg_temp.fieldstream_stage_t_H FROM STDIN          -- the batch's rows, text format (copy.ts)
 *   INSERT INTO s.t (cols) SELECT … FROM pg_temp.fieldstream_stage_t_H AS r ON CONFLICT (primary key) DO NOTHING
 *
 * (H: a hash of the staging table's columns, see tableStatements.)
 *
 * COPY cannot say ON CONFLICT, so it fills the staging table and the INSERT keeps exactly-once as
 * before: a message delivered again writes nothing. COPY measured fastest of the four methods
 * (docs/postgres.md has the figures). The staging table is made inside each transaction (IF NOT
 * EXISTS: a no-op after the first on a connection), so it is there even behind a pooler that hands
 * each transaction another server connection; ON COMMIT DELETE ROWS empties it at each commit,
 * and a failed transaction leaves nothing either (its connection is closed). Times travel as epoch
 * milliseconds and become timestamptz exactly ('epoch' + ms).
 */

/** A column: its name in the table, its type in the staging table, how the SELECT turns it into the column. */
interface Column {
  name: string;
  type: 'text' | 'bigint' | 'double precision' | 'integer' | 'jsonb';
  /** a time in epoch milliseconds, stored as timestamptz */
  time?: boolean;
}

interface TableSpec {
  table: string;
  columns: readonly Column[];
  /** the columns of the table's primary key (schema.ts): the one conflict its INSERT skips */
  key: readonly string[];
  row(p: StoredPoint, key: string): unknown[];
}

const text = (name: string): Column => ({ name, type: 'text' });
const time = (name: string): Column => ({ name, type: 'bigint', time: true });
const COMMON = [text('device'), time('time'), text('message_key')];
/** the primary key of the tables whose rows' time comes from the message (schema.ts V1) */
const KEYED = ['device', 'time', 'message_key'];

/** A field as text ('' when absent), a number or null, for the typed columns. */
const str = (v: Scalar | undefined): string => (v === undefined ? '' : String(v));
const num = (v: Scalar | undefined): number | null => (typeof v === 'number' ? v : null);

export const TABLES: Record<string, TableSpec> = {
  [MEASUREMENTS.readings]: {
    table: 'readings',
    key: KEYED,
    columns: [...COMMON, { name: 'fields', type: 'jsonb' }],
    row: (p, k) => [p.tags.device, p.time, k, p.fields],
  },
  [MEASUREMENTS.health]: {
    table: 'device_health',
    key: KEYED,
    columns: [...COMMON, { name: 'fields', type: 'jsonb' }],
    row: (p, k) => [p.tags.device, p.time, k, p.fields],
  },
  [MEASUREMENTS.events]: {
    table: 'events',
    key: KEYED,
    columns: [...COMMON, text('event_type'), text('severity'), text('message'), { name: 'extra', type: 'jsonb' }],
    // The device's own event_type and severity, also of an event InfluxDB stores under `~other`
    // (event-tags.ts): the value is then in the field <tag>_value, taken out of `extra`. PostgreSQL
    // has no series to bound; only the tag value is.
    row: (p, k) => {
      const { message, ...extra } = p.fields;
      const own = (tag: EventDeviceTag): string | undefined => {
        if (p.tags[tag] !== OVERFLOW_TAG_VALUE) return p.tags[tag];
        const value = extra[overflowField(tag)];
        delete extra[overflowField(tag)];
        return str(value);
      };
      const eventType = own('event_type');
      return [p.tags.device, p.time, k, eventType, own('severity') ?? null, str(message), extra];
    },
  },
  [MEASUREMENTS.responses]: {
    table: 'command_responses',
    key: KEYED,
    // result_type: schema version 3 (points.ts resultFields); null where a point has none.
    columns: [...COMMON, text('command_id'), text('status'), text('result'), text('result_type')],
    // command_id: from the point's field (points.ts RESPONSE_COMMAND_FIELD), a tag no longer; the column stays.
    row: (p, k) => [p.tags.device, p.time, k, str(p.fields[RESPONSE_COMMAND_FIELD]), p.tags.status, str(p.fields.result), p.fields.result_type ?? null],
  },
  [MEASUREMENTS.files]: {
    table: 'files',
    key: KEYED,
    columns: [...COMMON, text('filename'), text('path'), { name: 'size', type: 'bigint' }, text('sha256'), text('content_type'), { name: 'declared_size', type: 'bigint' }],
    row: (p, k) => {
      const f = p.fields;
      return [p.tags.device, p.time, k, str(f.filename), str(f.path), num(f.size), str(f.sha256), str(f.content_type), num(f.declared_size)];
    },
  },
  [MEASUREMENTS.status]: {
    table: 'device_status',
    key: KEYED,
    // since: only on a presence published again (InfluxDB's tag republished=true says the same).
    columns: [...COMMON, text('gateway'), text('state'), time('cert_not_after'), { name: 'cert_days_left', type: 'double precision' }, time('since')],
    row: (p, k) => [p.tags.device, p.time, k, p.tags.gateway ?? '', str(p.fields.state), num(p.fields.cert_not_after), num(p.fields.cert_days_left), num(p.fields.since)],
  },
  /**
   * A gateway's presence carries nothing that tells one publication from the next: the gateway
   * publishes the same `online` at each connection to its broker, and the broker the same `offline`
   * (its will) at each loss, all with the one `since` of the gateway process. So its key holds the
   * arrival time (points.ts), and every presence is a row: a batch written again (a retry) writes
   * nothing, and the gateway's state is its latest row by time, as InfluxDB's last point is.
   * Writing a row only when it differs from the latest one would lose changes: that comparison sees
   * the table as it was before the statement (a flap within one batch: the `offline` is compared
   * with the `offline` before the `online`, and dropped) and cannot take back a row dropped before
   * an older one arrives (batches written out of order, by two consumers or after a retry).
   */
  [MEASUREMENTS.gatewayStatus]: {
    table: 'gateway_status',
    key: ['gateway', 'message_key'],
    columns: [text('gateway'), time('time'), text('message_key'), text('state'), time('since')],
    row: (p, k) => [p.tags.gateway, p.time, k, str(p.fields.state), num(p.fields.since)],
  },
  [MEASUREMENTS.securityEvents]: {
    table: 'security_events',
    key: ['device', 'message_key'],
    columns: [...COMMON, text('reason'), text('source'), text('gateway'), text('message_id'), text('data_type'), { name: 'count', type: 'integer' }, time('from_time'), text('detail')],
    row: (p, k) => {
      const f = p.fields;
      return [
        p.tags.device,
        p.time,
        k,
        p.tags.reason ?? 'unknown',
        p.tags.source ?? 'distributor',
        str(f.gateway),
        typeof f.message_id === 'string' ? f.message_id : null,
        typeof f.data_type === 'string' ? f.data_type : null,
        num(f.count) ?? 1,
        num(f.from),
        str(f.detail),
      ];
    },
  },
};

/**
 * The key of a point that came without one (points.ts POINT_KEY): its identity as InfluxDB sees it,
 * (measurement, tags, time), hashed. Every point the distributor makes carries a key; this only
 * keeps the contract total.
 */
export function fallbackKey(p: StoredPoint): string {
  const tags = Object.keys(p.tags)
    .sort()
    .map((k) => [k, p.tags[k]]);
  return `h:${createHash('sha256').update(JSON.stringify([p.measurement, tags, p.time])).digest('base64url').slice(0, 22)}`;
}

/**
 * Epoch milliseconds as timestamptz, exactly, by PostgreSQL's own operators, named in pg_catalog.
 * There is no `bigint * interval` there (the bigint is cast to float8), so an unqualified `*` was
 * looked up along the search_path, where an operator of exactly (bigint, interval) that another
 * role made in a schema it may create in is the better match: `public`, where PUBLIC may create
 * before PostgreSQL 15 and in databases upgraded from it. A role that may only read (Grafana's) ran
 * its code as the writing role at every write, and moved every time (PostgreSQL docs §5.9.6,
 * "Usage Patterns"; CVE-2018-1058).
 */
function ts(ms: string): string {
  return `'epoch'::pg_catalog.timestamptz OPERATOR(pg_catalog.+) (${ms} OPERATOR(pg_catalog.*) interval '1 millisecond')`;
}

/** The statements of one table (see the top of this file). */
export interface TableStatements {
  stage: string;
  copy: string;
  insert: string;
  /**
   * How many of the keys given (one array per primary-key column, $1…, in TableBatch.keys) have no
   * row in the table: run after a COMMIT whose INSERT wrote fewer rows than were staged (see sink.ts).
   */
  verify: string;
}

export function tableStatements(schema: string, spec: TableSpec): TableStatements {
  const cols = spec.columns;
  const shape = cols.map((c, i) => `c${i} ${c.type}`).join(', ');
  // Named after the table and its columns' shape, not the schema: a connection belongs to one sink,
  // so to one schema. The shape: behind a pooler a server connection, and the staging tables made
  // on it, outlive the distributor; one of a later version whose table has other columns (a
  // migration added one) must not find the earlier one's staging table under the same name.
  const staging = `fieldstream_stage_${spec.table}_${createHash('sha256').update(shape).digest('hex').slice(0, 8)}`;
  const select = cols.map((c, i) => (c.time ? ts(`r.c${i}`) : `r.c${i}`)).join(', ');
  return {
    stage: `CREATE TEMP TABLE IF NOT EXISTS ${staging} (${shape}) ON COMMIT DELETE ROWS`,
    // pg_temp named: a table of that name elsewhere on the search_path is never the one written.
    copy: `COPY pg_temp.${staging} FROM STDIN`,
    // The primary key named: a bare ON CONFLICT DO NOTHING skips a row that conflicts with any
    // unique index, and one a DBA added (say, one reading per device and millisecond) dropped a
    // message with a key of its own without a word, the write answered done and the message
    // acknowledged. Only a copy of a message is skipped; any other conflict is SQLSTATE 23505, a
    // refusal, and its message a dead letter.
    insert: `INSERT INTO ${schema}.${spec.table} (${cols.map((c) => c.name).join(', ')}) SELECT ${select} FROM pg_temp.${staging} AS r ON CONFLICT (${spec.key.join(', ')}) DO NOTHING`,
    verify: verifyStatement(schema, spec),
  };
}

interface KeyColumn {
  name: string;
  /** where it is in a row (TableSpec.row) and among the staging table's columns */
  index: number;
  column: Column;
}
const keyColumnsOf = new Map<TableSpec, readonly KeyColumn[]>();

/** The primary-key columns of a table, found once. */
function keyColumns(spec: TableSpec): readonly KeyColumn[] {
  let found = keyColumnsOf.get(spec);
  if (found === undefined) {
    found = spec.key.map((name) => {
      const index = spec.columns.findIndex((c) => c.name === name);
      const column = spec.columns[index];
      if (column === undefined) throw new Error(`the key column ${name} of ${spec.table} is not one of its columns`);
      return { name, index, column };
    });
    keyColumnsOf.set(spec, found);
  }
  return found;
}

/** TableStatements.verify: the keys unnested side by side, each looked up by the primary key. */
function verifyStatement(schema: string, spec: TableSpec): string {
  const keys = keyColumns(spec);
  // ROWS FROM: unnest of several arrays side by side is that form's shorthand, taken unqualified only.
  const arrays = keys.map((k, j) => `pg_catalog.unnest($${j + 1}::pg_catalog.${k.column.type === 'bigint' ? 'int8' : 'text'}[])`).join(', ');
  // ts() in parentheses: every OPERATOR(…) has the same precedence, left to right.
  const match = keys.map((k, j) => `x.${k.name} OPERATOR(pg_catalog.=) ${k.column.time ? `(${ts(`k.c${j}`)})` : `k.c${j}`}`).join(' AND ');
  return `SELECT pg_catalog.count(*)::int AS missing FROM ROWS FROM (${arrays}) AS k(${keys.map((_k, j) => `c${j}`).join(', ')}) WHERE NOT EXISTS (SELECT 1 FROM ${schema}.${spec.table} AS x WHERE ${match})`;
}

export interface TableBatch {
  table: string;
  statements: TableStatements;
  /** the rows, as the text COPY reads */
  text: string;
  rows: number;
  /** the rows' primary keys, one array per key column (statements.verify's parameters) */
  keys: unknown[][];
}

/**
 * The points of a batch, grouped per table, each group as its statements and its COPY text, in one
 * transaction. A point of an unknown measurement has no table: it is returned in `unknown` (the
 * caller refuses it).
 */
export function toTableBatches(schema: string, points: readonly StoredPoint[], statements: Map<string, TableStatements>): { batches: TableBatch[]; unknown: string[] } {
  const { transactions, unknown } = toTransactions(schema, points, statements, Number.POSITIVE_INFINITY);
  return { batches: transactions[0] ?? [], unknown };
}

/**
 * The points of a batch as transactions, in order, each its points grouped per table (as
 * toTableBatches) and at most `maxBytes` of COPY text in all, but a row larger by itself alone in
 * its transaction (a row is never cut). Each row's text is made once and counted in UTF-8, as sent.
 */
export function toTransactions(schema: string, points: readonly StoredPoint[], statements: Map<string, TableStatements>, maxBytes: number = LIMITS.postgresTransactionMaxBytes): { transactions: TableBatch[][]; unknown: string[] } {
  const transactions: TableBatch[][] = [];
  const unknown: string[] = [];
  let groups = new Map<TableSpec, { rows: string[]; keys: unknown[][] }>();
  let bytes = 0;
  const close = () => {
    if (groups.size === 0) return;
    const batches: TableBatch[] = [];
    for (const [spec, { rows, keys }] of groups) {
      let sql = statements.get(spec.table);
      if (sql === undefined) statements.set(spec.table, (sql = tableStatements(schema, spec)));
      batches.push({ table: spec.table, statements: sql, text: rows.join(''), rows: rows.length, keys });
    }
    transactions.push(batches);
    groups = new Map();
    bytes = 0;
  };
  for (const p of points) {
    const spec = TABLES[p.measurement];
    if (!spec) {
      unknown.push(p.measurement);
      continue;
    }
    const row = spec.row(p, p[POINT_KEY] ?? fallbackKey(p));
    const text = copyRows([row]);
    const size = Buffer.byteLength(text, 'utf8');
    if (bytes > 0 && bytes + size > maxBytes) close();
    let group = groups.get(spec);
    if (!group) groups.set(spec, (group = { rows: [], keys: keyColumns(spec).map(() => []) }));
    group.rows.push(text);
    const keys = group.keys;
    keyColumns(spec).forEach((k, j) => keys[j]?.push(row[k.index]));
    bytes += size;
  }
  close();
  return { transactions, unknown };
}

/** The COPY text of a transaction's tables, in bytes (UTF-8, as sent). */
export function transactionBytes(batches: readonly TableBatch[]): number {
  let bytes = 0;
  for (const b of batches) bytes += Buffer.byteLength(b.text, 'utf8');
  return bytes;
}

/** Rows `from` to `to` (not included) of a table's batch: its text is one line per row (copy.ts escapes a newline in a value). */
function sliceBatch(b: TableBatch, lines: readonly string[], from: number, to: number): TableBatch {
  return { ...b, text: lines.slice(from, to).join(''), rows: to - from, keys: b.keys.map((k) => k.slice(from, to)) };
}

/**
 * A transaction of two rows or more as two, its rows halved in order across its tables (the first
 * has the odd row): the sink writes each half alone when the whole was past the statement timeout
 * (sink.ts). Each row is in exactly one half, its key beside it.
 */
export function halves(batches: readonly TableBatch[]): [TableBatch[], TableBatch[]] {
  let left = Math.ceil(batches.reduce((n, b) => n + b.rows, 0) / 2);
  const first: TableBatch[] = [];
  const second: TableBatch[] = [];
  for (const b of batches) {
    if (left >= b.rows) {
      if (b.rows > 0) first.push(b);
      left -= b.rows;
    } else if (left === 0) {
      second.push(b);
    } else {
      const lines = b.text.split(/(?<=\n)/);
      first.push(sliceBatch(b, lines, 0, left));
      second.push(sliceBatch(b, lines, left, b.rows));
      left = 0;
    }
  }
  return [first, second];
}
