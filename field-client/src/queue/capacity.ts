import { rmSync } from 'node:fs';
import type { Logger } from '../../../shared/logger.ts';
import type { FullPolicy, Segment } from './queue-types.ts';

/** What the capacity rule needs of the queue. */
export interface CapacityHost {
  readonly segments: Segment[];
  activeSegment(): Segment | undefined;
  bytesOnDisk(): number;
  /** forgets the records of a dropped segment; returns how many of them were not yet safe (lost) */
  dropRecords(seg: Segment): number;
  /** called once after drops, so the new watermark is persisted; never throws (the write is advisory: WatermarkWriter.write) */
  dropped(): void;
}

/**
 * The queue's bound on disk: true when `size` more bytes fit. Under drop-oldest, the oldest
 * segments (never the active one) are deleted first to make room, and what they held that was not
 * yet committed (unsent, in flight or awaiting its receipt) is counted as dropped and logged; none
 * is when dropping them all would not make the room.
 */
export function makeRoom(host: CapacityHost, o: { maxBytes: number; fullPolicy: FullPolicy; log: Logger }, size: number, stats: { dropped: number }): boolean {
  if (host.bytesOnDisk() + size <= o.maxBytes) return true;
  if (o.fullPolicy === 'reject') return false;
  // What can never fit, even with every segment but the active one dropped (an HTTP upload announcing
  // more than FIELD_QUEUE_MAX_BYTES), drops nothing: refused after the drops, it cost the device
  // its whole backlog for a refusal.
  const active = host.activeSegment();
  let droppable = 0;
  for (const seg of host.segments) if (seg !== active) droppable += seg.bytes;
  if (host.bytesOnDisk() - droppable + size > o.maxBytes) return false;
  let droppedNow = 0;
  try {
    while (host.bytesOnDisk() + size > o.maxBytes) {
      const oldest = host.segments[0];
      if (!oldest || oldest === host.activeSegment()) break;
      droppedNow += host.dropRecords(oldest);
      // Deleted before it leaves the list: a segment the disk would not delete stays counted, and
      // is tried again (its records dropped already; one gone meanwhile is no failure).
      rmSync(oldest.path, { force: true });
      host.segments.shift();
    }
  } finally {
    // Also when a deletion failed (thrown on): the records dropped are gone from the queue's
    // bookkeeping, so they are counted and logged.
    if (droppedNow > 0) {
      stats.dropped += droppedNow;
      o.log.warn({ code: 'FIELD_QUEUE_DROPPED_OLDEST', droppedNow, droppedTotal: stats.dropped }, 'queue full: dropped the oldest messages not yet committed');
      host.dropped();
    }
  }
  return host.bytesOnDisk() + size <= o.maxBytes;
}
