import { createHmac, timingSafeEqual } from 'node:crypto';
import { predicate } from '../contract/primitives.ts';

/**
 * What every end-to-end MAC of FieldStream has in common (device messages, commit receipts,
 * commands): HMAC-SHA256 under a device's key, carried as base64url without padding, and compared
 * in constant time, so a forger learns nothing from how long a refusal took.
 */
// 32 bytes are 256 bits: 42 characters of 6 bits and a last one whose low 2 bits are padding and
// must be zero (RFC 4648 §3.5), so that one MAC has exactly one spelling.
const MAC_PATTERN = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;
export const MacSchema = predicate<string>((v) => typeof v === 'string' && MAC_PATTERN.test(v), 'must be an HMAC-SHA256 in canonical base64url (43 characters)');

export function hmacSha256(key: Buffer, text: string): Buffer {
  return createHmac('sha256', key).update(text).digest();
}

/**
 * Whether `mac` is `expected` in canonical base64url, in constant time. The text is compared, not
 * the decoded bytes: decoding ignores the padding bits of the last character, so four spellings of
 * one MAC would otherwise pass, and a MAC that can be re-spelt cannot serve as an identity.
 */
export function sameMac(mac: string, expected: Buffer): boolean {
  const got = Buffer.from(mac, 'latin1');
  const want = Buffer.from(expected.toString('base64url'), 'latin1');
  return got.length === want.length && timingSafeEqual(got, want);
}
