import { closeSync, openSync, readSync } from 'node:fs';
import { decodeRecord, HEADER_BYTES, MAX_RECORD_BYTES } from './record-codec.ts';

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

  constructor(
    path: string,
    private offset: number,
    private readonly limit: number,
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
   * `end` is where the record after it starts when only its checksum failed (see skip).
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
      if (r.kind === 'corrupt') return { corrupt: r.reason, start: this.offset, ...(r.next === undefined ? {} : { end: this.bufStart + r.next }) };
      // incomplete: read more, keeping the unread tail
      const want = Math.max(CHUNK_BYTES, this.buf.length - rel >= HEADER_BYTES ? this.buf.readUInt32BE(rel) + HEADER_BYTES : 0);
      const readFrom = this.bufStart + this.buf.length;
      const toRead = Math.min(want, this.limit - readFrom, MAX_RECORD_BYTES + HEADER_BYTES);
      if (toRead <= 0) return { corrupt: 'truncated record', start: this.offset };
      const chunk = Buffer.allocUnsafe(toRead);
      const n = readSync(this.fd, chunk, 0, toRead, readFrom);
      if (n === 0) return { corrupt: 'truncated record', start: this.offset };
      this.buf = Buffer.concat([this.buf.subarray(rel), chunk.subarray(0, n)]);
      this.bufStart = this.offset;
    }
  }

  /**
   * Steps over a record whose checksum failed (`end` of next()'s answer): its length was plausible
   * and its bytes all there, so the records after it can still be found and checked, each by its
   * own checksum. A bit flipped on the medium then costs that record, not the rest of the segment.
   */
  skip(end: number): void {
    this.offset = end;
  }

  close(): void {
    closeSync(this.fd);
  }
}
