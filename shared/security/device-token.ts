import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';
import { DeviceIdSchema } from '../contract/primitives.ts';
import { FieldStreamError } from '../errors.ts';

/**
 * Device tokens: the credential of a device that cannot hold a client certificate.
 *
 * A token is `fst1.<device id>.<secret>`, the secret 32 random bytes in base64url (RFC 4648 §5,
 * no padding). The device id is part of the credential, as the CN is part of a certificate: the
 * gateway takes the identity from it and then proves it against the stored hash, never from
 * anything else the device says. The id may hold dots; the secret holds none, so the secret is
 * what follows the last dot.
 *
 * Only a slow hash of each secret is stored (GATEWAY_DEVICE_TOKENS_FILE, written by
 * fieldstream-admin): scrypt (RFC 7914) with a random salt per token and the parameters written
 * beside each hash, so they can be raised later without invalidating the tokens issued before.
 */
export const TOKEN_PREFIX = 'fst1';
const SECRET_BYTES = 32;
const SECRET_PATTERN = /^[A-Za-z0-9_-]{43}$/;

/**
 * scrypt cost for new tokens: N = 2^15, r = 8, p = 1 is 32 MiB and about 50-100 ms per check on
 * one core (RFC 7914 §2 and the OWASP password storage recommendation, N ≥ 2^15 at r = 8). The
 * secret is 256 random bits, so the slowness is defence in depth should the file leak; it also
 * bounds how fast the gateway can be made to check guesses (four libuv threads at a time).
 */
export const SCRYPT_PARAMS = { N: 2 ** 15, r: 8, p: 1, keyLen: 32 } as const;
const SALT_BYTES = 16;

const b64 = z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/);

export const TokenHashSchema = z.object({
  alg: z.literal('scrypt'),
  N: z.number().int().min(2 ** 10).max(2 ** 20),
  r: z.number().int().min(1).max(32),
  p: z.number().int().min(1).max(16),
  keyLen: z.number().int().min(16).max(64),
  salt: b64,
  hash: b64,
});
export type TokenHash = z.infer<typeof TokenHashSchema>;

/** One device's entry: its current token's hash, or a revocation (the hash is removed). */
export const TokenEntrySchema = z.discriminatedUnion('state', [
  z.object({
    state: z.literal('active'),
    /** a random id of this token, so the gateway can tell a rotated token's connections */
    tokenId: z.string().regex(/^[0-9a-f]{16}$/),
    issuedAt: z.string(),
    /**
     * When the gateway stops taking the token (ISO 8601). Absent in files written before tokens
     * expired: such a token keeps no expiry date (the tooling shows "never") until `devices renew
     * ID --token` replaces it with one that has.
     */
    expiresAt: z.string().datetime().optional(),
    scrypt: TokenHashSchema,
  }),
  z.object({ state: z.literal('revoked'), revokedAt: z.string() }),
]);
export type TokenEntry = z.infer<typeof TokenEntrySchema>;

export const TokensFileSchema = z.object({
  version: z.literal(1),
  devices: z.record(DeviceIdSchema, TokenEntrySchema),
});
export type TokensFile = z.infer<typeof TokensFileSchema>;

/** The entry of a device, looked up as an own key only: an id such as "constructor" is no entry. */
export function tokenEntry(devices: TokensFile['devices'], deviceId: string): TokenEntry | undefined {
  return Object.hasOwn(devices, deviceId) ? devices[deviceId] : undefined;
}

/** What the tooling and the internal side say of a device's token: its state and, when active, its expiry. */
export type TokenStanding =
  | { state: 'active'; issuedAt: string; /** ISO 8601; null: a token from before expiry dates, it never expires */ expiresAt: string | null; expired: boolean }
  | { state: 'revoked'; revokedAt: string };

/** Milliseconds since the epoch at which an active token expires; undefined: never (an old entry). */
export function tokenExpiryMs(entry: TokenEntry): number | undefined {
  return entry.state === 'active' && entry.expiresAt !== undefined ? Date.parse(entry.expiresAt) : undefined;
}

