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

export interface QueuedMessage extends QueueItem {
  seq: number;
  /** `EPOCH.SEQ`: the queue's creation epoch and the sequence number, stable across restarts */
  messageId: string;
  /** epoch ms when it was accepted */
  acceptedAt: number;
}

/**
 * A record read back from a segment, checked rather than cast: an object with the fields the
 * sender reads, of their types; the payload stays unknown (it was checked when it was accepted,
 * and the record's CRC held since). This runs for every record the sender reads from disk, so it
 * is one predicate rather than a schema walk.
 * What is not a queued message comes back as `{ corrupt }` (FIELD_QUEUE_CORRUPT), as a record whose
 * CRC failed does from the segment reader.
 */
export function parseQueuedRecord(body: Buffer): QueuedMessage | { corrupt: string } {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch (err) {
    return { corrupt: `not JSON: ${(err as Error).message}` };
  }
  if (typeof v !== 'object' || v === null) return { corrupt: 'not a JSON object' };
  const m = v as Record<string, unknown>;
  if (!Number.isSafeInteger(m.seq) || typeof m.messageId !== 'string' || typeof m.dataType !== 'string' || !('payload' in m) || typeof m.acceptedAt !== 'number') {
    return { corrupt: 'not a queued message (seq, messageId, dataType, payload, acceptedAt)' };
  }
  return m as unknown as QueuedMessage;
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
  /** firstSeq - 1 while empty */
  lastSeq: number;
  path: string;
  /** bytes written (and, for the active segment, handed to the kernel) */
  bytes: number;
}

/** bytes of memory for records kept ahead of the send cursor, unless the options say otherwise */
export const TAIL_CACHE_BYTES = 8 * 1024 * 1024;
