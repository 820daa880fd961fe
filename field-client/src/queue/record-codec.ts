import { crc32 } from 'node:zlib';

/**
 * One record on disk: [length u32 BE][crc32 of body u32 BE][body]. The checksum makes a torn or
 * corrupted write detectable: after a power cut the last record of a segment may be half there,
 * and it must be recognised as such rather than parsed.
 */
export const HEADER_BYTES = 8;
/** bytes: a record larger than this is corruption, not data (the largest message is a file chunk) */
export const MAX_RECORD_BYTES = 16 * 1024 * 1024;

/** bytes of the record of `body` */
export function recordBytes(body: string): number {
  return HEADER_BYTES + Buffer.byteLength(body, 'utf8');
}

/** Writes the record of `body` into `out` at `offset` (recordBytes(body) bytes), UTF-8 encoded in place. */
export function encodeRecordInto(out: Buffer, offset: number, body: string): void {
  const length = out.write(body, offset + HEADER_BYTES, 'utf8');
  out.writeUInt32BE(length, offset);
  out.writeUInt32BE(crc32(out.subarray(offset + HEADER_BYTES, offset + HEADER_BYTES + length)), offset + 4);
}

/** A record of `body`. */
export function encodeRecord(body: string): Buffer {
  const out = Buffer.allocUnsafe(recordBytes(body));
  encodeRecordInto(out, 0, body);
  return out;
}

export type DecodeResult =
  | { kind: 'record'; body: Buffer; next: number }
  | { kind: 'incomplete' } // more bytes needed (or a torn tail at the end of the file)
  /** `next`: where the following record starts, when this one's length is plausible and all its bytes are there (only its checksum failed) */
  | { kind: 'corrupt'; reason: string; next?: number };

/** Decodes the record starting at `offset` of `buf`. */
export function decodeRecord(buf: Buffer, offset: number): DecodeResult {
  if (buf.length - offset < HEADER_BYTES) return { kind: 'incomplete' };
  const length = buf.readUInt32BE(offset);
  if (length === 0 || length > MAX_RECORD_BYTES) return { kind: 'corrupt', reason: `impossible record length ${length}` };
  const end = offset + HEADER_BYTES + length;
  if (buf.length < end) return { kind: 'incomplete' };
  const body = buf.subarray(offset + HEADER_BYTES, end);
  if (crc32(body) !== buf.readUInt32BE(offset + 4)) return { kind: 'corrupt', reason: 'checksum mismatch', next: end };
  return { kind: 'record', body, next: end };
}
