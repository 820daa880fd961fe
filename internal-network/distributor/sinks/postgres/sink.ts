import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { FieldStreamError, isFieldStreamError } from '../../../../shared/errors.ts';
import type { Logger } from '../../../../shared/logger.ts';
import type { StoredPoint } from '../../points.ts';
import type { PointSink } from '../sink.ts';
import { migrate } from './schema.ts';
import { createPool } from '../../../shared/postgres-pool.ts';
import { LIMITS } from '../../../../shared/limits.ts';
import { halves, toTransactions, transactionBytes, type TableBatch, type TableStatements } from './rows.ts';
import { clientTimeoutMs, poolConfig, type PostgresConnection } from './settings.ts';

/**
 * SQLSTATE classes that blame the data itself (PostgreSQL docs, Appendix A): 22 data exception
 * (a NUL character or a lone surrogate in a string, a value out of range), 23 integrity constraint
 * violation (a required value missing), 54 program limit exceeded (a row or an index entry too
 * large). Writing such a batch again gives the same answer, so it is a dead letter. Everything
 * else (no connection, 08 connection exception, 28 authentication, 53 out of resources,
 * 57 operator intervention such as a restart or a statement timeout, 40 rollbacks, 42 a table
 * missing) is the operator's to fix or the server's to get over: retried, never set aside.
 */
const REJECTING_CLASSES = new Set(['22', '23', '54']);

/**
 * SQLSTATEs that say the schema is gone (PostgreSQL docs, Appendix A): 42P01 undefined table,
 * 3F000 invalid schema name. The database was made again under a running distributor (a new data
 * folder, a restore from before its first start, the schema dropped): the next attempt migrates
 * again, rather than retrying a table that nothing would ever make until a restart.
 */
const SCHEMA_GONE = new Set(['42P01', '3F000']);

/** SQLSTATE 57014, query_canceled: a statement past the transaction's statement_timeout (or one an operator cancelled). */
const STATEMENT_TIMEOUT = '57014';

/** Where the sink's transaction size and its timeouts are shown (metrics.ts); optional, as outside the distributor. */
export interface PostgresSinkMetrics {
  statementTimeouts: { inc(n?: number): void };
  transactionMaxBytes: { set(value: number): void };
}

/**
 * The transaction's COMMIT answered only once its WAL is flushed, whatever the DBA set for the role,
 * the database or the server. With synchronous_commit = off (a common tuning for ingest), COMMIT is
 * answered before the flush, and a crash of PostgreSQL (or of its machine) up to three times
 * wal_writer_delay later loses the transaction (PostgreSQL docs §30.4, "Asynchronous Commit"): the
 * distributor had acknowledged its messages and their devices deleted them on its receipt. Only
 * `off` is raised, to `on` (PostgreSQL's default): every other level flushes locally first, and a
 * stricter one (remote_apply) is kept. SET LOCAL (set_config's `true`): it ends with the transaction,
 * as behind a pooler it must. The functions named in pg_catalog (see rows.ts ts()).
 */
const DURABLE_COMMIT = "SELECT pg_catalog.set_config('synchronous_commit', 'on', true) WHERE pg_catalog.current_setting('synchronous_commit') = 'off'";

export function isRejection(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && REJECTING_CLASSES.has(code.slice(0, 2));
}

/**
 * The PostgreSQL sink (docs/postgres.md). Each write is one transaction (several past
 * LIMITS.postgresTransactionMaxBytes of rows, or past the smaller size kept after statement
 * timeouts: {@link PostgresSink.fitted}): per table, the batch's rows COPYed into a temporary
 * staging table, then one `INSERT … SELECT … ON CONFLICT (primary key) DO NOTHING` from it (rows.ts), so a
 * message delivered again writes nothing and each transaction is all or nothing.
 * The schema is made or migrated before the first write (and again after a failed attempt, or after
 * a write that found it gone), so the distributor starts while the database is still down, and the
 * first write waits for it like any other.
 */