/** Whether the token of this entry has passed its expiry date at `now` (a revoked one is not "expired"). */
export function isTokenExpired(entry: TokenEntry, now = Date.now()): boolean {
  const at = tokenExpiryMs(entry);
  return at !== undefined && now >= at;
}

/** One entry as the tooling and the management API show it: never the hash. */
export function tokenStanding(entry: TokenEntry, now = Date.now()): TokenStanding {
  if (entry.state === 'revoked') return { state: 'revoked', revokedAt: entry.revokedAt };
  return { state: 'active', issuedAt: entry.issuedAt, expiresAt: entry.expiresAt ?? null, expired: isTokenExpired(entry, now) };
}

/**
 * A tokens file as the tooling (pki/device-tokens.ts) and the console read it: undefined when there
 * is none, TOKENS_FILE_INVALID when it is not one.
 */
export function readTokensFileAt(path: string): TokensFile | undefined {
  if (!existsSync(path)) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new FieldStreamError('TOKENS_FILE_INVALID', `${path}: ${(err as Error).message.slice(0, 200)}`);
  }
  const r = TokensFileSchema.safeParse(value);
  if (!r.success) throw new FieldStreamError('TOKENS_FILE_INVALID', `${path}: ${r.error.issues[0]?.message ?? 'not a tokens file'}`);
  return r.data;
}

/**
 * How a device authenticates to the gateways: with a token when the tokens file has an entry for it
 * (active or revoked), otherwise with its client certificate. One rule for the tooling and the
 * management API, so both say the same of a device.
 */
export function deviceAuth(entry: TokenEntry | undefined): 'certificate' | 'token' {
  return entry ? 'token' : 'certificate';
}

export interface ParsedToken {
  deviceId: string;
  secret: string;
}

/** The parts of a token, or undefined when it is not one (no other detail: it may be a guess). */
export function parseToken(token: string): ParsedToken | undefined {
  if (!token.startsWith(`${TOKEN_PREFIX}.`)) return undefined;
  const rest = token.slice(TOKEN_PREFIX.length + 1);
  const dot = rest.lastIndexOf('.');
  if (dot <= 0) return undefined;
  const deviceId = rest.slice(0, dot);
  const secret = rest.slice(dot + 1);
  if (!DeviceIdSchema.safeParse(deviceId).success || !SECRET_PATTERN.test(secret)) return undefined;
  return { deviceId, secret };
}

/** A new token for a device: 256 bits from the CSPRNG. */
export function generateToken(deviceId: string): string {
  DeviceIdSchema.parse(deviceId);
  return `${TOKEN_PREFIX}.${deviceId}.${randomBytes(SECRET_BYTES).toString('base64url')}`;
}

/** scrypt needs 128·N·r bytes; Node refuses more than `maxmem` (32 MiB by default), so allow twice that. */
function scryptAsync(secret: string, salt: Buffer, params: Pick<TokenHash, 'N' | 'r' | 'p' | 'keyLen'>): Promise<Buffer> {
  const options: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r };
  return new Promise((resolve, reject) => scrypt(secret, salt, params.keyLen, options, (err, key) => (err ? reject(err) : resolve(key))));
}

/** The stored form of a token's secret (asynchronous: scrypt runs on the libuv pool, not the event loop). */
export async function hashTokenSecret(secret: string): Promise<TokenHash> {
  const salt = randomBytes(SALT_BYTES);
  const key = await scryptAsync(secret, salt, SCRYPT_PARAMS);
  return { alg: 'scrypt', ...SCRYPT_PARAMS, salt: salt.toString('base64'), hash: key.toString('base64') };
}

/** Whether `secret` is the one hashed; compared in constant time. */
export async function verifyTokenSecret(secret: string, stored: TokenHash): Promise<boolean> {
  const expected = Buffer.from(stored.hash, 'base64');
  const key = await scryptAsync(secret, Buffer.from(stored.salt, 'base64'), stored);
  return key.length === expected.length && timingSafeEqual(key, expected);
}

/** The token from an `Authorization: Bearer <token>` header (RFC 6750 §2.1), or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (typeof header !== 'string') return undefined;
  const m = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i.exec(header.trim());
  return m?.[1];
}
