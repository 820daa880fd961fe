import { parseQueuedRecord, type QueuedMessage, type Segment } from './queue-types.ts';
import { SegmentReader } from './segment-reader.ts';

/**
 * The records `isOpen` says are still held (not committed), oldest first, read back from disk
 * segment by segment (one chunk of one segment in memory at a time), from the segments `look`
 * picks. For the rare paths that need a record after it was sent, not per message.
 */
export function* readHeld(segments: readonly Segment[], isOpen: (seq: number) => boolean, look: (seg: Segment) => boolean): Generator<QueuedMessage> {
  for (const seg of segments) {
    if (!look(seg)) continue;
    /** the number the next record has, unless records were lost before it */
    let expect = seg.firstSeq;
    const reader = new SegmentReader(seg.path, 0, seg.bytes, () => expect);
    try {
      for (let r = reader.next(); r; r = reader.next()) {
        // A damaged record is stepped over where the ones after it can be found, as the sender
        // does (it logs them, and the queue forgets their numbers).
        if ('corrupt' in r) {
          if (r.end === undefined) break;
          reader.skip(r.end);
          continue;
        }
        const m = parseQueuedRecord(r.body);
        if ('corrupt' in m) continue;
        expect = m.seq + 1;
        if (isOpen(m.seq)) yield m;
      }
    } finally {
      reader.close();
    }
  }
}
