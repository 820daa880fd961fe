import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';

/**
 * End-to-end integrity of device messages, independent of the TLS hops (the DMZ terminates TLS,
 * so TLS alone cannot stop a compromised DMZ from forging or replaying data).
 *
 * Each device holds a 256-bit key issued at onboarding; the internal network holds a copy in its
 * device registry; the DMZ never does. The device signs every message when it *sends* it:
 *
 *   mac = HMAC-SHA256(key, "fieldstream-auth-v1" \n deviceId \n dataType \n epoch \n seq \n ts \n SHA-256(payload JSON))
 *
 * - epoch, seq: the message's stable identity (queue epoch and sequence number; for file chunks the
 *   transfer id and chunk index). The internal side accepts each (epoch, seq) once.
 * - ts: when this copy was sent (ms). It is checked against the moment the gateway received it,
 *   not against the age of the reading, so data buffered through a week-long outage is still
 *   accepted when it is finally sent: freshness is of the sending, not of the reading.
 * - the payload digest is over JSON.stringify(payload): the gateway and the distributor re-serialise
 *   parsed JSON, which reproduces that text exactly for what JSON.stringify produced.
 */
export const AUTH_VERSION = 1;

export const MessageAuthSchema = z.strictObject({
  v: z.literal(AUTH_VERSION),
  epoch: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  /** epoch ms when this copy was sent */
  ts: z.number().int().min(0),
  /** HMAC-SHA256, base64url without padding */
  mac: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
});
export type MessageAuth = z.infer<typeof MessageAuthSchema>;

export interface SignedFields {
  deviceId: string;
  dataType: string;
  epoch: string;
  seq: number;
  ts: number;
  payload: unknown;
}

function input(f: SignedFields): string {
  const digest = createHash('sha256').update(JSON.stringify(f.payload)).digest('hex');
  return ['fieldstream-auth-v1', f.deviceId, f.dataType, f.epoch, String(f.seq), String(f.ts), digest].join('\n');
}

export function signMessage(key: Buffer, f: SignedFields): MessageAuth {
  return { v: AUTH_VERSION, epoch: f.epoch, seq: f.seq, ts: f.ts, mac: createHmac('sha256', key).update(input(f)).digest('base64url') };
}

/** Constant-time check of a message's MAC. */
export function verifyMessage(key: Buffer, f: Omit<SignedFields, 'epoch' | 'seq' | 'ts'>, auth: MessageAuth): boolean {
  const expected = createHmac('sha256', key).update(input({ ...f, epoch: auth.epoch, seq: auth.seq, ts: auth.ts })).digest();
  const got = Buffer.from(auth.mac, 'base64url');
  return got.length === expected.length && timingSafeEqual(got, expected);
}

/** A device signing key file: 64 hex digits. */
export function parseSigningKey(text: string): Buffer | undefined {
  const hex = text.trim();
  return /^[0-9a-f]{64}$/.test(hex) ? Buffer.from(hex, 'hex') : undefined;
}