export class PostgresSink implements PointSink {
  readonly description: string;
  private readonly pool: pg.Pool;
  private ready: Promise<void> | undefined;
  /** a write found a table missing: the next migration makes what is missing (schema.ts migrate) */
  private repair = false;
  private readonly statements = new Map<string, TableStatements>();
  /**
   * transactions: committed; rows: in them; timeouts: transactions past the statement timeout;
   * transactionMaxBytes: the most COPY text the next transaction carries (see {@link fitted}).
   */
  readonly stats = { transactions: 0, rows: 0, timeouts: 0, transactionMaxBytes: LIMITS.postgresTransactionMaxBytes };
  /** transactions committed in a row, each of at least half the size in force, since it last changed */
  private fitting = 0;

  constructor(
    private readonly connection: PostgresConnection,
    private readonly log: Logger,
    private readonly metrics?: PostgresSinkMetrics,
  ) {
    this.description = connection.description;
    metrics?.transactionMaxBytes.set(this.stats.transactionMaxBytes);
    // A statement past the timeout ends with SQLSTATE 57014, retried: set in each transaction
    // (SET LOCAL), as poolConfig says why.
    this.pool = createPool({
      ...poolConfig(connection),
      max: connection.poolSize,
      keepAlive: true,
      application_name: 'fieldstream-distributor',
    });
    // An idle connection the server closed (a restart) must not take the process down; the next
    // write opens a new one.
    this.pool.on('error', (err) => this.log.warn({ sqlstate: (err as { code?: string }).code, err: err.message }, 'PostgreSQL closed an idle connection'));
  }

  /**
   * One transaction per stats.transactionMaxBytes of COPY text (rows.ts toTransactions; at most
   * LIMITS.postgresTransactionMaxBytes), one after another. A transaction committed stays when a
   * later one fails: the write fails and is retried whole, and the rows already there are skipped
   * (ON CONFLICT DO NOTHING).
   */
  async write(points: readonly StoredPoint[]): Promise<void> {
    if (points.length === 0) return;
    const from = this.stats.transactionMaxBytes;
    const { transactions, unknown } = toTransactions(this.connection.schema, points, this.statements, from);
    if (unknown.length > 0) throw new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', `PostgreSQL has no table for measurement ${unknown[0]}`);
    await this.schemaReady();
    const seen = { timeouts: 0, shrunk: false };
    try {
      for (const batches of transactions) await this.fitted(batches, seen);
    } finally {
      // One line per write that lowered the size, however many halves it took.
      if (seen.shrunk) {
        this.log.warn(
          { code: 'DISTRIBUTOR_POSTGRES_TRANSACTION_SHRUNK', maxBytes: this.stats.transactionMaxBytes, previousMaxBytes: from, timeouts: seen.timeouts, timeoutMs: this.connection.timeoutMs },
          `PostgreSQL: ${seen.timeouts} transaction(s) past POSTGRES_TIMEOUT_MS (${this.connection.timeoutMs} ms) were written again in halves; transactions now carry at most ${this.stats.transactionMaxBytes} bytes of rows (was ${from}), growing back as they commit in time`,
        );
      }
    }
  }

