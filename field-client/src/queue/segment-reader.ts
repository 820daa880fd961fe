import { closeSync, openSync, readSync } from 'node:fs';
import { decodeRecord, HEADER_BYTES, MAX_RECORD_BYTES } from './record-codec.ts';
import { findNextRecord, resyncBudget } from './record-resync.ts';

/** bytes read from disk at a time */
const CHUNK_BYTES = 1024 * 1024;

/**
 * Reads records of one segment file sequentially with bounded memory (one chunk, or one record if
 * larger), from a byte offset up to a limit (the bytes known to be written).
 */
export class SegmentReader {
  private buf = Buffer.alloc(0);
  private bufStart: number;
  private readonly fd: number;
  /** what this pass over the segment may still spend searching past damaged records */
  private readonly budget = resyncBudget();

  constructor(
    path: string,
    private offset: number,
    /** the bytes known to be written when it was made: it reads no further */
    readonly limit: number,
    /**
     * The lowest number the next record may have (asked only when a record is damaged): a record
     * found past damaged bytes must have a number at or above it. Bytes exposed by a power cut at
     * a segment's end can be an old, deleted segment's (on file systems that do not zero what a
     * file grew into), records whole but long sent and committed: taken for this segment's, they
     * would put its numbers back.
     */
    private readonly minSeq: () => number,
  ) {
    this.fd = openSync(path, 'r');
    this.bufStart = offset;
  }

  /** Offset just past the last record returned. */
  get position(): number {
    return this.offset;
  }

  /**
   * The next record, undefined at the limit; `corrupt` describes a record that cannot be read, and
   * `end` is where the first whole record after it starts (or the limit, when the damaged record's
   * length leads exactly there), when there is one (see skip); without `end`, nothing whole
   * follows it in the segment: a torn tail.
   */
  next(): { body: Buffer; start: number } | undefined | { corrupt: string; start: number; end?: number } {
    if (this.offset >= this.limit) return undefined;
    for (;;) {
      const rel = this.offset - this.bufStart;
      const r = decodeRecord(this.buf, rel);
      if (r.kind === 'record') {
        const start = this.offset;
        this.offset = this.bufStart + r.next;
        return { body: r.body, start };
      }
      if (r.kind === 'corrupt') return this.damaged(r.reason, r.next === undefined ? undefined : this.bufStart + r.next);
      // incomplete: read more, keeping the unread tail
      const want = Math.max(CHUNK_BYTES, this.buf.length - rel >= HEADER_BYTES ? this.buf.readUInt32BE(rel) + HEADER_BYTES : 0);
      const readFrom = this.bufStart + this.buf.length;
      const toRead = Math.min(want, this.limit - readFrom, MAX_RECORD_BYTES + HEADER_BYTES);
      // Its length leads past the limit: torn (the last record), or a damaged length.
      if (toRead <= 0) return this.damaged('truncated record', undefined);
      const chunk = Buffer.allocUnsafe(toRead);
      const n = readSync(this.fd, chunk, 0, toRead, readFrom);
      if (n === 0) return this.damaged('truncated record', undefined);
      this.buf = Buffer.concat([this.buf.subarray(rel), chunk.subarray(0, n)]);
      this.bufStart = this.offset;
    }
  }

  /**
   * The damaged record at the offset, and where the next whole record starts if one does
   * (record-resync.ts): its own length is not believed. `claimedEnd`: where that length says it ends.
   */
  private damaged(reason: string, claimedEnd: number | undefined): { corrupt: string; start: number; end?: number } {
    const found = findNextRecord(this.fd, this.offset, claimedEnd, this.limit, this.budget, this.minSeq());
    if ('at' in found) return { corrupt: reason, start: this.offset, end: found.at };
    return { corrupt: `${reason}; ${found.none}`, start: this.offset };
  }

  /**
   * Steps over damaged bytes (`end` of next()'s answer) to the whole record found after them, so
   * that a record damaged on the medium, in its body or in its length, costs that record and not
   * the rest of the segment; each record after it is checked by its own checksum.
   */
  skip(end: number): void {
    // `end` may lie past the bytes held: read again from there.
    if (end > this.bufStart + this.buf.length || end < this.bufStart) {
      this.buf = Buffer.alloc(0);
      this.bufStart = end;
    }
    this.offset = end;
  }

  close(): void {
    closeSync(this.fd);
  }
}
