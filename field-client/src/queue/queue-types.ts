import { z } from 'zod';
import { SeqSchema } from '../../../shared/contract/primitives.ts';
import type { Logger } from '../../../shared/logger.ts';

/** What a producer hands the queue. */
export interface QueueItem {
  dataType: string;
  payload: unknown;
}

/** A message as the sender gets it: its payload as the JSON text that was queued. */
export interface OutgoingMessage {
  seq: number;
  messageId: string;
  dataType: string;
  payloadJson: string;
  acceptedAt: number;
}

/**
 * A record of the queue as it is on disk: the fields the sender reads, of their types; the payload
 * stays unknown (it was checked when it was accepted, and the record's CRC held since). Compiled
 * (zod's `z.compile`): every record the sender reads from disk is checked, and the compiled check
 * costs no more than the hand-written predicate it replaced (measured: JSON.parse is the cost).
 */
export const QueuedRecordSchema = z.compile(
  z.object({
    seq: SeqSchema,
    /** `EPOCH.SEQ`: the queue's creation epoch and the sequence number, stable across restarts */
    messageId: z.string(),
    dataType: z.string(),
    // JSON has no undefined: absent is what this refuses.
    payload: z.unknown().refine((v): boolean => v !== undefined, 'is missing'),
    /** epoch ms when it was accepted */
    acceptedAt: z.number(),
  }),
  { strict: true },
);
export type QueuedMessage = z.infer<typeof QueuedRecordSchema>;

/**
 * A record read back from a segment, checked rather than cast. What is not a queued message comes
 * back as `{ corrupt }` (FIELD_QUEUE_CORRUPT), as a record whose CRC failed does from the segment
 * reader.
 */
export function parseQueuedRecord(body: Buffer): QueuedMessage | { corrupt: string } {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch (err) {
    return { corrupt: `not JSON: ${(err as Error).message}` };
  }
  const r = QueuedRecordSchema.safeParse(v);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  return { corrupt: `not a queued message: ${issue?.path.join('.') || '(record)'}: ${issue?.message ?? 'invalid'}` };
}

export type SyncPolicy = { mode: 'always' } | { mode: 'interval'; ms: number };
export type FullPolicy = 'reject' | 'drop-oldest';

export interface QueueOptions {
  dir: string;
  /** bytes on disk, all segments */
  maxBytes: number;
  /** bytes per segment file */
  segmentBytes: number;
  fullPolicy: FullPolicy;
  sync: SyncPolicy;
  /** bytes of memory for records kept ahead of the sender (default TAIL_CACHE_BYTES) */
  tailCacheBytes?: number;
  /**
   * true: a record is deleted only by a commit receipt (commit/commitRanges); the gateway's ack
   * only says it reached the DMZ broker. false (default): the ack deletes it.
   */
  receipts?: boolean;
  log: Logger;
}

/** One segment file: records firstSeq..lastSeq, one after another. */
export interface Segment {
  firstSeq: number;
  /**
   * firstSeq - 1 while empty. The last number given in it: records refused after a failed fsync
   * and cut off its end keep their numbers here (segment-syncs.ts), so the next segment starts
   * after them.
   */
  lastSeq: number;
  path: string;
  /** bytes written (and, for the active segment, handed to the kernel) */
  bytes: number;
}

/** bytes of memory for records kept ahead of the send cursor, unless the options say otherwise */
export const TAIL_CACHE_BYTES = 8 * 1024 * 1024;
