import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import type { PoolConfig } from 'pg';
import { z } from 'zod';
import { setting } from '../../shared/config.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';

/** A schema name used unquoted in every statement's text: kept to plain lower-case identifiers. */
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * The key words PostgreSQL does not take as a schema name unquoted (its docs, Appendix C, "SQL Key
 * Words": reserved, and reserved but allowed as a function or type name; `pg_get_keywords()` with
 * catcode R or T, PostgreSQL 15, and SYSTEM_USER, reserved since 16). Such a name made every statement
 * a syntax error (SQLSTATE 42601), retried for ever. And `pg_`, which PostgreSQL keeps for its own
 * schemas (SQLSTATE 42939). The docs' and dashboards' SQL names the schema unquoted, so it is refused
 * rather than quoted.
 */
const RESERVED_SCHEMA_NAMES = new Set(
  (
    'all analyse analyze and any array as asc asymmetric authorization binary both case cast check collate collation column concurrently ' +
    'constraint create cross current_catalog current_date current_role current_schema current_time current_timestamp current_user default ' +
    'deferrable desc distinct do else end except false fetch for foreign freeze from full grant group having ilike in initially inner ' +
    'intersect into is isnull join lateral leading left like limit localtime localtimestamp natural not notnull null offset on only or order ' +
    'outer overlaps placing primary references returning right select session_user similar some symmetric system_user table tablesample then to ' +
    'trailing true union unique user using variadic verbose when where window with'
  ).split(' '),
);

/**
 * PostgreSQL (or TimescaleDB) as a home for the data (docs/postgres.md): on when POSTGRES_URL or
 * PGHOST is set, beside or instead of InfluxDB. The distributor writes there; the console reads
 * history from there (the same settings, so one .env serves both). The usual PG* variables of libpq are read too, and
 * PGPASSWORD_FILE for a password kept in a file (a Docker or Kubernetes secret).
 */
export function postgresSettings() {
  return {
    /** postgres://user:password@host:port/database; the PG* variables fill in what it leaves out */
    POSTGRES_URL: setting.url(['postgres', 'postgresql']).optional(),
    PGHOST: z.string().optional(),
    PGPORT: z.coerce.number().int().min(1).max(65535).optional(),
    PGDATABASE: z.string().optional(),
    PGUSER: z.string().optional(),
    PGPASSWORD: z.string().optional(),
    PGPASSWORD_FILE: z.string().optional(),
    /** disable, require (encrypted, server not verified), verify-ca, verify-full (libpq's sslmode names) */
    POSTGRES_SSL: z.enum(['disable', 'require', 'verify-ca', 'verify-full']).default('disable'),
    POSTGRES_SSL_CA_FILE: z.string().optional(),
    POSTGRES_SSL_CERT_FILE: z.string().optional(),
    POSTGRES_SSL_KEY_FILE: z.string().optional(),
    /** the schema that holds FieldStream's tables; created and migrated by the distributor */
    POSTGRES_SCHEMA: z
      .string()
      .regex(SCHEMA_NAME, 'must be a lower-case identifier (letters, digits, "_"; at most 63)')
      .refine((name) => !RESERVED_SCHEMA_NAMES.has(name) && !name.startsWith('pg_'), 'must be neither an SQL key word PostgreSQL reserves (such as "user" or "order") nor start with "pg_"')
      .default('fieldstream'),
    /** connections per distributor */
    POSTGRES_POOL_SIZE: z.coerce.number().int().min(1).max(64).default(4),
    /** milliseconds to connect, and for each statement; the client gives up past twice it (poolConfig) */
    POSTGRES_TIMEOUT_MS: z.coerce.number().int().positive().max(TIMINGS.postgresTimeoutMaxMs).default(10_000),
  };
}

export interface PostgresSettings {
  readonly POSTGRES_URL?: string | undefined;
  readonly PGHOST?: string | undefined;
  readonly PGPORT?: number | undefined;
  readonly PGDATABASE?: string | undefined;
  readonly PGUSER?: string | undefined;
  readonly PGPASSWORD?: string | undefined;
  readonly PGPASSWORD_FILE?: string | undefined;
  readonly POSTGRES_SSL: 'disable' | 'require' | 'verify-ca' | 'verify-full';
  readonly POSTGRES_SSL_CA_FILE?: string | undefined;
  readonly POSTGRES_SSL_CERT_FILE?: string | undefined;
  readonly POSTGRES_SSL_KEY_FILE?: string | undefined;
  readonly POSTGRES_SCHEMA: string;
  readonly POSTGRES_POOL_SIZE: number;
  readonly POSTGRES_TIMEOUT_MS: number;
}

