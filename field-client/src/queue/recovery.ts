import { readdirSync, statSync, truncateSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { FieldStreamError } from '../../../shared/errors.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { SeqRanges } from './ack-book.ts';
import { SEGMENT_RE } from './queue-files.ts';
import type { Segment } from './queue-types.ts';
import { SegmentReader } from './segment-reader.ts';

/** Only the sequence number of a record is needed at recovery, and only of a few. */
const RecordSeq = z.object({ seq: z.number().int().positive() });

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
 * number, so what is missing is known without reading every record: only the records on both
 * sides of a damaged span are parsed.
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
    const seqOf = (body: Buffer) => recordSeq(body, path);
    /** end of the last record whose checksum held */
    let good = 0;
    let lastBody: Buffer | undefined;
    const reader = new SegmentReader(path, 0, seg.bytes, () => (lastBody ? seqOf(lastBody) + 1 : firstSeq));
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
        const from = lastBody ? seqOf(lastBody) + 1 : firstSeq;
        const to = seqOf(r.body) - 1;
        if (to >= from) lost.push([from, to]);
        log.error(
          { code: 'FIELD_QUEUE_CORRUPT', segment: file, at: skipped.at, bytes: r.start - skipped.at, reason: skipped.reason, records: Math.max(0, to - from + 1), lostSeqs: to >= from ? [from, to] : [] },
          'damaged bytes in the middle of a queue segment: stepped over to the next whole record, the records after them kept',
        );
        skipped = undefined;
      }
      lastBody = r.body; // only the last record's sequence number is needed: parse just that one
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
    // its checksum held, so a record of another shape was written so: nothing to cut, a defect to report
    if (lastBody) seg.lastSeq = seqOf(lastBody);
    if (cut) {
      truncateSync(path, good);
      seg.bytes = good;
    }
    // What a cut tail held, up to the next segment's first number: lost. The last segment's are
    // not: they are numbered again (after an unclean stop, in a new epoch).
    const following = files[files.indexOf(file) + 1];
    if (following !== undefined) {
      const nextFirst = Number(SEGMENT_RE.exec(following)?.[1]);
      if (nextFirst - 1 > seg.lastSeq) (cut ? lost : gaps).push([seg.lastSeq + 1, nextFirst - 1]);
    }
    if (seg.lastSeq < seg.firstSeq && following !== undefined) {
      unlinkSync(path); // an empty segment in the middle holds nothing
      continue;
    }
    segments.push(seg);
  }
  return { segments, corruptTails, lost, gaps };
}

function recordSeq(body: Buffer, path: string): number {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new FieldStreamError('FIELD_QUEUE_CORRUPT', `A record of ${path} is not JSON: ${(err as Error).message}`);
  }
  const r = RecordSeq.safeParse(json);
  if (!r.success) throw new FieldStreamError('FIELD_QUEUE_CORRUPT', `A record of ${path} has no sequence number: ${r.error.message}`);
  return r.data.seq;
}
