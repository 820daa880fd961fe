import type { Logger } from '../../../shared/logger.ts';
import { parseQueuedRecord, type OutgoingMessage, type Segment } from './queue-types.ts';
import { HEADER_BYTES } from './record-codec.ts';
import { SegmentReader } from './segment-reader.ts';
import { TailCache } from './tail-cache.ts';

type Cursor = { seg: Segment; pos: number; expect: number; damaged?: boolean; reader?: SegmentReader };

/** A reader from the cursor up to what is written now; a record found past damage is numbered `expect` or above. */
const readerAt = (cur: Cursor) => new SegmentReader(cur.seg.path, cur.pos, cur.seg.bytes, () => cur.expect);

/** Which records the sender still gets: the cursor asks it of every record it passes. */
export interface SendFilter {
  /** everything at or below it is gone: the cursor starts in the first segment past it */
  readonly watermark: number;
  /** true when the record is to be sent now (and is then counted as handed out); `bytes`: its body */
  take(seq: number, bytes: number): boolean;
}

/**
 * Where the sender reads next: a segment and a byte offset in it. Records come from the tail cache
 * when it holds the one at the cursor (a sender that keeps up never reads back from disk), else from
 * disk. While nobody reads (no cursor), nothing is kept in memory: for a client offline, holding
 * records until they are let go would cost the garbage collector, for nothing.
 */
export class SendCursor {
  /**
   * `expect`: the number of the record at `pos` (records are numbered one after another in a
   * segment); `damaged`: damaged bytes were stepped over to `pos`, so the numbers from `expect` up
   * to the next record read are lost (how many records the damage held is known only then).
   */
  private cursor: Cursor | undefined;
  /** while there is no cursor: the next one starts in the first segment holding this sequence number or later ones */
  private from = 0;
  /** the sequence number of the last record the cursor passed */
  private passed = 0;
  /** the newest records of the active segment, by their offset, oldest first */
  private readonly tail: TailCache;
  /**
   * Damaged bytes found in each segment: where they start, and where the cursor goes on (the next
   * whole record, or the end of what was written when they were found). Found once, logged once:
   * damage at the end of the active segment would otherwise be searched for and logged again at
   * each read from its start (each reconnect; each `next` while the records before it are unacked).
   */
  private readonly damage = new WeakMap<Segment, Map<number, number>>();

  constructor(
    private readonly segments: readonly Segment[],
    private readonly filter: SendFilter,
    tailCacheBytes: number,
    private readonly log: Logger,
    /** numbers whose records cannot be read (damaged on disk), inclusive: the queue forgets them */
    private readonly lost: (from: number, to: number) => void = () => undefined,
  ) {
    this.tail = new TailCache(tailCacheBytes);
  }

  /** Keeps records just written, while a sender reads (see OnWritten). */
  written(seg: Segment, start: number, sizes: readonly number[], messages: readonly OutgoingMessage[]): void {
    if (!this.cursor) return;
    for (let i = 0, at = start; i < sizes.length; at += sizes[i] as number, i++) {
      const length = sizes[i] as number;
      this.tail.add(seg, { start: at, end: at + length, bytes: length - HEADER_BYTES, message: messages[i] as OutgoingMessage });
    }
  }