export function postgresEnabled(c: PostgresSettings): boolean {
  return c.POSTGRES_URL !== undefined || c.PGHOST !== undefined;
}

const ONE_HOST = 'which is not supported: name one (a virtual IP, a load balancer, or a DNS name that follows the primary)';

/** Settings that contradict each other (a superRefine of the schema). */
export function checkPostgresSettings(c: PostgresSettings, ctx: z.RefinementCtx): void {
  if (c.PGPASSWORD !== undefined && c.PGPASSWORD_FILE !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['PGPASSWORD_FILE'], message: 'set PGPASSWORD or PGPASSWORD_FILE, not both' });
  }
  if (c.POSTGRES_URL !== undefined) {
    const url = new URL(c.POSTGRES_URL);
    if (url.hostname.includes(',') || url.searchParams.get('host')?.includes(',')) {
      ctx.addIssue({ code: 'custom', path: ['POSTGRES_URL'], message: `lists several hosts, ${ONE_HOST}` });
    }
    // The TLS mode has one place, POSTGRES_SSL; any other parameter would be silently ignored.
    for (const name of url.searchParams.keys()) {
      if (name !== 'host') ctx.addIssue({ code: 'custom', path: ['POSTGRES_URL'], message: `parameter "${name}" is not supported (TLS: POSTGRES_SSL and its files)` });
    }
    // Decoded by postgresConnection: a lone `%` (a password such as "50%off" written as it is) made
    // decodeURIComponent throw a bare URIError there, at start-up. Named here, never shown.
    for (const [part, value] of [['user', url.username], ['password', url.password], ['database', url.pathname.slice(1)]] as const) {
      if (!decodable(value)) ctx.addIssue({ code: 'custom', path: ['POSTGRES_URL'], message: `its ${part} is not valid percent-encoding (RFC 3986 §2.1): write "%" as "%25"` });
    }
  }
  // libpq's list of hosts (PostgreSQL docs §34.1.1.3, "Specifying Multiple Hosts"), a site's usual
  // way to fail over (with target_session_attrs): node-postgres connects to one host and looked the
  // list up as one name (ENOTFOUND), so the distributor started, then retried every write for ever.
  if (c.PGHOST?.includes(',')) {
    ctx.addIssue({ code: 'custom', path: ['PGHOST'], message: `lists several hosts, ${ONE_HOST}` });
  }
  if ((c.POSTGRES_SSL_CERT_FILE === undefined) !== (c.POSTGRES_SSL_KEY_FILE === undefined)) {
    ctx.addIssue({ code: 'custom', path: ['POSTGRES_SSL_KEY_FILE'], message: 'POSTGRES_SSL_CERT_FILE and POSTGRES_SSL_KEY_FILE go together' });
  }
}

function decodable(v: string): boolean {
  try {
    decodeURIComponent(v);
    return true;
  } catch {
    return false;
  }
}

/** What the sink (and the console's history) connects with; `password` is never logged (the description leaves it out). */
export interface PostgresConnection {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string | undefined;
  ssl: false | ConnectionOptions;
  schema: string;
  poolSize: number;
  /** milliseconds */
  timeoutMs: number;
  /** where it writes, for logs: no password */
  description: string;
}

/**
 * What every pool of ours takes from the connection (node-postgres PoolConfig): where, who, TLS,
 * and the timeouts. The client gives up past twice `timeoutMs` (a query of one statement:
 * clientTimeoutMs), for a server that no longer answers at all. The server's own statement timeout (SQLSTATE 57014 past `timeoutMs`) is set in
 * each transaction (SET LOCAL: the sink's writes, postgres-read.ts's reads), never as a startup
 * parameter: PgBouncer refuses a connection that sends one ("unsupported startup parameter:
 * statement_timeout", 08P01), so behind it nothing ever reached the database; and a session SET
 * would outlive its transaction on a pooler's shared server connection.
 */
