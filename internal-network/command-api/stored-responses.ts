import pg from 'pg';
import { z } from 'zod';
import { COMMAND_RESPONSE_STATUSES, CommandResultSchema } from '../../shared/contract/payloads.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { poolConfig, type PostgresConnection } from '../shared/postgres-settings.ts';
import { readWithin } from '../shared/postgres-read.ts';
import { createPool } from '../shared/postgres-pool.ts';

/** A device's response to a command as the distributor stored it. */
export interface StoredResponse {
  commandId: string;
  deviceId: string;
  status: (typeof COMMAND_RESPONSE_STATUSES)[number];
  /** as the device gave it (as far as a row written before `result_type` tells: {@link storedResult}) */
  result: unknown;
}

/** A command to look up: its device, and whether only a response the device signed counts. */
export interface Wanted {
  commandId: string;
  deviceId: string;
  /**
   * true: only a response the device signed (the distributor checked it under the device's
   * registered key before it wrote it; its key is `s:epoch:seq`, points.ts uplinkKey). An unsigned
   * one is in the database too when the distributor does not require signatures
   * (DISTRIBUTOR_REQUIRE_SIGNATURES=false), and may be the DMZ's forgery.
   */
  signedOnly: boolean;
}

/**
 * Where the command API looks up responses it may have missed: the responses the distributor wrote
 * to the database. The internal broker keeps a device's response for the command API's persistent
 * session, but only in memory until its next autosave (mosquitto.conf autosave_interval): a broker
 * killed meanwhile, the command API offline, lost it, while the distributor's copy was written and
 * its receipt let the device delete its own. Read only.
 */
export interface ResponseLedger {
  readonly description: string;
  /**
   * For each command, the response that says most: a final one (completed, failed, rejected) before
   * an acceptance, the earliest of them; none for a command without one. A rejection of a copy
   * (FIELD_COMMAND_REPLAYED: the device answered the id before) is no answer.
   */
  find(commands: readonly Wanted[]): Promise<StoredResponse[]>;
  close(): Promise<void>;
}

/**
 * SQLSTATEs that mean "nothing written yet" (PostgreSQL docs, Appendix A): 42P01 undefined table,
 * 3F000 invalid schema name. The distributor makes its schema at its first write.
 */
const NOT_YET_WRITTEN = new Set(['42P01', '3F000']);

const FoundSchema = z.object({ command_id: z.string(), device: z.string(), status: z.enum(COMMAND_RESPONSE_STATUSES), message_key: z.string() });
const ResultSchema = z.object({ result: z.string(), result_type: z.string().nullable() });

/**
 * The responses in PostgreSQL's `command_responses` (docs/postgres.md). Two steps, so that memory
 * stays small whatever the devices answered (a result may be megabytes): which commands have a
 * response, LIMITS.commandReconcileBatch commands a statement, one row each; then the result of
 * each found, one at a time. The ids go as parameters, never into the statement's text.
 */
export class PostgresResponses implements ResponseLedger {
  readonly description: string;
  private readonly pool: pg.Pool;
  private readonly timeoutMs: number;
  private readonly findSql: string;
  private readonly resultSql: string;

  constructor(c: PostgresConnection) {
    this.description = c.description;
    this.timeoutMs = c.timeoutMs;
    // The schema name is a checked lower-case identifier (postgres-settings.ts): safe unquoted.
    const t = `${c.schema}.command_responses`;
    this.findSql =
      `SELECT DISTINCT ON (r.command_id, r.device) r.command_id, r.device, r.status, r.message_key ` +
      `FROM ${t} r JOIN unnest($1::text[], $2::text[], $3::boolean[]) AS w(command_id, device, signed_only) ` +
      `ON r.command_id = w.command_id AND r.device = w.device ` +
      `WHERE (NOT w.signed_only OR left(r.message_key, 2) = 's:') ` +
      `AND NOT (r.status = 'rejected' AND r.result ~ '"code"\\s*:\\s*"FIELD_COMMAND_REPLAYED"') ` +
      `ORDER BY r.command_id, r.device, r.status = 'accepted', r.time`;
    // result_type read through the row's JSON: null where the column is not there yet (a database a
    // distributor older than schema version 3 writes), rather than an error that stops every look-up.
    this.resultSql = `SELECT r.result, to_jsonb(r) ->> 'result_type' AS result_type FROM ${t} r WHERE r.command_id = $1 AND r.device = $2 AND r.message_key = $3 AND r.status = $4 LIMIT 1`;
    this.pool = createPool({
      ...poolConfig(c),
      // One look-up at a time (reconciler.ts): one connection, let go when idle.
      max: 1,
      idleTimeoutMillis: 10_000,
      allowExitOnIdle: true,
      application_name: 'fieldstream-command-api',
    });
    // A connection the server closed while idle (a restart) is replaced at the next query.
    this.pool.on('error', () => undefined);
  }

  async find(commands: readonly Wanted[]): Promise<StoredResponse[]> {
    const out: StoredResponse[] = [];
    for (let i = 0; i < commands.length; i += LIMITS.commandReconcileBatch) {
      const batch = commands.slice(i, i + LIMITS.commandReconcileBatch);
      const found = await this.query(this.findSql, [batch.map((c) => c.commandId), batch.map((c) => c.deviceId), batch.map((c) => c.signedOnly)]);
      if (found === undefined) return out;
      for (const row of found) {
        const f = FoundSchema.safeParse(row);
        // A row this version does not know (a status added later): not taken.
        if (!f.success) continue;
        const [r] = (await this.query(this.resultSql, [f.data.command_id, f.data.device, f.data.message_key, f.data.status])) ?? [];
        const result = ResultSchema.safeParse(r);
        if (!result.success) continue;
        out.push({ commandId: f.data.command_id, deviceId: f.data.device, status: f.data.status, result: storedResult(result.data.result, result.data.result_type) });
      }
    }
    return out;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  /** The rows, undefined while the distributor has not made its tables, API_RESPONSES_UNREADABLE on any other failure. */
  private async query(sql: string, params: unknown[]): Promise<unknown[] | undefined> {
    try {
      return await readWithin(this.pool, this.timeoutMs, sql, params);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'string' && NOT_YET_WRITTEN.has(code)) return undefined;
      throw new FieldStreamError('API_RESPONSES_UNREADABLE', `${this.description}: ${typeof code === 'string' ? `SQLSTATE ${code} ` : ''}${(err as Error).message.slice(0, 200)}`);
    }
  }
}

/**
 * A result as the database holds it back as the device gave it. The distributor writes a string as
 * it is, any other value as its JSON, and no result as '' (points.ts resultFields), and says which
 * in `result_type` (`string`, `json`, `none`). Rows written before `result_type` existed have none:
 * then '' is none, the JSON of an object or an array is that value (unless it is no result a device
 * can give: then the device gave that text, a string), and anything else is the string
 * (a number or a boolean the device gave comes back as its text: `result` alone cannot tell 42 from
 * "42").
 */
export function storedResult(text: string, type?: string | null): unknown {
  if (type === 'string') return text;
  if (type === 'none') return undefined;
  const legacy = type !== 'json';
  if (legacy) {
    // Written before result_type (or with a type this version does not know).
    if (text === '') return undefined;
    if (!text.startsWith('{') && !text.startsWith('[')) return text;
  }
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch {
    return text;
  }
  // An old row's text that spells no result (nested too deep, a "__proto__" key, too many values)
  // was the device's string: no device's result is such a value.
  return legacy && !CommandResultSchema.safeParse(value).success ? text : value;
}
