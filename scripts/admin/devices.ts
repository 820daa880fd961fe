import { X509Certificate } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { readTokensFile, tokenPaths } from '../../pki/device-tokens.ts';
import { pkiPaths } from '../../pki/layout.ts';
import { readRevokedDevices } from '../../pki/onboarding.ts';
import { supersededOf } from '../../pki/superseded.ts';
import { deviceAuth, tokenEntry, tokenStanding, type TokensFile } from '../../shared/security/device-token.ts';
import { DeviceIdSchema } from '../../shared/contract/primitives.ts';
import { isFieldStreamError, type FieldStreamError } from '../../shared/errors.ts';
import { DAY_MS, LIMITS } from '../../shared/limits.ts';
import { readLinesSync } from '../../shared/line-file.ts';

/**
 * The fleet as the certificates folder knows it (pki/layout.ts): a device is any id with a
 * certificate or keys in devices/ID/, a signing key in the internal registry, a certificate in the
 * CA's log of issued certificates, or a line in the revoked list. Read only; issuing and revoking
 * are pki/device-bundle.ts and pki/revocation.ts, the code scripts/ runs too.
 */

/** A line of ca/issued.jsonl (pki/revocation.ts writes them). */
const IssuedLineSchema = z.object({ name: z.string(), serial: z.string(), notAfter: z.string(), subject: z.string() });
/** A line of ca/revoked.jsonl: an issued line and when it was revoked. */
const RevokedLineSchema = IssuedLineSchema.extend({ revokedAt: z.string() });

export const DeviceCertificateSchema = z.object({
  serial: z.string(),
  subject: z.string(),
  notBefore: z.string(),
  notAfter: z.string(),
  /** whole days until notAfter; negative once expired */
  daysLeft: z.number().int(),
  /** whether the CA of this folder (ca.crt) signed it; false: a CA that --new-ca replaced did, and the
   * servers refuse it until the device is issued again; absent: no ca.crt here to check it with */
  ofCa: z.boolean().optional(),
});

export const DeviceSummarySchema = z.object({
  id: DeviceIdSchema,
  /** how it authenticates to the gateways (shared/security/device-token.ts, deviceAuth); unknown: the
   * tokens file cannot be read, which alone tells */
  auth: z.enum(['certificate', 'token', 'unknown']),
  /** when that credential expires (ISO 8601): the certificate's notAfter or the token's expiresAt; null: no
   * expiry known (no certificate on this machine, a revoked token, or a token from before expiry dates) */
  expiresAt: z.string().nullable(),
  /** the device's current certificate (devices/ID/client.crt), when this machine has it */
  certificate: DeviceCertificateSchema.optional(),
  revoked: z.boolean(),
  /** when it was revoked (ISO 8601): its certificates' latest revocation in the CA's log; absent for a
   * device not revoked, whose superseded certificates alone were */
  revokedAt: z.string().optional(),
  /** whether the internal registry holds its message-signing key (internal/device-keys/ID.key) */
  signingKeyRegistered: z.boolean(),
  /** whether this machine holds the device's own copies of its key and signing key (devices/ID/) */
  deviceFiles: z.object({ clientKey: z.boolean(), signingKey: z.boolean() }),
  /** the device's bundle (bundles/ID.tar.gz), when there is one */
  bundle: z.string().optional(),
  /** every certificate the CA issued to it, oldest first */
  issued: z.array(z.object({ serial: z.string(), notAfter: z.string(), revoked: z.boolean() })),
  /** its certificates a renewal superseded that are still valid (neither revoked nor expired; none for a
   * revoked device): what `devices revoke ID --superseded` revokes, oldest first */
  superseded: z.array(z.object({ serial: z.string(), notAfter: z.string() })),
  /** its device token (the DMZ tokens file): active since and until (null: never), or revoked when;
   * unreadable: the tokens file cannot be read (listDevicesDespiteTokens); absent: none */
  token: z
    .union([
      z.object({ state: z.literal('active'), issuedAt: z.string(), expiresAt: z.string().nullable(), expired: z.boolean() }),
      z.object({ state: z.literal('revoked'), revokedAt: z.string() }),
      z.object({ state: z.literal('unreadable') }),
    ])
    .optional(),
});
export type DeviceSummary = z.infer<typeof DeviceSummarySchema>;

/** JSON lines of the CA's logs; a line that is not a record is skipped (the list is for reading, revocation refuses them). */
function readLog<S extends z.ZodType>(path: string, schema: S): z.infer<S>[] {
  if (!existsSync(path)) return [];
  const out: z.infer<S>[] = [];
  // A line at a time, none held longer than LIMITS.pkiLogLineMaxBytes (undefined: skipped, no
  // record): read whole, a log damaged into an endless line ran the listing out of memory.
  for (const line of readLinesSync(path, LIMITS.pkiLogLineMaxBytes)) {
    if (line === undefined || !line.trim()) continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      continue;
    }
    const r = schema.safeParse(value);
    if (r.success) out.push(r.data);
  }
  return out;
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** An ISO 8601 date from the log's date text, or the text as it is when it is none. */
const isoDate = (text: string) => (Number.isNaN(Date.parse(text)) ? text : new Date(text).toISOString());

const isDeviceId = (id: string) => DeviceIdSchema.safeParse(id).success;

/**
 * The revoked ids, read as the onboarding and the services read the list (readRevokedDevices): a
 * folder in its place (Docker's, for a missing mounted file) is an empty list, not EISDIR.
 */
function readRevokedIds(certsDir: string): Set<string> {
  return new Set([...readRevokedDevices(certsDir)].filter(isDeviceId));
}