  /**
   * The next messages the filter takes, in order, at most `max` of them and about `maxBytes`. Only
   * what is written is returned.
   */
  next(max: number, maxBytes: number): OutgoingMessage[] {
    const out: OutgoingMessage[] = [];
    let bytes = 0;
    while (out.length < max && bytes < maxBytes) {
      if (!this.cursor) {
        const from = Math.max(this.filter.watermark + 1, this.from);
        const seg = this.segments.find((s) => s.lastSeq >= from);
        if (!seg) break;
        this.cursor = { seg, pos: 0, expect: seg.firstSeq };
        this.from = 0;
      }
      const cur = this.cursor;
      const cached = this.tail.take(cur.seg, cur.pos);
      let m: OutgoingMessage;
      let size: number;
      const known = this.damage.get(cur.seg)?.get(cur.pos);
      if (cached) {
        // Passed once: a resend after a reconnect reads from disk.
        cur.pos = cached.end;
        m = cached.message;
        size = cached.bytes;
      } else if (known !== undefined) {
        // Damaged bytes found (and logged) before: stepped over again without a search.
        cur.damaged = true;
        cur.pos = known;
        continue;
      } else {
        const r = this.readAtCursor();
        if (r === undefined) {
          // Damage stepped over to the end of the segment: its numbers after it are lost.
          if (cur.damaged) this.lostThrough(cur, cur.seg.lastSeq);
          const following = this.segments[this.segments.indexOf(cur.seg) + 1];
          if (!following) break; // caught up with the writer
          this.close();
          this.cursor = { seg: following, pos: 0, expect: following.firstSeq };
          continue;
        }
        if ('corrupt' in r) {
          // Damaged bytes: stepped over to the first whole record after them (record-resync.ts),
          // or, with none, to the end of what is written in the segment, where the writer appends
          // (in the active segment) and the records after them are read, each checked by its own
          // checksum. Their numbers, up to the next record read or the segment's last, are lost.
          // Remembered, so that reading here again (after a reconnect) steps over them unlogged.
          const end = r.end ?? cur.seg.bytes;
          this.log.error(
            { code: 'FIELD_QUEUE_CORRUPT', segment: cur.seg.path, at: cur.pos, bytes: end - cur.pos, seq: cur.expect, reason: r.corrupt },
            r.end !== undefined
              ? 'damaged bytes in a queue segment: stepped over to the next whole record, and the records they held lost; the records after them are read'
              : cur.seg === this.segments.at(-1)
                ? 'damaged bytes at the end of the queue segment being written: the records they held are lost; records written after them are read'
                : 'damaged bytes in a queue segment, and no whole record after them: the rest of the segment is lost',
          );
          this.remember(cur.seg, cur.pos, end);
          cur.damaged = true;
          cur.reader?.skip(end);
          cur.pos = end;
          continue;
        }
        size = r.body.length;
        const stored = parseQueuedRecord(r.body);
        if ('corrupt' in stored) {
          // Its checksum held but it is not a queue record (another build's, or damage the
          // checksum missed): the cursor is past it already (its length is sound).
          this.steppedOver(cur, r.start, stored.corrupt);
          continue;
        }
        m = { seq: stored.seq, messageId: stored.messageId, dataType: stored.dataType, payloadJson: JSON.stringify(stored.payload), acceptedAt: stored.acceptedAt };
      }
      if (cur.damaged) this.lostThrough(cur, m.seq - 1);
      this.passed = m.seq;
      cur.expect = m.seq + 1;
      if (!this.filter.take(m.seq, size)) continue;
      out.push(m);
      bytes += size;
    }
    return out;
  }

  private remember(seg: Segment, start: number, end: number): void {
    let spans = this.damage.get(seg);
    if (!spans) this.damage.set(seg, (spans = new Map()));
    spans.set(start, end);
  }

  /** The numbers of the damaged records stepped over, from the one expected there up to `to`, are lost. */
  private lostThrough(cur: Cursor, to: number): void {
    if (to >= cur.expect) this.lost(cur.expect, to);
    cur.expect = to + 1;
    cur.damaged = false;
  }

  /**
   * A record that is not a queue record, stepped over (the cursor is past it): the numbers up to
   * the next record read are lost, as after damaged bytes. Usually that is the one expected there;
   * none when the record took no number (put between two records), so the next one is not taken
   * for lost.
   */
  private steppedOver(cur: Cursor, at: number, reason: string): void {
    this.log.error({ code: 'FIELD_QUEUE_CORRUPT', segment: cur.seg.path, at, seq: cur.expect, reason }, 'unreadable queue record: stepped over; the records after it are read');
    this.remember(cur.seg, at, cur.pos);
    cur.damaged = true;
  }

  /**
   * The record at the cursor, read from disk, up to what is written now. The reader is renewed
   * when the cursor moved without it (records taken from the tail cache) or when the segment grew
   * past what the reader was made for.
   */
  private readAtCursor(): ReturnType<SegmentReader['next']> {
    const cur = this.cursor as Cursor;
    const durable = cur.seg.bytes;
    if (cur.pos >= durable) return undefined;
    if (cur.reader && cur.reader.position !== cur.pos) {
      cur.reader.close();
      cur.reader = undefined;
    }
    cur.reader ??= readerAt(cur);
    let r = cur.reader.next();
    // At the end of what the reader was made for, or damage with nothing whole after it there:
    // the segment may have grown since, and what was appended is to be read (or searched).
    if (r === undefined || ('corrupt' in r && r.end === undefined && cur.reader.limit < durable)) {
      cur.reader.close();
      cur.reader = readerAt(cur);
      r = cur.reader.next();
    }
    if (r !== undefined && !('corrupt' in r)) cur.pos = cur.reader.position;
    return r;
  }

  /** Lets go of the segment `seg` (about to be deleted) if the cursor is in it. */
  leave(seg: Segment): void {
    if (this.cursor?.seg === seg) this.close();
  }

  /** Starts again from the first segment past the filter's watermark at the next `next`. */
  close(): void {
    this.cursor?.reader?.close();
    this.cursor = undefined;
    this.from = 0;
  }

  /**
   * Goes back so that `seq` is read again (from disk): the next `next` starts in its segment. The
   * records passed again on the way are the filter's to skip.
   */
  goBackTo(seq: number): void {
    if (this.cursor && seq > this.passed) return; // not reached yet: it will be read on the way
    const from = this.cursor ? seq : Math.min(this.from, seq);
    this.close();
    this.from = from;
  }
}
