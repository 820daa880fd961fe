import { z } from 'zod';
import { FieldStreamError, isFieldStreamError } from '../../../shared/errors.ts';
import { LIMITS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { StoredPoint } from '../points.ts';
import type { PointSink } from './sink.ts';

/**
 * The type of each field as the database holds it, kept to by every later write.
 *
 * InfluxDB (1.x and 2.x: the TSM engine) fixes a field's type in each shard at the first write of it
 * there, and refuses every later value of another type in that shard (400, "field type conflict").
 * Every device writes into the same measurements (`readings`, `events`, `device_health`), so the
 * first value of a field in a new shard (each week, for the default retention policy) decides for
 * the whole fleet: one device that sends `"temperature": "hot"` just after a shard begins would have
 * every other device's temperature refused, and kept as dead letters, for the rest of that week.
 * A device need not be hostile for that; a firmware that got one value wrong is enough.
 *
 * So a field's type, once the database holds it, is the type its values keep: a point whose value is
 * of another type is refused here (DISTRIBUTOR_WRITE_REJECTED, before the database sees it: the write
 * batcher writes its batch again message by message, and only that device's message becomes a dead
 * letter), whichever shard it would open. The types are read from the database at the first write
 * (`SHOW FIELD KEYS`, InfluxDB 1.x, which answers for all shards) and learnt from each write the
 * database took, and from its refusals (which name the type the shard holds), of points dated now
 * (within LIMITS.fieldTypesLearnWindowMs): the shard being written. A point dated long ago is in an
 * old shard, which a device can open by back-dating a value of a field no one wrote there: learnt
 * from, its type would have every device's values refused in every shard.
 *
 * What is not guarded:
 * - a field the database does not hold yet: its first write still decides, as before (one written
 *   back-dated into an old shard before any other is, at the next start, the type SHOW FIELD KEYS
 *   reads: it cannot say which shard holds a type);
 * - a field the database already holds with more than one type (in different shards), or as an
 *   integer or unsigned (written by something else: every number FieldStream writes is a float):
 *   nothing is refused for it;
 * - past LIMITS.fieldTypesMaxEntries fields, further fields are not remembered (devices choose
 *   their field names: inventing them cannot grow the distributor's memory without bound).
 * To change a field's type, give the field a new name: InfluxDB itself keeps the old values in the
 * old type, and a query over both reads two fields.
 */

/** What FieldStream writes: every number as a float (line-protocol.ts), strings and booleans. */
export type FieldKind = 'float' | 'string' | 'boolean';
/** `mixed`: the database holds more than one type, or one FieldStream never writes: not guarded. */
type Known = FieldKind | 'mixed';

export interface FieldTypeRow {
  measurement: string;
  field: string;
  /** as InfluxDB names it: float, integer, unsigned, string, boolean */
  type: string;
}

/**
 * Reads the types the database holds; undefined where the store cannot tell (InfluxDB 2.x has no
 * InfluxQL without a DBRP mapping: its guard learns from writes alone).
 */
export type FieldTypeSource = () => Promise<FieldTypeRow[]>;

const kindOf = (v: unknown): FieldKind => (typeof v === 'number' ? 'float' : typeof v === 'boolean' ? 'boolean' : 'string');
/** Dated within LIMITS.fieldTypesLearnWindowMs of `now`: in the shard being written (or the next). */
const isRecent = (p: StoredPoint, now: number): boolean => Math.abs(p.time - now) <= LIMITS.fieldTypesLearnWindowMs;
const asKnown = (type: string): Known => (type === 'float' || type === 'string' || type === 'boolean' ? type : 'mixed');

/**
 * InfluxDB's refusal of a value of another type than the shard's, as 1.x and 2.x word it
 * (tsdb/shard.go): `input field "F" on measurement "M" is type T, already exists as type U`. The
 * quotes may come escaped, inside the JSON of its answer.
 */
const CONFLICT = /input field \\?"(.*?)\\?" on measurement \\?"(.*?)\\?" is type (\w+), already exists as type (\w+)/g;

export class FieldTypeGuard implements PointSink {
  readonly description: string;
  private readonly known = new Map<string, Map<string, Known>>();
  private entries = 0;
  private loaded = false;
  private loading: Promise<void> | undefined;
  private fullLogged = false;

  constructor(
    /** the store guarded */
    readonly inner: PointSink,
    private readonly log: Logger,
    private readonly source?: FieldTypeSource,
    private readonly maxEntries: number = LIMITS.fieldTypesMaxEntries,
  ) {
    this.description = inner.description;
  }

  async write(points: readonly StoredPoint[]): Promise<void> {
    if (points.length === 0) return;
    if (!this.loaded) await this.load();
    const unknown = this.check(points);
    try {
      await this.inner.write(points);
    } catch (err) {
      if (isFieldStreamError(err, 'DISTRIBUTOR_WRITE_REJECTED')) this.learnRefusal(err.message, points);
      throw err;
    }
    if (unknown) this.learn(points);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  /** How many fields' types are remembered (for tests and the log). */
  get size(): number {
    return this.entries;
  }

  /**
   * DISTRIBUTOR_WRITE_REJECTED for the first value whose type is not its field's; whether any field
   * was not known yet (the points are learnt from once written).
   */
  private check(points: readonly StoredPoint[]): boolean {
    let unknown = false;
    for (const p of points) {
      const fields = this.known.get(p.measurement);
      if (fields === undefined) {
        unknown = true;
        continue;
      }
      for (const key in p.fields) {
        const known = fields.get(key);
        if (known === undefined) {
          unknown = true;
          continue;
        }
        if (known === 'mixed') continue;
        const kind = kindOf(p.fields[key]);
        if (kind !== known) {
          throw new FieldStreamError(
            'DISTRIBUTOR_WRITE_REJECTED',
            `field type conflict: field ${JSON.stringify(key.slice(0, 200))} of measurement ${JSON.stringify(p.measurement.slice(0, 200))} is a ${kind} here, and the database holds it as a ${known}: refused before it could fix the type of a new shard for every device (give a value of another type a field name of its own)`,
          );
        }
      }
    }
    return unknown;
  }

  private learn(points: readonly StoredPoint[]): void {
    const now = Date.now();
    for (const p of points) {
      if (!isRecent(p, now)) continue;
      for (const key in p.fields) this.remember(p.measurement, key, kindOf(p.fields[key]), false);
    }
  }

  /**
   * The type a refusal names for a field of these points (and only of them: the text is the
   * database's), when each point that could be the refused one (its value of the type refused) is
   * dated now: a refusal in an old shard names that shard's type alone.
   */
  private learnRefusal(message: string, points: readonly StoredPoint[]): void {
    const now = Date.now();
    for (const m of message.matchAll(CONFLICT)) {
      const [, field, measurement, refused, existing] = m as unknown as [string, string, string, string, string];
      const candidates = points.filter((p) => p.measurement === measurement && Object.hasOwn(p.fields, field) && kindOf(p.fields[field]) === refused);
      if (candidates.length > 0 && candidates.every((p) => isRecent(p, now))) this.remember(measurement, field, asKnown(existing), false);
    }
  }

  /**
   * Remembers a field's type. `fromDatabase`: a second type of one field read from the database
   * (two shards disagree) makes it mixed; a type learnt from a write never replaces a known one.
   */
  private remember(measurement: string, field: string, kind: Known, fromDatabase: boolean): void {
    let fields = this.known.get(measurement);
    const known = fields?.get(field);
    if (known !== undefined) {
      if (fromDatabase && known !== kind) fields?.set(field, 'mixed');
      return;
    }
    if (this.entries >= this.maxEntries) {
      if (!this.fullLogged) {
        this.fullLogged = true;
        this.log.warn({ fields: this.entries }, 'the field types remembered reached LIMITS.fieldTypesMaxEntries: the types of further fields are not kept to');
      }
      return;
    }
    if (fields === undefined) this.known.set(measurement, (fields = new Map()));
    fields.set(field, kind);
    this.entries++;
  }

  /**
   * Reads the database's field types once, before the first write. A failure that a retry may mend
   * (unreachable) fails the write, to be retried with it; a refusal to answer (a user without READ
   * on the database) is logged once and the guard learns from writes alone.
   */
  private load(): Promise<void> {
    if (!this.source) {
      this.loaded = true;
      return Promise.resolve();
    }
    this.loading ??= this.source().then(
      (rows) => {
        for (const r of rows) this.remember(r.measurement, r.field, asKnown(r.type), true);
        this.loaded = true;
        this.log.info({ fields: this.entries }, 'field types read from the database');
      },
      (err: unknown) => {
        this.loading = undefined;
        if (isFieldStreamError(err, 'DISTRIBUTOR_WRITE_FAILED')) throw err;
        this.loaded = true;
        this.log.warn({ err }, 'cannot read the field types the database holds (SHOW FIELD KEYS; grant the user READ on the database): they are learnt from writes alone');
      },
    );
    return this.loading;
  }
}

/** InfluxDB 1.x's answer to `SHOW FIELD KEYS` (read back from the database: checked). */
export const ShowFieldKeysSchema = z.object({
  results: z.array(
    z.object({
      error: z.string().optional(),
      series: z
        .array(
          z.object({
            name: z.string(),
            columns: z.tuple([z.literal('fieldKey'), z.literal('fieldType')]),
            values: z.array(z.tuple([z.string(), z.string()])),
          }),
        )
        .optional(),
    }),
  ),
});

/** The rows of a `SHOW FIELD KEYS` answer; DISTRIBUTOR_WRITE_REJECTED-free: a malformed answer is the caller's to report. */
export function fieldTypeRows(answer: z.infer<typeof ShowFieldKeysSchema>): FieldTypeRow[] {
  const rows: FieldTypeRow[] = [];
  for (const result of answer.results) {
    for (const s of result.series ?? []) for (const [field, type] of s.values) rows.push({ measurement: s.name, field, type });
  }
  return rows;
}
