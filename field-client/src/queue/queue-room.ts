import { FieldStreamError } from '../../../shared/errors.ts';
import type { AckBook } from './ack-book.ts';
import { makeRoom, type CapacityHost } from './capacity.ts';
import type { QueuedMessage, QueueOptions, Segment } from './queue-types.ts';
import type { SendCursor } from './send-cursor.ts';
import type { WatermarkWriter } from './watermark-writer.ts';

/** What the queue's room needs of the queue (durable-queue.ts). */
export interface RoomHost {
  readonly o: QueueOptions;
  readonly segments: Segment[];
  readonly book: AckBook;
  readonly cursor: SendCursor;
  readonly mark: WatermarkWriter;
  readonly stats: { dropped: number };
  activeSegment(): Segment | undefined;
  /** the bytes of the segments, with what is pending write (DurableQueue.bytesOnDisk) */
  bytesOnDisk(): number;
  /** the records not committed in the segments `look` picks, read back from disk (held-records.ts) */
  held(look: (seg: Segment) => boolean): Iterable<QueuedMessage>;
}

/**
 * The room of the queue on disk (capacity.ts): what counts against maxBytes besides the segments
 * (DurableQueue.shareCapacity), who is told of the records drop-oldest drops (DurableQueue.onDrop),
 * and what a segment dropped takes with it.
 */
export class QueueRoom {
  /** bytes held elsewhere that count against maxBytes too (see DurableQueue.shareCapacity) */
  sharedBytes: () => number = () => 0;
  /** told of the records drop-oldest drops (see DurableQueue.onDrop) */
  dropListener: ((dropped: QueuedMessage[]) => void) | undefined;
  /** what the capacity rule needs of the queue */
  readonly capacity: CapacityHost;

  constructor(private readonly h: RoomHost) {
    this.capacity = {
      segments: h.segments,
      activeSegment: () => h.activeSegment(),
      // What the capacity rule bounds: the segments and what shares their limit.
      bytesOnDisk: () => h.bytesOnDisk() + this.sharedBytes(),
      dropRecords: (seg) => {
        // Read before they are forgotten (the segment is deleted next): only with a listener.
        const dropped = this.dropListener ? [...h.held((s) => s === seg)] : [];
        const lost = h.book.dropThrough(seg.firstSeq, seg.lastSeq);
        if (dropped.length > 0) this.dropListener?.(dropped);
        h.cursor.leave(seg);
        return lost;
      },
      dropped: () => h.mark.write(),
    };
  }

  /** Room for `bytes` more held outside the segments (DurableQueue.makeRoomFor). */
  makeRoomFor(bytes: number): boolean {
    try {
      return makeRoom(this.capacity, this.h.o, bytes, this.h.stats);
    } catch (err) {
      throw new FieldStreamError('FIELD_QUEUE_WRITE_FAILED', `The queue could not delete its oldest segment to make room: ${(err as Error).message}`, {}, { cause: err });
    }
  }
}
