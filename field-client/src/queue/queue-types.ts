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