  /**
   * A transaction, and when it is past the statement timeout (SQLSTATE 57014) its rows again in two
   * halves (rows.ts halves), each halved again while it times out, down to one row. A transaction
   * that always takes longer than POSTGRES_TIMEOUT_MS (a slow server, many indexes, a heavy trigger,
   * the backlog after an outage) was retried whole for ever, and nothing was written; halves commit.
   * Each half is a transaction like any other: one committed before a later one fails stays, the
   * write is retried whole, and its rows are skipped then (ON CONFLICT DO NOTHING).
   * One row alone past the timeout fails the write (DISTRIBUTOR_WRITE_FAILED, retried, never a dead
   * letter: the database is too slow, the data is not at fault).
   *
   * The size for the following transactions (stats.transactionMaxBytes) becomes half of one that
   * timed out, down to LIMITS.postgresTransactionMinBytes, and doubles again (up to
   * LIMITS.postgresTransactionMaxBytes) after LIMITS.postgresTransactionGrowAfter transactions in a
   * row commit within the timeout, each of at least half of it (a small one says nothing about it).
   *
   * Only the server's 57014 is halved: the client's own timeout (POSTGRES_TIMEOUT_MS past the
   * server's bound for the statements of the query, clientTimeoutMs) fires only when the server did
   * not answer even with that, a server gone or frozen, which halves would wait for again.
   */
  private async fitted(batches: readonly TableBatch[], seen: { timeouts: number; shrunk: boolean }): Promise<void> {
    const bytes = transactionBytes(batches);
    try {
      await this.transaction(batches);
    } catch (err) {
      if (!isFieldStreamError(err) || err.details?.sqlstate !== STATEMENT_TIMEOUT) throw err;
      this.stats.timeouts++;
      seen.timeouts++;
      this.metrics?.statementTimeouts.inc();
      this.fitting = 0;
      const rows = batches.reduce((n, b) => n + b.rows, 0);
      if (rows <= 1) {
        const table = batches[0]?.table;
        throw new FieldStreamError(
          'DISTRIBUTOR_WRITE_FAILED',
          `PostgreSQL: one row alone (${this.connection.schema}.${table}, ${bytes} bytes) is past POSTGRES_TIMEOUT_MS (${this.connection.timeoutMs} ms, SQLSTATE 57014) after its transaction was halved down to it: the database is too slow for it (its load, a trigger, its indexes); retried, never set aside`,
          { sqlstate: STATEMENT_TIMEOUT, table, rows, bytes },
          { cause: err },
        );
      }
      // Never up: a half of a transaction made before the size went down (by this write, or by
      // another one at the same time) may be larger than the size now.
      const smaller = Math.max(LIMITS.postgresTransactionMinBytes, Math.floor(bytes / 2));
      if (smaller < this.stats.transactionMaxBytes) {
        this.setLimit(smaller);
        seen.shrunk = true;
      }
      const [first, second] = halves(batches);
      await this.fitted(first, seen);
      await this.fitted(second, seen);
      return;
    }
    const limit = this.stats.transactionMaxBytes;
    if (limit < LIMITS.postgresTransactionMaxBytes && bytes * 2 >= limit && ++this.fitting >= LIMITS.postgresTransactionGrowAfter) {
      this.setLimit(Math.min(LIMITS.postgresTransactionMaxBytes, limit * 2));
    }
  }

  private setLimit(bytes: number): void {
    this.stats.transactionMaxBytes = bytes;
    this.fitting = 0;
    this.metrics?.transactionMaxBytes.set(bytes);
  }

