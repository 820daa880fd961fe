import pg, { type PoolClient } from 'pg';
import { z } from 'zod';
import { FieldStreamError } from '../../../../shared/errors.ts';
import type { Logger } from '../../../../shared/logger.ts';

/** How a migration's statements are made: for this schema, with or without TimescaleDB. */
export interface MigrationContext {
  /** the schema name, already checked to be a plain lower-case identifier (settings.ts) */
  schema: string;
  /** the timescaledb extension is installed in this database */
  timescale: boolean;
}

export interface Migration {
  readonly version: number;
  readonly name: string;
  statements(c: MigrationContext): string[];
}

/**
 * Version 1: the tables of docs/postgres.md. Every row carries `message_key`, the identity of the
 * message it came from (points.ts POINT_KEY); the primary key holds it, so a message delivered
 * again is skipped by `ON CONFLICT (primary key) DO NOTHING` and never becomes a second row. Where a row's time
 * comes from the message (the device's timestamp, or the gateway's arrival time, both inside the
 * envelope) the time is part of the key too: a TimescaleDB hypertable's unique keys must include
 * its time column, and (device, time) first serves "latest per device" and time ranges. Where the
 * time is the distributor's own clock (gateway presence, the distributor's security events) it
 * cannot be, since it differs at each delivery.
 */
const V1: Migration = {
  version: 1,
  name: 'tables for readings, health, events, command responses, files, presence and security events',
  statements({ schema: s, timescale }) {
    const keyed = (table: string, columns: string) =>
      `CREATE TABLE IF NOT EXISTS ${s}.${table} (
  device text NOT NULL,
  time timestamptz NOT NULL,
  message_key text NOT NULL,
  ${columns},
  PRIMARY KEY (device, time, message_key))`;
    const statements = [
      keyed('readings', 'fields jsonb NOT NULL'),
      keyed('device_health', 'fields jsonb NOT NULL'),
      keyed('events', 'event_type text NOT NULL,\n  severity text,\n  message text NOT NULL,\n  extra jsonb NOT NULL'),
      `CREATE INDEX IF NOT EXISTS events_type_time ON ${s}.events (event_type, time)`,
      keyed('command_responses', 'command_id text NOT NULL,\n  status text NOT NULL,\n  result text NOT NULL'),
      `CREATE INDEX IF NOT EXISTS command_responses_command ON ${s}.command_responses (command_id)`,
      keyed('files', 'filename text NOT NULL,\n  path text NOT NULL,\n  size bigint NOT NULL,\n  sha256 text NOT NULL,\n  content_type text NOT NULL,\n  declared_size bigint'),
      keyed('device_status', 'gateway text NOT NULL,\n  state text NOT NULL,\n  cert_not_after timestamptz,\n  cert_days_left double precision'),
      `CREATE TABLE IF NOT EXISTS ${s}.gateway_status (
  gateway text NOT NULL,
  time timestamptz NOT NULL,
  message_key text NOT NULL,
  state text NOT NULL,
  since timestamptz NOT NULL,
  PRIMARY KEY (gateway, message_key))`,
      `CREATE INDEX IF NOT EXISTS gateway_status_time ON ${s}.gateway_status (gateway, time)`,
      `CREATE TABLE IF NOT EXISTS ${s}.security_events (
  device text NOT NULL,
  time timestamptz NOT NULL,
  message_key text NOT NULL,
  reason text NOT NULL,
  source text NOT NULL,
  gateway text NOT NULL,
  message_id text,
  data_type text,
  count integer NOT NULL,
  from_time timestamptz,
  detail text NOT NULL,
  PRIMARY KEY (device, message_key))`,
      `CREATE INDEX IF NOT EXISTS security_events_time ON ${s}.security_events (time)`,
      `CREATE INDEX IF NOT EXISTS security_events_device_time ON ${s}.security_events (device, time)`,
    ];
    // Partitioned by time where the extension is there (the tables are still empty: nothing to move);
    // without it, plain tables, their primary keys serving the same queries.
    if (timescale) {
      for (const table of ['readings', 'device_health']) statements.push(`SELECT create_hypertable('${s}.${table}', 'time', if_not_exists => TRUE, migrate_data => TRUE)`);
    }
    return statements;
  },
};

/**
 * Version 2: a device's presence published again for a connection announced before (the gateway's
 * daily reminder, or after it reconnected to its broker) keeps the time of that connection in
 * `since`; null on a connect or a disconnect, so that the history of changes leaves reminders out.
 */
const V2: Migration = {
  version: 2,
  name: 'device_status.since: the connection a presence published again is of',
  statements({ schema: s }) {
    return [`ALTER TABLE ${s}.device_status ADD COLUMN IF NOT EXISTS since timestamptz`];
  },
};

/**
 * Version 3: how a command response's `result` holds the device's result (points.ts resultFields):
 * `string` (the string itself), `json` (the JSON text of any other value), `none`. `result` is
 * unchanged, so queries and dashboards that read it read the same; null on the rows before, where
 * 42 and "42" are the same text.
 */