function describe(certPem: Buffer, now: number, ca: X509Certificate | undefined): z.infer<typeof DeviceCertificateSchema> {
  const cert = new X509Certificate(certPem);
  const notAfter = new Date(cert.validTo);
  return {
    serial: cert.serialNumber.toUpperCase(),
    subject: cert.subject.replace(/\n/g, ', '),
    notBefore: new Date(cert.validFrom).toISOString(),
    notAfter: notAfter.toISOString(),
    daysLeft: Math.floor((notAfter.getTime() - now) / DAY_MS),
    // After --new-ca a certificate not issued again is of the CA moved aside: listed as any other,
    // it read as valid for years while every server refused it.
    ...(ca ? { ofCa: cert.checkIssued(ca) && cert.verify(ca.publicKey) } : {}),
  };
}

/** The folder's CA certificate (ca.crt), to check the devices' with; undefined where it is missing or damaged. */
function readCa(certsDir: string): X509Certificate | undefined {
  try {
    return new X509Certificate(readFileSync(pkiPaths(certsDir).publicCa));
  } catch {
    return undefined;
  }
}

/** Every device the certificates folder knows, sorted by id; throws TOKENS_FILE_INVALID when the tokens file cannot be read. */
export function listDevices(certsDir: string, now = Date.now()): DeviceSummary[] {
  return summarize(certsDir, readTokensFile(certsDir), now);
}

/**
 * Every device the certificates folder knows, even when the tokens file cannot be read (damaged):
 * then every device's token is `unreadable` and its auth `unknown`, and `tokensError` says why. A
 * damaged tokens file has nothing to do with the certificates, keys and revocations the other
 * sources hold, and a listing that answered nothing hid the whole fleet until it was repaired.
 */
export function listDevicesDespiteTokens(certsDir: string, now = Date.now()): { devices: DeviceSummary[]; tokensError?: FieldStreamError } {
  try {
    return { devices: summarize(certsDir, readTokensFile(certsDir), now) };
  } catch (err) {
    if (!isFieldStreamError(err) || err.code !== 'TOKENS_FILE_INVALID') throw err;
    return { devices: summarize(certsDir, undefined, now), tokensError: err };
  }
}

/** `file` undefined: the tokens file could not be read. */
function summarize(certsDir: string, file: TokensFile | undefined, now: number): DeviceSummary[] {
  const p = pkiPaths(certsDir);
  const issued = readLog(join(p.caDir, 'issued.jsonl'), IssuedLineSchema);
  const revokedLog = readLog(join(p.caDir, 'revoked.jsonl'), RevokedLineSchema);
  const revokedIds = readRevokedIds(certsDir);
  const tokens = file?.devices ?? {};
  const ids = new Set<string>([
    ...Object.keys(tokens).filter(isDeviceId),
    ...listDir(join(certsDir, 'devices')).filter(isDeviceId),
    ...listDir(join(certsDir, 'internal', 'device-keys'))
      .filter((f) => f.endsWith('.key'))
      .map((f) => f.slice(0, -'.key'.length))
      .filter(isDeviceId),
    ...issued.filter((r) => r.name.startsWith('devices/')).map((r) => r.name.slice('devices/'.length)).filter(isDeviceId),
    ...revokedIds,
  ]);
  const revokedSerials = new Set(revokedLog.map((r) => r.serial));
  const tokensFileHere = existsSync(tokenPaths(certsDir).file);
  const ca = readCa(certsDir);
  return [...ids].sort().map((id) => {
    const d = p.device(id);
    const name = `devices/${id}`;
    const mine = issued.filter((r) => r.name === name);
    const revoked = revokedIds.has(id);
    const revokedAt = revoked ? revokedLog.filter((r) => r.name === name).map((r) => r.revokedAt).sort().at(-1) : undefined;
    let certificate: DeviceSummary['certificate'];
    try {
      if (existsSync(d.cert)) certificate = describe(readFileSync(d.cert), now, ca);
    } catch {
      certificate = undefined; // not a certificate: shown as none, `devices renew` replaces it
    }
    const entry = tokenEntry(tokens, id);
    const token: DeviceSummary['token'] = !file ? { state: 'unreadable' } : entry ? tokenStanding(entry, now) : undefined;
    // Without a token entry, a certificate here or in the CA's log, or a tokens file that would hold
    // the entry, says it is a certificate device. The internal server's copy has none of them (no
    // CA, no tokens file): calling each device a certificate device there was a guess, wrong for
    // every token device.
    const auth = !file ? 'unknown' : entry || certificate || mine.length > 0 || tokensFileHere ? deviceAuth(entry) : 'unknown';
    return DeviceSummarySchema.parse({
      id,
      auth,
      expiresAt: auth === 'certificate' ? (certificate?.notAfter ?? null) : token?.state === 'active' ? token.expiresAt : null,
      ...(certificate ? { certificate } : {}),
      revoked,
      ...(revokedAt ? { revokedAt } : {}),
      signingKeyRegistered: existsSync(p.deviceKeyRegistry(id)),
      deviceFiles: { clientKey: existsSync(d.key), signingKey: existsSync(d.signingKey) },
      ...(existsSync(p.bundle(id)) ? { bundle: p.bundle(id) } : {}),
      issued: mine.map((r) => ({ serial: r.serial, notAfter: isoDate(r.notAfter), revoked: revokedSerials.has(r.serial) })),
      superseded: revoked ? [] : supersededOf(mine, revokedSerials, now).map((r) => ({ serial: r.serial, notAfter: isoDate(r.notAfter) })),
      ...(token ? { token } : {}),
    });
  });
}

export function findDevice(certsDir: string, id: string, now = Date.now()): DeviceSummary | undefined {
  return listDevices(certsDir, now).find((d) => d.id === id);
}