  private async transaction(batches: readonly TableBatch[]): Promise<void> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw this.failure(err);
    }
    let broken: Error | undefined;
    try {
      // Two round trips and one per table: the staging tables made (a no-op once they exist on
      // this connection), each table's rows copied, then every INSERT and the COMMIT in one simple
      // query (a statement that fails ends it: the COMMIT after it is never run).
      await client.query(['BEGIN', `SET LOCAL statement_timeout = ${Math.trunc(this.connection.timeoutMs)}`, DURABLE_COMMIT, ...batches.map((b) => b.statements.stage)].join(';\n'));
      for (const b of batches) await pipeline(Readable.from([Buffer.from(b.text)]), client.query(copyFrom(b.statements.copy)));
      // The client waits as long as the server may take for each INSERT and the COMMIT, timed
      // apart (clientTimeoutMs): at twice POSTGRES_TIMEOUT_MS, a transaction of several tables
      // each within the timeout was given up here, without the 57014 that halves it (fitted).
      // (node-postgres reads query_timeout from a query's config too; its types leave it out.)
      const inserts: pg.QueryConfig & { query_timeout: number } = {
        text: [...batches.map((b) => b.statements.insert), 'COMMIT'].join(';\n'),
        query_timeout: clientTimeoutMs(this.connection.timeoutMs, batches.length + 1),
      };
      const results = await client.query(inserts);
      this.stats.transactions++;
      for (const b of batches) this.stats.rows += b.rows;
      await this.verify(client, batches, results as unknown as pg.QueryResult | pg.QueryResult[]);
    } catch (err) {
      // verify's refusal: the transaction is over and the connection in step.
      if (isFieldStreamError(err, 'DISTRIBUTOR_WRITE_REJECTED')) throw err;
      // The connection is not reused after a failure: it may be half-way through a transaction or dead.
      broken = err instanceof Error ? err : new Error(String(err));
      const sqlstate = (err as { code?: unknown } | null)?.code;
      if (typeof sqlstate === 'string' && SCHEMA_GONE.has(sqlstate)) {
        this.ready = undefined;
        this.repair = true;
        this.log.warn({ schema: this.connection.schema, sqlstate }, 'PostgreSQL: the schema or a table of it is gone; made again at the next attempt');
      }
      throw this.failure(err);
    } finally {
      client.release(broken);
    }
  }

  /**
   * Every row of a committed transaction is in its table, or the write is refused. An INSERT that
   * wrote fewer rows than were staged skipped some: copies of rows already there (a message
   * delivered again, as after every retry), or rows something the DBA added kept out without an
   * error: a BEFORE trigger returning NULL, a DO INSTEAD NOTHING rule. Those were answered written,
   * their messages acknowledged and receipted, and they were nowhere. So, and only then (a write
   * whose INSERTs wrote every row costs nothing more), the batch's keys are looked up; any missing
   * is DISTRIBUTOR_WRITE_REJECTED (writing it again gives the same answer): the write batcher
   * writes the batch again message by message, and only a message whose row is kept out becomes a
   * dead letter, replayable once the trigger or rule lets it in. The rows that are in stay: each
   * write again of them is skipped.
   */
  private async verify(client: pg.PoolClient, batches: readonly TableBatch[], results: pg.QueryResult | pg.QueryResult[]): Promise<void> {
    const answers = Array.isArray(results) ? results : [results];
    for (const [i, b] of batches.entries()) {
      const written = answers[i]?.rowCount;
      if (typeof written === 'number' && written >= b.rows) continue;
      const row = (await client.query(b.statements.verify, b.keys)).rows[0] as { missing?: unknown } | undefined;
      const missing = Number(row?.missing);
      if (missing === 0) continue;
      throw new FieldStreamError(
        'DISTRIBUTOR_WRITE_REJECTED',
        `PostgreSQL: ${Number.isNaN(missing) ? 'some' : missing} of ${b.rows} rows of ${this.connection.schema}.${b.table} answered written are not in the table: a trigger or a rule keeps them out`,
        { table: b.table, missing },
      );
    }
  }

  /** The schema migrated once per sink; a failed attempt is made again at the next write. */
  private schemaReady(): Promise<void> {
    this.ready ??= (async () => {
      const client = await this.pool.connect();
      let broken: Error | undefined;
      try {
        const repair = this.repair;
        const r = await migrate(client, this.connection.schema, this.log, this.connection.timeoutMs, repair);
        if (repair) this.repair = false;
        this.log.info({ schema: this.connection.schema, version: r.version, timescale: r.timescale, applied: r.applied }, 'PostgreSQL schema ready');
      } catch (err) {
        broken = err instanceof Error ? err : new Error(String(err));
        throw err;
      } finally {
        client.release(broken);
      }
    })().catch((err: unknown) => {
      this.ready = undefined;
      // Never a rejection, whatever the SQLSTATE: the schema is not the data's fault.
      throw isFieldStreamError(err) ? err : this.failure(err, 'cannot prepare the schema', 'DISTRIBUTOR_WRITE_FAILED');
    });
    return this.ready;
  }

  /** A coded error: rejected for data the server refuses, failed (retried) for anything else. */
  private failure(err: unknown, doing = 'write', code?: 'DISTRIBUTOR_WRITE_FAILED'): FieldStreamError {
    const e = err as { code?: string; message?: string };
    const sqlstate = typeof e.code === 'string' ? e.code : undefined;
    const text = `PostgreSQL: ${doing}: ${e.message ?? String(err)}`.slice(0, 500);
    return new FieldStreamError(code ?? (isRejection(err) ? 'DISTRIBUTOR_WRITE_REJECTED' : 'DISTRIBUTOR_WRITE_FAILED'), text, sqlstate ? { sqlstate } : {}, { cause: err });
  }

  async close(): Promise<void> {
    await this.ready?.catch(() => undefined);
    await this.pool.end();
  }
}
