import { crc32 } from 'node:zlib';

/**
 * One record on disk: [length u32 BE][crc32 of body u32 BE][body]. The checksum makes a torn or
 * corrupted write detectable: after a power cut the last record of a segment may be half there,
 * and it must be recognised as such rather than parsed.
 */
export const HEADER_BYTES = 8;
/** bytes: a record larger than this is corruption, not data (the largest message is a file chunk) */
export const MAX_RECORD_BYTES = 16 * 1024 * 1024;

/** A record of `body`, UTF-8 encoded straight into place. */
export function encodeRecord(body: string): Buffer {
  const length = Buffer.byteLength(body, 'utf8');
  const out = Buffer.allocUnsafe(HEADER_BYTES + length);
  out.write(body, HEADER_BYTES, 'utf8');
  out.writeUInt32BE(length, 0);
  out.writeUInt32BE(crc32(out.subarray(HEADER_BYTES)), 4);
  return out;
}

export type DecodeResult =
  | { kind: 'record'; body: Buffer; next: number }
  | { kind: 'incomplete' } // more bytes needed (or a torn tail at the end of the file)
  | { kind: 'corrupt'; reason: string };

/** Decodes the record starting at `offset` of `buf`. */
export function decodeRecord(buf: Buffer, offset: number): DecodeResult {
  if (buf.length - offset < HEADER_BYTES) return { kind: 'incomplete' };
  const length = buf.readUInt32BE(offset);
  if (length === 0 || length > MAX_RECORD_BYTES) return { kind: 'corrupt', reason: `impossible record length ${length}` };
  const end = offset + HEADER_BYTES + length;
  if (buf.length < end) return { kind: 'incomplete' };
  const body = buf.subarray(offset + HEADER_BYTES, end);
  if (crc32(body) !== buf.readUInt32BE(offset + 4)) return { kind: 'corrupt', reason: 'checksum mismatch' };
  return { kind: 'record', body, next: end };
}
