import type { IncomingMessage } from 'node:http';
import { z } from 'zod';
import { FieldStreamError, type ErrorCode } from './errors.ts';

/**
 * An Idempotency-Key (draft-ietf-httpapi-idempotency-key-header: a Structured Fields String, RFC 8941
 * §3.3.3): printable ASCII, at most 255 characters here, without its quotes and escapes.
 */
export const IdempotencyKeySchema = z.string().regex(/^[\x20-\x7e]{1,255}$/);

/**
 * The request's Idempotency-Key, if it has one: a Structured Fields String (RFC 8941 §3.3.3,
 * `"..."` with `\\"` and `\\\\` escaped), or, as many clients send it, the bare key without quotes
 * (no space, comma or quote then: two header lines, which Node joins with ", ", are refused with
 * `invalid`, the code of the server that reads it).
 */
export function idempotencyKey(req: IncomingMessage, invalid: ErrorCode): string | undefined {
  const raw = req.headers['idempotency-key'];
  if (raw === undefined) return undefined;
  const value = (Array.isArray(raw) ? raw.join(', ') : raw).trim();
  const quoted = /^"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"$/.exec(value);
  const key = quoted ? (quoted[1] ?? '').replace(/\\(["\\])/g, '$1') : /^[\x21\x23-\x2b\x2d-\x7e]+$/.test(value) ? value : undefined;
  if (key === undefined || !IdempotencyKeySchema.safeParse(key).success) {
    throw new FieldStreamError(invalid, 'The Idempotency-Key header must be 1–255 printable ASCII characters: a quoted string ("…"), or a key without spaces, commas or quotes.');
  }
  return key;
}
