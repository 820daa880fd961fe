import { COMMAND_RESPONSE_STATUSES } from '../../shared/contract/payloads.ts';
import { LIMITS } from '../../shared/limits.ts';
import type { InfluxSettings } from '../shared/influx-settings.ts';
import { InfluxQlReader, quoteIdent, quoteString, type InfluxQlSeries } from '../shared/influxql.ts';
import { RESPONSE_COMMAND_FIELD, RESPONSE_COMMAND_TAG_BEFORE } from '../distributor/points.ts';
import { storedResult, type ResponseLedger, type StoredResponse, type Wanted } from './stored-responses.ts';

type Status = (typeof COMMAND_RESPONSE_STATUSES)[number];
/** The statuses that end a command, in no order: the earliest stored one is taken. */
const FINAL: readonly Status[] = ['completed', 'failed', 'rejected'];

/**
 * A rejection that only says a copy of the command was refused (FIELD_COMMAND_REPLAYED: the device
 * answered the id before) is no answer. An RE2 regular expression on the JSON text of the result.
 */
const NOT_A_REPLAY = `"result" !~ /"code"\\s*:\\s*"FIELD_COMMAND_REPLAYED"/`;

/**
 * The command's id in a point: the field the distributor writes, or the tag of points written
 * before it (points.ts RESPONSE_COMMAND_FIELD). Named differently, so each is meant without
 * `::field` / `::tag`, and one condition matches either; tested on a real InfluxDB 1.x.
 */
const ID_FIELD = quoteIdent(RESPONSE_COMMAND_FIELD);
const ID_TAG_BEFORE = quoteIdent(RESPONSE_COMMAND_TAG_BEFORE);

/** The connection settings the command API reads InfluxDB with: the distributor's. */
export type InfluxConnection = Omit<InfluxSettings, 'TIMESERIES_LOCAL_PATH'> & { INFLUXDB_URL: string };

/**
 * The responses in InfluxDB's `command_responses` (docs/operations.md), through InfluxQL's /query,
 * read only (a GET, which InfluxDB takes for SELECT and SHOW only): InfluxDB 1.x (INFLUXDB_DATABASE,
 * with a user and password if set), or 2.x through its 1.x compatibility API (INFLUXDB_TOKEN; the
 * database is INFLUXDB_DATABASE, the name a DBRP mapping gives the bucket, else the bucket's own,
 * mapped automatically since 2.1), as the console's history reads it.
 *
 * Whether the device signed a response is the point's field `signed`, which the distributor writes
 * (points.ts responsePoints): for a command of a device with a key only a point with `signed = true`
 * counts. A point written before that field existed has none, and counts only for a device without
 * a key (COMMAND_ALLOW_UNSIGNED): InfluxDB cannot say whether the device signed it.
 *
 * The command's id is the field `cmd_id` in points this version's distributor writes, the tag
 * `command_id` in points earlier ones wrote (a series per command: points.ts responsePoints); both
 * are read, no migration needed.
 *
 * Two steps, so that memory stays small whatever the devices answered (a result may be 64 KiB):
 * which (command, status) have a response, LIMITS.commandReconcileInfluxBatch commands a statement
 * (two: the distinct ids of the field per device and status, and the old points' series counted);
 * then the earliest response of each status that says most, one at a time, old and new points
 * alike. Every id is a quoted string literal, never part of the statement's structure.
 */
export class InfluxResponses implements ResponseLedger {
  private readonly reader: InfluxQlReader;

  constructor(s: InfluxConnection) {
    this.reader = new InfluxQlReader(s, 'API_RESPONSES_UNREADABLE');
  }

  get description(): string {
    return this.reader.description;
  }