export function poolConfig(c: PostgresConnection): PoolConfig {
  return {
    host: c.host,
    port: c.port,
    database: c.database,
    user: c.user,
    ...(c.password !== undefined ? { password: c.password } : {}),
    ssl: c.ssl,
    connectionTimeoutMillis: c.timeoutMs,
    query_timeout: clientTimeoutMs(c.timeoutMs),
  };
}

/**
 * milliseconds: how long the client waits for the answer to a query of `statements` statements,
 * each of which the server bounds by statement_timeout (`timeoutMs`) on its own (PostgreSQL 13 and
 * later time each statement of a simple query apart): the server's bound for them all, and
 * `timeoutMs` more. Twice `timeoutMs` for one statement. Waiting less for a query of several, the
 * client gave up first on one whose statements each took less than the timeout (the sink's
 * INSERTs of a transaction of several tables, sent together): no SQLSTATE, so never written in
 * halves, and retried whole for ever. At most TIMINGS.timerMaxMs: a Node timer past it fires at once.
 */
export function clientTimeoutMs(timeoutMs: number, statements = 1): number {
  return Math.min(TIMINGS.timerMaxMs, (statements + 1) * timeoutMs);
}

/**
 * The connection from the settings: POSTGRES_URL first, the PG* variables for what it leaves out,
 * then libpq's defaults (localhost:5432, database and user "postgres"). Files named by settings
 * are read here, once; CONFIG_FILE_UNREADABLE names the setting, never the content.
 */
export function postgresConnection(c: PostgresSettings): PostgresConnection {
  const url = c.POSTGRES_URL !== undefined ? new URL(c.POSTGRES_URL) : undefined;
  const fromUrl = (v: string | undefined) => (v ? decodeURIComponent(v) : undefined);
  const host = url?.searchParams.get('host') ?? (url?.hostname ? url.hostname.replace(/^\[(.*)\]$/, '$1') : undefined) ?? c.PGHOST ?? 'localhost';
  const port = url?.port ? Number(url.port) : (c.PGPORT ?? 5432);
  const database = fromUrl(url?.pathname.slice(1)) ?? c.PGDATABASE ?? 'postgres';
  const user = fromUrl(url?.username) ?? c.PGUSER ?? 'postgres';
  const password = fromUrl(url?.password) ?? c.PGPASSWORD ?? (c.PGPASSWORD_FILE !== undefined ? readSecret('PGPASSWORD_FILE', c.PGPASSWORD_FILE).replace(/\r?\n$/, '') : undefined);
  return {
    host,
    port,
    database,
    user,
    password,
    ssl: tlsOptions(c, host),
    schema: c.POSTGRES_SCHEMA,
    poolSize: c.POSTGRES_POOL_SIZE,
    timeoutMs: c.POSTGRES_TIMEOUT_MS,
    description: `PostgreSQL ${user}@${host}:${port}/${database} schema ${c.POSTGRES_SCHEMA}${c.POSTGRES_SSL === 'disable' ? '' : ` (TLS ${c.POSTGRES_SSL})`}`,
  };
}

/**
 * libpq's sslmode semantics (PostgreSQL docs §34.19.1): require encrypts without checking the
 * server; verify-ca checks its chain; verify-full also its name. `servername` is the host, for SNI.
 */
function tlsOptions(c: PostgresSettings, host: string): false | ConnectionOptions {
  if (c.POSTGRES_SSL === 'disable') return false;
  const tls: ConnectionOptions = { rejectUnauthorized: c.POSTGRES_SSL !== 'require' };
  if (c.POSTGRES_SSL_CA_FILE !== undefined) tls.ca = readSecret('POSTGRES_SSL_CA_FILE', c.POSTGRES_SSL_CA_FILE);
  if (c.POSTGRES_SSL_CERT_FILE !== undefined) tls.cert = readSecret('POSTGRES_SSL_CERT_FILE', c.POSTGRES_SSL_CERT_FILE);
  if (c.POSTGRES_SSL_KEY_FILE !== undefined) tls.key = readSecret('POSTGRES_SSL_KEY_FILE', c.POSTGRES_SSL_KEY_FILE);
  if (c.POSTGRES_SSL === 'verify-ca') tls.checkServerIdentity = () => undefined;
  // SNI takes a name only (RFC 6066 §3), never an address or a socket folder.
  if (!host.startsWith('/') && isIP(host) === 0) tls.servername = host;
  return tls;
}

function readSecret(variable: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `${variable}=${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { variable, path });
  }
}
