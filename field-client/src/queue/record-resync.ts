import { crc32 } from 'node:zlib';
import { readUpToSync } from '../../../shared/durable-fs.ts';
import { LIMITS } from '../../../shared/limits.ts';
import { parseQueuedRecord } from './queue-types.ts';
import { HEADER_BYTES, MAX_RECORD_BYTES } from './record-codec.ts';

/**
 * Finding records again after a damaged one. A record whose checksum fails may be damaged in its
 * length as well as in its body, and a damaged length leads anywhere: into the middle of a later
 * record, past the end of the segment, or nowhere (0, over 16 MiB). Trusted, it would have every
 * record after it taken for a torn tail and lost, though each of them is whole and was accepted
 * from its producer. So the damaged record's length is not believed at all: the bytes after its
 * start are searched for the first place where a whole record starts (a plausible length, its
 * body within the segment, its checksum right, the body a queue record by its schema, and its
 * number not below the one expected there: see SegmentReader's minSeq). A
 * damaged body with a true length is found again at its true end that way too, and a length that
 * happens to lead onto a later whole record does not cost the records before it.
 *
 * The search is bounded whatever the bytes are:
 * - it reads the rest of the segment once, in chunks, and finds candidate places with a native
 *   search for `{"`, the start of every record's body (compact JSON of an object with keys), then
 *   checks the 4-byte length 8 bytes before it: linear in the bytes searched, O(1) per candidate;
 * - a candidate with a plausible length then costs a read of its body's last byte, which must be
 *   `}`; at most LIMITS.queueResyncProbesMax of those per pass over a segment;
 * - only then is a checksum computed, over at most LIMITS.queueResyncCrcMaxBytes in all per pass
 *   over a segment (ResyncBudget), however many damaged spans the segment holds.
 * Records' JSON holds no candidates (its bytes are all printable, so no length read in it is
 * under 16 MiB) and random bytes hold one in 16 MiB, so in practice a search costs one read of the
 * damaged span and the checksum of the record after it. Past either bound the search gives up:
 * the rest of the segment is then treated as a torn tail, as before there was a search.
 */

/** `{"`: how every record's body starts */
const BODY_START = Buffer.from('{"', 'latin1');
const BODY_END = 0x7d; // `}`
/** bytes searched at a time */
const SCAN_CHUNK_BYTES = 1024 * 1024;

/** What one pass over a segment may still spend on searching past damaged records. */
export interface ResyncBudget {
  probes: number;
  crcBytes: number;
}

export function resyncBudget(): ResyncBudget {
  return { probes: LIMITS.queueResyncProbesMax, crcBytes: LIMITS.queueResyncCrcMaxBytes };
}

/** `at`: where the first whole record after the damaged one starts; else why none was found */
export type Resync = { at: number } | { none: string };

/**
 * The first place after `start` (a damaged record, or garbage) and before `limit` where a whole
 * record numbered `minSeq` or above starts, in the segment open as `fd`. `claimedEnd`: where the
 * damaged record's own length says it ends, when that is plausible; when nothing whole is found
 * before it and it is `limit`, the damaged record was the last one and the segment ends there.
 */
export function findNextRecord(fd: number, start: number, claimedEnd: number | undefined, limit: number, budget: ResyncBudget, minSeq: number): Resync {
  // Where the next chunk starts: a candidate's header is 8 bytes before its `{"`.
  let from = start + 1;
  while (from + HEADER_BYTES + BODY_START.length <= limit) {
    const chunk = readUpToSync(fd, from, Math.min(SCAN_CHUNK_BYTES, limit - from));
    if (chunk.length < HEADER_BYTES + BODY_START.length) break; // the file is shorter than it was
    for (let i = chunk.indexOf(BODY_START, HEADER_BYTES); i >= 0; i = chunk.indexOf(BODY_START, i + 1)) {
      const at = from + i - HEADER_BYTES;
      const r = wholeRecordAt(fd, chunk, i - HEADER_BYTES, at, limit, budget, minSeq);
      if (r === true) return { at };
      if (r !== false) return { none: r };
    }
    // A `{"` across the chunk's end: the next chunk starts so that it holds it and its header.
    from += chunk.length - HEADER_BYTES - 1;
  }
  if (claimedEnd === limit) return { at: limit };
  return { none: 'no whole record after it in the segment' };
}

/**
 * Whether a whole record starts at `at` (its header at `rel` of `chunk`, followed by `{"`): true,
 * false, or why the search gives up (its budget is spent).
 */
function wholeRecordAt(fd: number, chunk: Buffer, rel: number, at: number, limit: number, budget: ResyncBudget, minSeq: number): boolean | string {
  const length = chunk.readUInt32BE(rel);
  const bodyAt = at + HEADER_BYTES;
  if (length < BODY_START.length + 1 || length > MAX_RECORD_BYTES || bodyAt + length > limit) return false;
  if (budget.probes <= 0) return `gave up the search after ${LIMITS.queueResyncProbesMax} places that looked like records`;
  budget.probes--;
  const lastRel = rel + HEADER_BYTES + length - 1;
  const last = lastRel < chunk.length ? chunk[lastRel] : readUpToSync(fd, bodyAt + length - 1, 1)[0];
  if (last !== BODY_END) return false;
  if (budget.crcBytes < length) return `gave up the search after ${LIMITS.queueResyncCrcMaxBytes} bytes of checksums of places that looked like records`;
  budget.crcBytes -= length;
  const body = lastRel < chunk.length ? chunk.subarray(rel + HEADER_BYTES, lastRel + 1) : readUpToSync(fd, bodyAt, length);
  if (body.length !== length || crc32(body) !== chunk.readUInt32BE(rel + 4)) return false;
  const record = parseQueuedRecord(body);
  return !('corrupt' in record) && record.seq >= minSeq;
}
