import { readdirSync, statSync, truncateSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { FieldStreamError } from '../../../shared/errors.ts';
import type { Logger } from '../../../shared/logger.ts';
import { SEGMENT_RE } from './queue-files.ts';
import type { Segment } from './queue-types.ts';
import { SegmentReader } from './segment-reader.ts';

/** Only the sequence number of a segment's last record is needed at recovery. */
const RecordSeq = z.object({ seq: z.number().int().positive() });

export interface Recovered {
  /** the segments left, oldest first */
  segments: Segment[];
  /** segments whose damaged tail was cut */
  corruptTails: number;
}

/**
 * Scans every segment: finds the last sequence number of each and cuts a torn or corrupt tail
 * where the last good record ends (after a power cut the last record may be half written).
 */
export function recoverSegments(dir: string, log: Logger): Recovered {
  const files = readdirSync(dir)
    .filter((f) => SEGMENT_RE.test(f))
    .sort();
  const segments: Segment[] = [];
  let corruptTails = 0;
  for (const file of files) {
    const path = join(dir, file);
    const firstSeq = Number(SEGMENT_RE.exec(file)?.[1]);
    const seg: Segment = { firstSeq, lastSeq: firstSeq - 1, path, bytes: statSync(path).size };
    const reader = new SegmentReader(path, 0, seg.bytes);
    let good = 0;
    let lastBody: Buffer | undefined;
    for (;;) {
      const r = reader.next();
      if (r === undefined) break;
      if ('corrupt' in r) {
        corruptTails++;
        log.warn(
          { code: 'FIELD_QUEUE_CORRUPT', segment: file, at: r.start, lostBytes: seg.bytes - r.start, reason: r.corrupt },
          'damaged queue record (torn write?); the segment is cut where its last good record ends',
        );
        break;
      }
      lastBody = r.body; // only the last record's sequence number is needed: parse just that one
      good = reader.position;
    }
    reader.close();
    if (lastBody) {
      // its checksum held, so a record of another shape was written so: nothing to cut, a defect to report
      const last = RecordSeq.safeParse(JSON.parse(lastBody.toString('utf8')));
      if (!last.success) throw new FieldStreamError('FIELD_QUEUE_CORRUPT', `The last record of ${path} has no sequence number: ${last.error.message}`);
      seg.lastSeq = last.data.seq;
    }
    if (good < seg.bytes) {
      truncateSync(path, good);
      seg.bytes = good;
    }
    if (seg.lastSeq < seg.firstSeq && file !== files[files.length - 1]) {
      unlinkSync(path); // an empty segment in the middle holds nothing
      continue;
    }
    segments.push(seg);
  }
  return { segments, corruptTails };
}
