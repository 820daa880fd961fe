import { readdirSync, statSync, truncateSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../../shared/logger.ts';
import type { AckBook, SeqRanges } from './ack-book.ts';
import { QueueEpochs } from './queue-epochs.ts';
import { SEGMENT_RE } from './queue-files.ts';
import { parseQueuedRecord, type Segment } from './queue-types.ts';
import { SegmentReader } from './segment-reader.ts';

export interface Recovered {
  /** the segments left, oldest first */
  segments: Segment[];
  /** segments whose damaged tail was cut */
  corruptTails: number;
  /**
   * Numbers no record on disk holds any more, below the last one kept: damaged records stepped over
   * inside a segment, and what a damaged tail cut from a segment that is not the last. Nothing can
   * send or commit them, so the queue forgets them (AckBook: as committed), or its committed
   * watermark would stay below them for good: no segment after them ever deleted, the queue only
   * filling, and the receipt window closing once it is that far behind.
   */
  lost: SeqRanges;
  /**
   * Numbers between two segments that no damage explains: records refused after a failed fsync and
   * cut off (segment-syncs.ts, seal). Never answered to their producers, so nothing is lost; left
   * open they too would hold the watermark below them.
   */
  gaps: SeqRanges;
}

/**
 * Scans every segment: finds the last sequence number of each, steps over damaged bytes (a record
 * damaged on the medium, in its body or its length, or a span of garbage) to the next whole record
 * when one follows them (record-resync.ts), and cuts a torn or corrupt tail where the last good
 * record ends when none does (after a power cut the last record may be half written). Records are
 * numbered one after another within a segment, and a segment's file is named after its first
 * number, so what is missing is known without reading every record: only the record after a
 * damaged span, and the last one, are parsed.
 */
export function recoverSegments(dir: string, log: Logger): Recovered {
  const files = readdirSync(dir)
    .filter((f) => SEGMENT_RE.test(f))
    .sort();
  const segments: Segment[] = [];
  const lost: Array<[number, number]> = [];
  const gaps: Array<[number, number]> = [];
  let corruptTails = 0;
  for (const file of files) {
    const path = join(dir, file);
    const firstSeq = Number(SEGMENT_RE.exec(file)?.[1]);
    const seg: Segment = { firstSeq, lastSeq: firstSeq - 1, path, bytes: statSync(path).size };
    /** end of the last record whose checksum held */
    let good = 0;
    let last: { body: Buffer; start: number } | undefined;
    /**
     * The number of the next record, counted: records are numbered one after another, so only a
     * record after damaged bytes needs its number read (found by record-resync.ts, it is a queue
     * record by its schema).
     */
    let expect = firstSeq;
    const reader = new SegmentReader(path, 0, seg.bytes, () => expect);
    /** the damaged span stepped over since the last good record: where it starts, and why */
    let skipped: { at: number; reason: string } | undefined;
    let tail: string | undefined;
    for (;;) {
      const r = reader.next();
      if (r === undefined) break;
      if ('corrupt' in r) {
        if (r.end === undefined) {
          tail = r.corrupt; // nothing whole after it: a tail, cut below
          break;
        }
        skipped ??= { at: r.start, reason: r.corrupt };
        reader.skip(r.end);
        continue;
      }
      if (skipped) {
        // Damaged bytes with whole records after them: only the records they held are lost (none,
        // when they were garbage between two records), not what follows them.
        const from = expect;
        const to = (seqOf(r.body) ?? expect) - 1;
        if (to >= from) lost.push([from, to]);
        log.error(
          { code: 'FIELD_QUEUE_CORRUPT', segment: file, at: skipped.at, bytes: r.start - skipped.at, reason: skipped.reason, records: Math.max(0, to - from + 1), lostSeqs: to >= from ? [from, to] : [] },
          'damaged bytes in the middle of a queue segment: stepped over to the next whole record, the records after them kept',
        );
        skipped = undefined;
        expect = to + 1;
      }
      expect++;
      last = { body: r.body, start: r.start };
      good = reader.position;
    }
    reader.close();
    const cut = good < seg.bytes;
    if (cut) {
      corruptTails++;
      log.warn(
        { code: 'FIELD_QUEUE_CORRUPT', segment: file, at: good, lostBytes: seg.bytes - good, reason: tail ?? skipped?.reason },
        'damaged queue record (torn write?); the segment is cut where its last good record ends',
      );
    }
    // What follows: the next segment's first number bounds this one's.
    const following = files[files.indexOf(file) + 1];
    const nextFirst = following === undefined ? Infinity : Number(SEGMENT_RE.exec(following)?.[1]);
    const record = last ? parseQueuedRecord(last.body) : undefined;
    if (last && record !== undefined && 'corrupt' in record) {
      // The last record tells the segment's last number. One whose checksum held but that is not a
      // queue record (written by another build, or damage the checksum missed) is stepped over as
      // a damaged one is, its length being sound: it took the number counted for it, now lost
      // (unless that number is the next segment's: then it took none). Those in the middle of a
      // segment are not read here (each record would be parsed at every start) but by the sender,
      // which steps over them the same way.
      seg.lastSeq = Math.min(expect - 1, nextFirst - 1);
      const took = seg.lastSeq === expect - 1;
      if (took) lost.push([seg.lastSeq, seg.lastSeq]);
      log.error(
        { code: 'FIELD_QUEUE_CORRUPT', segment: file, at: last.start, bytes: good - last.start, reason: record.corrupt, records: took ? 1 : 0, lostSeqs: took ? [seg.lastSeq, seg.lastSeq] : [] },
        'a record whose checksum holds is not a queue record: stepped over, the records before it kept',
      );
    } else if (record !== undefined && !('corrupt' in record)) seg.lastSeq = record.seq;
    if (cut) {
      truncateSync(path, good);
      seg.bytes = good;
    }
    // What a cut tail held, up to the next segment's first number: lost. The last segment's are
    // not: they are numbered again (after an unclean stop, in a new epoch).
    if (following !== undefined && nextFirst - 1 > seg.lastSeq) (cut ? lost : gaps).push([seg.lastSeq + 1, nextFirst - 1]);
    if (seg.lastSeq < seg.firstSeq && following !== undefined) {
      unlinkSync(path); // an empty segment in the middle holds nothing
      continue;
    }
    segments.push(seg);
  }
  return { segments, corruptTails, lost, gaps };
}

/** The record's number, undefined when it is not a queue record by its schema. */
function seqOf(body: Buffer): number | undefined {
  const r = parseQueuedRecord(body);
  return 'corrupt' in r ? undefined : r.seq;
}

/** What recoverQueue needs of the queue (durable-queue.ts). */
export interface RecoveryHost {
  readonly o: { dir: string; log: Logger };
  readonly segments: Segment[];
  readonly stats: { corruptTails: number };
  readonly book: AckBook;
  /** the committed watermark ack.json holds */
  readonly mark: { readonly written: number };
  readonly commits: { forget(ranges: SeqRanges): void; deleteCommittedSegments(): void };
  /** sets the number the next message appended takes */
  numbered(nextSeq: number): void;
}

/**
 * At the queue's open: its segments recovered (recoverSegments), its committed watermark raised to
 * what they and the epochs show, the number the next message takes set, what is lost or was never
 * answered forgotten, and the segments left with no record held deleted.
 */
export function recoverQueue(q: RecoveryHost): void {
  const { segments, corruptTails, lost, gaps } = recoverSegments(q.o.dir, q.o.log);
  q.segments.push(...segments);
  q.stats.corruptTails += corruptTails;
  const last = segments[segments.length - 1];
  const first = segments[0];
  if (first) q.book.raiseWatermark(first.firstSeq - 1);
  // Never below the epochs meta.json names (QueueEpochs.committedFloor): ack.json lost or damaged.
  const floor = QueueEpochs.committedFloor(q.o.dir);
  if (floor > q.book.watermark) {
    q.o.log.info({ watermark: floor, fromAckFile: q.mark.written }, 'the committed watermark is raised to where the oldest epoch remembered begins: every number below it was committed');
    q.book.raiseWatermark(floor);
  }
  const nextSeq = Math.max(q.book.watermark + 1, last ? last.lastSeq + 1 : 1);
  q.numbered(nextSeq);
  q.commits.forget(lost);
  q.book.commitRanges(gaps, nextSeq);
  q.commits.deleteCommittedSegments();
}
