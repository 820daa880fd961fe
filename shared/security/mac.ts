import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';

/**
 * What every end-to-end MAC of FieldStream has in common (device messages, commit receipts,
 * commands): HMAC-SHA256 under a device's key, carried as base64url without padding, and compared
 * in constant time, so a forger learns nothing from how long a refusal took.
 */
export const MacSchema = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be an HMAC-SHA256 in base64url (43 characters)');

export function hmacSha256(key: Buffer, text: string): Buffer {
  return createHmac('sha256', key).update(text).digest();
}

/** Whether `mac` (base64url) equals `expected`, in constant time. */
export function sameMac(mac: string, expected: Buffer): boolean {
  const got = Buffer.from(mac, 'base64url');
  return got.length === expected.length && timingSafeEqual(got, expected);
}