  async find(commands: readonly Wanted[]): Promise<StoredResponse[]> {
    const out: StoredResponse[] = [];
    for (let i = 0; i < commands.length; i += LIMITS.commandReconcileInfluxBatch) {
      const batch = commands.slice(i, i + LIMITS.commandReconcileInfluxBatch);
      const present = new Map<string, Set<Status>>();
      const add = (commandId: unknown, device: string | undefined, status: string | undefined) => {
        // A status this version does not know (added later): not taken.
        if (typeof commandId !== 'string' || device === undefined || !isStatus(status)) return;
        const key = `${commandId}\u0000${device}`;
        let statuses = present.get(key);
        if (!statuses) present.set(key, (statuses = new Set()));
        statuses.add(status);
      };
      for (const signedOnly of [true, false]) {
        const group = batch.filter((c) => c.signedOnly === signedOnly);
        if (group.length === 0) continue;
        const signed = signedOnly ? ' AND "signed" = true' : '';
        // Points of this version: the id is a field, which GROUP BY cannot take. Its distinct values
        // in each (device, status) are at most the group's ids.
        const byField = group.map((c) => `(${ID_FIELD} = ${quoteString(c.commandId)} AND "device" = ${quoteString(c.deviceId)})`).join(' OR ');
        for (const s of await this.query(`SELECT distinct(${ID_FIELD}) FROM "command_responses" WHERE (${byField})${signed} GROUP BY "device", "status"`)) {
          const column = s.columns.indexOf('distinct');
          for (const row of s.values ?? []) add(row[column], s.tags?.device, s.tags?.status);
        }
        // Points written before: the id is a tag.
        const byTag = group.map((c) => `(${ID_TAG_BEFORE} = ${quoteString(c.commandId)} AND "device" = ${quoteString(c.deviceId)})`).join(' OR ');
        for (const s of await this.query(`SELECT count("result") FROM "command_responses" WHERE (${byTag})${signed} GROUP BY ${ID_TAG_BEFORE}, "device", "status"`)) {
          add(s.tags?.[RESPONSE_COMMAND_TAG_BEFORE], s.tags?.device, s.tags?.status);
        }
      }
      for (const c of batch) {
        const statuses = present.get(`${c.commandId}\u0000${c.deviceId}`);
        if (!statuses) continue;
        // A final answer before an acceptance; of two final ones (a device answers once: a copy
        // refused as a replay is not one), the earliest.
        let best: { time: number; status: Status; result: unknown } | undefined;
        for (const status of FINAL) {
          if (!statuses.has(status)) continue;
          const found = await this.earliest(c, status);
          if (found && (!best || found.time < best.time)) best = { ...found, status };
        }
        if (!best && statuses.has('accepted')) {
          const found = await this.earliest(c, 'accepted');
          if (found) best = { ...found, status: 'accepted' };
        }
        if (best) out.push({ commandId: c.commandId, deviceId: c.deviceId, status: best.status, result: best.result });
      }
    }
    return out;
  }

  async close(): Promise<void> {
    // Nothing held open: each look-up is a request of its own.
  }

  /** The earliest response of `c` with `status` that counts (signed where it must be), with its result. */
  private async earliest(c: Wanted, status: Status): Promise<{ time: number; result: unknown } | undefined> {
    const q =
      `SELECT "result", "result_type" FROM "command_responses" WHERE (${ID_FIELD} = ${quoteString(c.commandId)} OR ${ID_TAG_BEFORE} = ${quoteString(c.commandId)}) AND "device" = ${quoteString(c.deviceId)} ` +
      `AND "status" = ${quoteString(status)}${c.signedOnly ? ' AND "signed" = true' : ''}${status === 'rejected' ? ` AND ${NOT_A_REPLAY}` : ''} LIMIT 1`;
    const [s] = await this.query(q);
    const row = s?.values?.[0];
    if (!s || !row) return undefined;
    const time = row[s.columns.indexOf('time')];
    const result = row[s.columns.indexOf('result')];
    // null, or no column at all, on points written before the distributor wrote it.
    const type = s.columns.includes('result_type') ? row[s.columns.indexOf('result_type')] : undefined;
    if (typeof time !== 'number' || typeof result !== 'string') return undefined;
    return { time, result: storedResult(result, typeof type === 'string' ? type : undefined) };
  }

  /** The series of the statement's answer (none while the distributor has written no response); API_RESPONSES_UNREADABLE on any failure. */
  private query(q: string): Promise<InfluxQlSeries> {
    return this.reader.query(q);
  }
}

function isStatus(s: string | undefined): s is Status {
  return (COMMAND_RESPONSE_STATUSES as readonly string[]).includes(s ?? '');
}
