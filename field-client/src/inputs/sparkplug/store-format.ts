import { z } from 'zod';
import { FIELD_NAME_PATTERN } from '../../../../shared/contract/primitives.ts';
import { LIMITS } from '../../../../shared/limits.ts';
import { definitions, type Definitions } from './definitions.ts';
import { SEQ_WINDOW } from './duplicates.ts';
import { nameDefinitions, type Unit } from './naming.ts';
import { DATA_TYPE_MAX } from './proto.ts';
import { isSparkplugId } from './topic.ts';

/**
 * What the session store (store.ts) writes, as zod reads it back: the files are the field client's
 * own, but a damaged disk, a restored backup or another hand may have changed them, so nothing in
 * them is taken past the bounds of what a birth or a session may hold in memory.
 */

const Id = z.string().refine(isSparkplugId, 'is not a Sparkplug id');
const Count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

/**
 * One declared metric: name, data type, the field its values went to (null: skipped), its alias (null:
 * none). The name as a birth may declare it (payload.ts), "" too: a file is read back whole or not at
 * all, and one refused for a name its birth was taken with lost every session of its edge node.
 */
const metricEntry = [z.string().max(LIMITS.sparkplugNameMaxChars), z.number().int().min(0).max(DATA_TYPE_MAX), z.string().regex(FIELD_NAME_PATTERN).nullable(), Count.nullable()] as const;
/**
 * Then, when a batch holding its values was in the queue unsaved while a birth renamed it (store.ts),
 * the field its values went to after it, and the seq of the last message of that batch (names.ts
 * Naming.later).
 */
export const MetricEntrySchema = z.union([
  z.tuple(metricEntry),
  z.tuple([...metricEntry, z.string().regex(FIELD_NAME_PATTERN).nullable(), z.number().int().min(0).max(255)]),
]);
export type MetricEntry = z.infer<typeof MetricEntrySchema>;
/** A birth declares at most LIMITS.sparkplugMaxMetrics metrics (payload.ts); the same name twice with two aliases is two entries. */
const MAX_ENTRIES = 2 * LIMITS.sparkplugMaxMetrics;
/**
 * One birth's metrics: an array of at most MAX_ENTRIES, taken as it is (not copied), each entry then
 * read with MetricEntrySchema, one at a time (store-births.ts metricsOf).
 */
export const MetricsShapeSchema = z.custom<unknown[]>((v) => Array.isArray(v) && v.length <= MAX_ENTRIES, { message: `must be an array of at most ${MAX_ENTRIES} metrics` });
/** One birth's metrics as a v1 births file holds them: read later, birth by birth (MetricsShapeSchema, MetricEntrySchema). */
const RawMetrics = MetricsShapeSchema;

/**
 * A birth's bdSeq as the host holds it (host-types.ts bdSeqOf): 0–255 in use, but an Int64's or a
 * UInt64's whole range is taken, rounded past 2^53 (an Int64 of -1, a UInt64 of 2^63). Read back as
 * Count, such a file was dropped whole at the restart, every session of its edge node with it.
 */
const BdSeq = z.number().refine((n) => Number.isInteger(n) && Math.abs(n) <= 2 ** 64, 'must be a 64-bit integer');

/**
 * A session's seq, stale flag, digests (base64 of SEQ_WINDOW × 4 bytes), end (null: it was current),
 * when its devices were recorded dead (NodeSession.diedAt; absent: not yet, or a file written before
 * it) and whether its death is still to come (previous.ts Previous.awaitsDeath: ended by a refused NBIRTH,
 * or current at a restart; absent, as in the files written before it: no, unless it was current),
 * with the bdSeq of the latest NBIRTH refused since (previous.ts Previous.refusedBdSeq; absent: none),
 * and that birth's payload timestamp (Previous.refusedAt; absent: none, or a file written before it),
 * on the one session that carries it (the one awaiting its death, else the one born last).
 */
export const RecordSessionSchema = z.object({
  id: Count,
  seq: z.number().int().min(0).max(255),
  stale: z.boolean(),
  digests: z.string().max(4 * Math.ceil((SEQ_WINDOW * 4) / 3)),
  endedAt: Count.nullable(),
  diedAt: Count.optional(),
  awaitsDeath: z.literal(true).optional(),
  refusedBdSeq: BdSeq.optional(),
  refusedAt: Count.optional(),
});
export type RecordSession = z.infer<typeof RecordSessionSchema>;
/** An edge node's sessions: its previous ones kept and its current one. */
const Record = z.array(RecordSessionSchema).max(LIMITS.sparkplugPreviousSessionsPerNode + 1);

export const JournalLineSchema = z.object({ gen: Count, group: Id, edge: Id, sessions: Record });

/** What both formats of a births file say of the file and of each session in it. */
const fileFields = { gen: Count, group: Id, edge: Id, record: Record };
const sessionFields = { id: Count, bdSeq: BdSeq, bornAt: Count.nullable(), birthDigest: Count.nullable() };

/**
 * A births file as the store writes it (v2, store.ts birthsPieces): this first line, then one line
 * a birth, each session's node then its devices (named here, in that order), each an array of MetricEntrySchema.
 */
export const BirthsHeadSchema = z.object({
  v: z.literal(2),
  ...fileFields,
  sessions: z.array(z.object({ ...sessionFields, devices: z.array(Id).max(LIMITS.sparkplugMaxDevicesPerNode) })).max(LIMITS.sparkplugPreviousSessionsPerNode + 1),
});
export type BirthsHead = z.infer<typeof BirthsHeadSchema>;

/**
 * A births file as the store wrote it before v2 (one JSON document), read back after an upgrade;
 * each birth's metrics still to be read (see RawMetrics).
 */
export const BirthsFileSchema = z.object({
  v: z.literal(1),
  ...fileFields,
  sessions: z
    .array(z.object({ ...sessionFields, node: RawMetrics, devices: z.array(z.tuple([Id, RawMetrics])).max(LIMITS.sparkplugMaxDevicesPerNode) }))
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
  // The last entry of a name wins, as a Map of them would (without the garbage of one a birth).
  for (const e of metrics) {
    const naming = defs.byName.get(e[0])?.naming;
    if (!naming) continue;
    naming.saved = e[2];
    naming.later = e.length === 6 ? { field: e[4], until: e[5] } : undefined;
  }
  return defs;
}