const V3: Migration = {
  version: 3,
  name: 'command_responses.result_type: whether result is a string or the JSON text of another value',
  statements({ schema: s }) {
    return [`ALTER TABLE ${s}.command_responses ADD COLUMN IF NOT EXISTS result_type text`];
  },
};

/** Every migration, in version order. A new one is appended here, never an old one changed. */
export const MIGRATIONS: readonly Migration[] = [V1, V2, V3];
export const SCHEMA_VERSION = MIGRATIONS.length;

const VersionRowSchema = z.object({ version: z.number().int() });
const ExistsRowSchema = z.object({ found: z.boolean() });

/**
 * Brings the schema to SCHEMA_VERSION, in one transaction. Safe to run again and from several
 * distributors at once: a transaction-level advisory lock (PostgreSQL docs §13.3.5,
 * pg_advisory_xact_lock) lets one migrate while the others wait, then find nothing left to do; the
 * migrations and their schema_migrations rows commit together, or none of them does. A database
 * migrated by a newer distributor is refused rather than written in a shape this one does not know.
 *
 * One transaction, and no session state, so that it holds behind a pooler in transaction mode
 * (PgBouncer's `pool_mode = transaction`), which gives each transaction whichever server connection
 * is free: a session lock (pg_advisory_lock) taken in one transaction and released in another was
 * released on another server connection, if at all, and stayed held on the first one, which the
 * pooler keeps open for other clients: the next migration of any distributor waited on it until its
 * statement timeout, at every attempt. `timeoutMs` is each statement's (SET LOCAL statement_timeout,
 * for the same reason: PgBouncer refuses the startup parameter).
 *
 * `repair`: a write found a table missing (SQLSTATE 42P01) though schema_migrations may list every
 * version (a table dropped alone, or restored without the others): the migrations already applied
 * run again too, in order. Every statement is IF NOT EXISTS, so only what is missing is made, in
 * the shape of the latest version; skipped, as on any other run, the table was never made again and
 * the write retried for ever. Only then: run on every start, the ALTER TABLEs would take their
 * tables' exclusive locks each time.
 */
export async function migrate(client: PoolClient, schema: string, log: Logger, timeoutMs: number, repair = false): Promise<{ version: number; timescale: boolean; applied: number[] }> {
  await client.query(`BEGIN; SET LOCAL statement_timeout = ${Math.trunc(timeoutMs)}`);
  try {
    // Named in pg_catalog: there is no pg_advisory_xact_lock(integer) there (the hash is cast to
    // bigint), and one of that exact type another role made in public (PUBLIC may create there
    // before PostgreSQL 15) was the better match, run as this role (rows.ts ts()).
    await client.query('SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext($1))', [`fieldstream.schema.${schema}`]);
    const exists = ExistsRowSchema.parse((await client.query('SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS found', [schema])).rows[0]);
    // Created only when missing: an existing schema may belong to a role that cannot create one.
    if (!exists.found) await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await client.query(`CREATE TABLE IF NOT EXISTS ${schema}.schema_migrations (
  version integer PRIMARY KEY,
  name text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now())`);
    const done = new Set((await client.query(`SELECT version FROM ${schema}.schema_migrations`)).rows.map((r) => VersionRowSchema.parse(r).version));
    const newest = Math.max(0, ...done);
    if (newest > SCHEMA_VERSION) {
      throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `The PostgreSQL schema ${schema} is at version ${newest}, newer than this distributor knows (${SCHEMA_VERSION}); upgrade the distributor`);
    }
    const timescale = ExistsRowSchema.parse((await client.query("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') AS found")).rows[0]).found;
    const applied: number[] = [];
    for (const m of MIGRATIONS) {
      const again = done.has(m.version);
      if (again && !repair) continue;
      for (const sql of m.statements({ schema, timescale })) await client.query(sql);
      if (again) continue;
      await client.query(`INSERT INTO ${schema}.schema_migrations (version, name) VALUES ($1, $2)`, [m.version, m.name]);
      applied.push(m.version);
    }
    await client.query('COMMIT');
    for (const version of applied) log.info({ schema, version, timescale }, `PostgreSQL schema migrated: ${MIGRATIONS[version - 1]?.name}`);
    if (repair) log.warn({ schema }, 'PostgreSQL schema: every migration run again, making the tables that were missing');
    return { version: SCHEMA_VERSION, timescale, applied };
  } catch (err) {
    // Backed out only after a failure the server reported, the connection in step with it. Any
    // other (the client's read timeout, the statement perhaps still running; the connection lost)
    // leaves it in no known state, and a ROLLBACK would wait behind the statement for a read
    // timeout of its own, doubling the wait: the caller destroys the connection after any failure
    // (sink.ts schemaReady), which ends the transaction and frees its lock on the server.
    if (err instanceof pg.DatabaseError) await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}
