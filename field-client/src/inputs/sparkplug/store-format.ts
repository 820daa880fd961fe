import { z } from 'zod';
import { FIELD_NAME_PATTERN } from '../../../../shared/contract/primitives.ts';
import { LIMITS } from '../../../../shared/limits.ts';
import { definitions, type Definitions } from './definitions.ts';
import { SEQ_WINDOW } from './duplicates.ts';
import { nameDefinitions, type Unit } from './names.ts';
import { DATA_TYPE_MAX } from './proto.ts';
import { isSparkplugId } from './topic.ts';

/**
 * What the session store (store.ts) writes, as zod reads it back: the files are the field client's
 * own, but a damaged disk, a restored backup or another hand may have changed them, so nothing in
 * them is taken past the bounds of what a birth or a session may hold in memory.
 */

const Id = z.string().refine(isSparkplugId, 'is not a Sparkplug id');
const Count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

/** One declared metric: name, data type, the field its values went to (null: skipped), its alias (null: none). */
const MetricEntrySchema = z.tuple([
  z.string().min(1).max(LIMITS.sparkplugNameMaxChars),
  z.number().int().min(0).max(DATA_TYPE_MAX),
  z.string().regex(FIELD_NAME_PATTERN).nullable(),
  Count.nullable(),
]);
export type MetricEntry = z.infer<typeof MetricEntrySchema>;
/** A birth declares at most LIMITS.sparkplugMaxMetrics metrics (payload.ts); the same name twice with two aliases is two entries. */
const Metrics = z.array(MetricEntrySchema).max(2 * LIMITS.sparkplugMaxMetrics);

/** A session's seq, stale flag, digests (base64 of SEQ_WINDOW × 4 bytes) and end (null: it was current). */
export const RecordSessionSchema = z.object({
  id: Count,
  seq: z.number().int().min(0).max(255),
  stale: z.boolean(),
  digests: z.string().max(4 * Math.ceil((SEQ_WINDOW * 4) / 3)),
  endedAt: Count.nullable(),
});
export type RecordSession = z.infer<typeof RecordSessionSchema>;
/** An edge node's sessions: its previous ones kept and its current one. */
const Record = z.array(RecordSessionSchema).max(LIMITS.sparkplugPreviousSessionsPerNode + 1);

export const JournalLineSchema = z.object({ gen: Count, group: Id, edge: Id, sessions: Record });

export const BirthsFileSchema = z.object({
  v: z.literal(1),
  gen: Count,
  group: Id,
  edge: Id,
  record: Record,
  sessions: z
    .array(
      z.object({
        id: Count,
        bdSeq: Count,
        bornAt: Count.nullable(),
        birthDigest: Count.nullable(),
        node: Metrics,
        devices: z.array(z.tuple([Id, Metrics])).max(LIMITS.sparkplugMaxDevicesPerNode),
      }),
    )
    .max(LIMITS.sparkplugPreviousSessionsPerNode + 1),
});

/**
 * A birth's definitions from its saved metrics, named as at its birth (names.ts), each metric's
 * values going to the field saved for it (Naming.saved): a message of its session sent again after
 * the restart lands in the fields it would have before. Throws (SPARKPLUG_PAYLOAD_INVALID) for
 * definitions no birth could have declared (an alias given to two names).
 */
export function rebuild(metrics: readonly MetricEntry[], unit: Unit): Definitions {
  const defs = definitions(metrics.map(([name, datatype, , alias]) => ({ name, datatype, alias: alias ?? undefined })));
  nameDefinitions(defs, unit);
  const fields = new Map(metrics.map(([name, , field]) => [name, field]));
  for (const def of defs.byName.values()) if (def.naming) def.naming.saved = fields.get(def.name) ?? null;
  return defs;
}
