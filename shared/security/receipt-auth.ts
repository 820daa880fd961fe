import { z } from 'zod';
import { LIMITS } from '../limits.ts';
import { hmacSha256, sameMac } from './mac.ts';

/**
 * Commit receipts: the distributor's word to a device that some of its messages are durable on the
 * internal network (written to the database or file storage, or finally refused into the
 * dead-letter folder), so the device may delete them. A receipt travels through the DMZ, which must
 * not be able to forge one: a forged receipt would make a device delete data that was never stored.
 * So it is authenticated with the device's own key, which only the device and the internal
 * network's key registry hold (shared/security/message-auth.ts says the same of uplink messages):
 *
 *   mac = HMAC-SHA256(key, "fieldstream-receipt-v1" \n deviceId \n epoch \n from-to,from-to,...)
 *
 * - epoch: what the device's sequence numbers are counted in (its queue's epoch, or a file
 *   transfer's id), exactly as the device signed it in its messages' `auth`.
 * - ranges: inclusive, ascending, not overlapping and not touching, so one set of sequence numbers
 *   has one encoding and the MAC input is unambiguous (every field before it is free of newlines).
 * - The prefix separates receipts from every other use of the same key: no uplink MAC, whose input
 *   starts "fieldstream-auth-", can be passed off as a receipt, nor a receipt as a message.
 *
 * A genuine receipt replayed later names sequence numbers the device has already let go of; the
 * device deletes nothing for it and counts it (a sequence number is never reused within an epoch).
 */
export const RECEIPT_AUTH_VERSION = 1;

const Seq = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/** Inclusive ranges of sequence numbers, in their one canonical form. */
export const SeqRangesSchema = z
  .array(z.tuple([Seq, Seq]))
  .min(1)
  .max(LIMITS.receiptMaxRanges)
  .refine((ranges) => ranges.every(([from, to], i) => from <= to && (i === 0 || from > (ranges[i - 1] as [number, number])[1] + 1)), {
    message: 'ranges must be ascending, each from ≤ to, neither overlapping nor touching',
  });
export type SeqRanges = z.infer<typeof SeqRangesSchema>;

export const EpochSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/);


/** Sequence numbers (any order, repeats allowed) as canonical ranges. */
export function toRanges(seqs: Iterable<number>): SeqRanges {
  const sorted = Float64Array.from(seqs).sort();
  const ranges: SeqRanges = [];
  let current: [number, number] | undefined;
  for (const seq of sorted) {
    if (current && seq <= current[1] + 1) current[1] = Math.max(current[1], seq);
    else ranges.push((current = [seq, seq]));
  }
  return ranges;
}

/** How many sequence numbers the ranges hold. */
export function rangesSize(ranges: SeqRanges): number {
  let n = 0;
  for (const [from, to] of ranges) n += to - from + 1;
  return n;
}

function receiptMac(key: Buffer, deviceId: string, epoch: string, ranges: SeqRanges): Buffer {
  const text = `fieldstream-receipt-v${RECEIPT_AUTH_VERSION}\n${deviceId}\n${epoch}\n${ranges.map(([from, to]) => `${from}-${to}`).join(',')}`;
  return hmacSha256(key, text);
}

export function signReceipt(key: Buffer, deviceId: string, epoch: string, ranges: SeqRanges): string {
  return receiptMac(key, deviceId, epoch, ranges).toString('base64url');
}

/** Constant-time check of a receipt's MAC under the device's key. */
export function verifyReceipt(key: Buffer, deviceId: string, epoch: string, ranges: SeqRanges, mac: string): boolean {
  return sameMac(mac, receiptMac(key, deviceId, epoch, ranges));
}
