import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DeviceIdSchema } from '../shared/contract/primitives.ts';
import { makeDirDurablySync, replaceFileDurablySync } from '../shared/durable-fs.ts';
import { FieldStreamError } from '../shared/errors.ts';
import { DAY_MS, LIMITS, TIMINGS } from '../shared/limits.ts';
import { withPkiLock } from './pki-lock.ts';
import { generateToken, hashTokenSecret, parseToken, readTokensFileAt, tokenEntry, TokensFileSchema, type TokensFile } from '../shared/security/device-token.ts';
import { pkiPaths, refuseReservedDeviceId } from './layout.ts';
import { isRevoked, readPkiMeta } from './onboarding.ts';
import { ensureSigningKey, packDeviceBundle } from './device-bundle.ts';
import { underRevocationLock } from './revocation.ts';
import { refuseWhileRestoring } from './restore-mark.ts';
import { refuseCaseTwin } from './device-id-twins.ts';

/**
 * Device tokens on the operator's machine (shared/security/device-token.ts has the format).
 *
 *   dmz/tokens/device-tokens.json   what the DMZ gets: per device, the scrypt hash of its current token,
 *                            or a revocation. Never a token.
 *   devices/ID/device.token  the token itself (0600), for the device's bundle only.
 *
 * Issuing, rotating and revoking rewrite the DMZ file whole (write, then rename), so a gateway
 * re-reading it never sees half of it.
 */
export const tokenPaths = (root: string, deviceId?: string) => ({
  file: join(root, 'dmz', 'tokens', 'device-tokens.json'),
  token: deviceId === undefined ? '' : join(pkiPaths(root).device(deviceId).dir, 'device.token'),
});

export function readTokensFile(root: string): TokensFile {
  return readTokensFileAt(tokenPaths(root).file) ?? { version: 1, devices: {} };
}

/**
 * Written aside, synced and renamed (durable-fs.ts): a revocation acknowledged survives a power cut.
 * Its folder too: one made here by a plain mkdir (dmz/tokens/ where onboarding made none, a device's
 * folder) was an entry its parent never synced, which a power cut could take with the file in it.
 */
function writeAtomic(path: string, content: string, mode: number): void {
  makeDirDurablySync(dirname(path), 0o755);
  replaceFileDurablySync(path, content, mode);
}

function writeTokensFile(root: string, file: TokensFile): void {
  // Readable by the gateway's user only; it holds hashes, which are still worth guessing against.
  writeAtomic(tokenPaths(root).file, JSON.stringify(TokensFileSchema.parse(file), null, 2) + '\n', 0o600);
}

export interface TokenIssued {
  tokenFile: string;
  tokenId: string;
  /** ISO 8601 */
  expiresAt: string;
}

/**
 * A new token for a device (or, with `renew`, a new one replacing its current one: the old token is
 * refused, and its connections closed, once the gateways have read the file). Also the device's
 * message-signing key, as for a certificate device: token devices sign their messages too.
 * The token expires `validityDays` after now (default LIMITS.deviceTokenValidityDays).
 */
export async function issueDeviceToken(root: string, deviceId: string, options: { renew?: boolean; validityDays?: number } = {}): Promise<TokenIssued> {
  if (!DeviceIdSchema.safeParse(deviceId).success) throw new FieldStreamError('PKI_INVALID_NAME', `${JSON.stringify(deviceId)} is not a device id.`);
  refuseReservedDeviceId(deviceId);
  if (isRevoked(root, deviceId)) throw new FieldStreamError('PKI_DEVICE_REVOKED', `Device ${deviceId} was revoked; onboard it under a new id.`);
  const token = generateToken(deviceId);
  const secret = parseToken(token)?.secret as string;
  const tokenId = randomBytes(8).toString('hex');
  const issuedAt = new Date();
  const expiresAt = new Date(issuedAt.getTime() + (options.validityDays ?? LIMITS.deviceTokenValidityDays) * DAY_MS).toISOString();
  // Hashed first (scrypt takes a while): the file is read, changed and written at once, under its
  // lock, itself taken under the revocation lock (in the order revokeDevice takes them), as a
  // device certificate is issued: a revocation running meanwhile either has listed the device as
  // revoked before the check below, or finds the token in the file and revokes it. With the tokens
  // lock alone, a token issued between a revocation's token step and its listing of the device
  // stayed active, and the revoked device got in again through the token route.
  const scrypt = await hashTokenSecret(secret);
  return underRevocationLock(root, () => changeTokens(root, (tokens) => {
    if (isRevoked(root, deviceId)) throw new FieldStreamError('PKI_DEVICE_REVOKED', `Device ${deviceId} was revoked; onboard it under a new id.`);
    const current = tokenEntry(tokens.devices, deviceId);
    if (current?.state === 'revoked') throw new FieldStreamError('PKI_DEVICE_REVOKED', `The token of device ${deviceId} was revoked; onboard it under a new id.`);
    if (current && !options.renew) throw new FieldStreamError('PKI_CERT_EXISTS', `Device ${deviceId} already has a token; pass --renew (devices renew ID --token) to replace it.`);
    refuseCaseTwin(root, deviceId, Object.keys(tokens.devices));
    // Under the revocation lock, which issuing a certificate takes too: one issued meanwhile is seen.
    // After the revocation: a revoked device is answered as revoked, whatever it holds.
    if (!options.renew) refuseCertificateDevice(root, deviceId);
    if (!current && options.renew) throw new FieldStreamError('ADMIN_UNKNOWN_DEVICE', `Device ${deviceId} has no token to renew.`);
    tokens.devices[deviceId] = { state: 'active', tokenId, issuedAt: issuedAt.toISOString(), expiresAt, scrypt };
    const { token: tokenFile } = tokenPaths(root, deviceId);
    writeAtomic(tokenFile, `${token}\n`, 0o600);
    ensureSigningKey(root, deviceId);
    return { changed: true, result: { tokenFile, tokenId, expiresAt } };
  }));
}

/**
 * PKI_CERT_EXISTS when the device has a client certificate: a token is given instead of one, never
 * beside it. Issued all the same, it left the certificate valid as a second way in, overwrote the
 * certificate's bundle with the token's, and made the tooling (deviceAuth) list the device as a
 * token device, its certificate out of sight.
 */
function refuseCertificateDevice(root: string, deviceId: string): void {
  const { cert } = pkiPaths(root).device(deviceId);
  if (!existsSync(cert)) return;
  throw new FieldStreamError(
    'PKI_CERT_EXISTS',
    `Device ${deviceId} already has a certificate (${cert}): a device has a certificate or a token, not both. Renew its certificate (devices renew ${deviceId}), or give the token to a new id and revoke this one (devices revoke ${deviceId}).`,
  );
}

/**
 * The other side of refuseCertificateDevice, for issueDeviceCertificate: a device with an entry in
 * the tokens file is refused a certificate (PKI_CERT_EXISTS; PKI_DEVICE_REVOKED when its token was
 * revoked). Issued all the same, it left the token valid as a second way in, overwrote the token's
 * bundle with the certificate's, and the tooling (deviceAuth) still listed a token device. A tokens
 * file that cannot be read is refused too (TOKENS_FILE_INVALID): whether the device has a token
 * cannot be told, and a second credential is not to be granted blind.
 */
export function refuseTokenDevice(root: string, deviceId: string): void {
  const { file } = tokenPaths(root);
  let tokens: TokensFile;
  try {
    tokens = readTokensFile(root);
  } catch (err) {
    if (!(err instanceof FieldStreamError) || err.code !== 'TOKENS_FILE_INVALID') throw err;
    throw new FieldStreamError(
      'TOKENS_FILE_INVALID',
      `Device ${deviceId} is not issued a certificate: the tokens file cannot be read (${err.message}), so it cannot be told whether the device has a token, and a device has a certificate or a token, not both. Put a good copy back as ${file} (the one last copied to the DMZ server, or the one in the latest fieldstream-admin backup archive), then run the command again.`,
      err.details,
      { cause: err },
    );
  }
  const entry = tokenEntry(tokens.devices, deviceId);
  if (!entry) return;
  if (entry.state === 'revoked') throw new FieldStreamError('PKI_DEVICE_REVOKED', `The token of device ${deviceId} was revoked; onboard it under a new id.`);
  throw new FieldStreamError(
    'PKI_CERT_EXISTS',
    `Device ${deviceId} has a device token (${file}): a device has a certificate or a token, not both. Renew its token (devices renew ${deviceId} --token); or, for a certificate instead, add the device under a new id (devices add NEW-ID) and revoke this one (devices revoke ${deviceId}).`,
  );
}

/**
 * One read, change and write of the tokens file under CERTS/.tokens.lock (shared/dir-lock.ts), so
 * two admin commands at once cannot both read it and the second write undo the first: a token
 * revoked while another device's token was being issued stayed active. None while a restore
 * writes the folder (restore-mark.ts), which would put its own tokens file over this one's change.
 */
function changeTokens<T>(root: string, change: (tokens: TokensFile) => { changed: boolean; result: T }): T {
  const lock = pkiPaths(root).tokensLock;
  const busy = () => new FieldStreamError('PKI_BUSY', `${lock} stayed in place for ${TIMINGS.adminLockWaitMs} ms: another fieldstream-admin command is changing the tokens file.`);
  return withPkiLock(root, lock, TIMINGS.adminLockWaitMs, busy, () => {
    refuseWhileRestoring(root);
    const tokens = readTokensFile(root);
    const { changed, result } = change(tokens);
    if (changed) writeTokensFile(root, tokens);
    return result;
  });
}

/** Revokes the device's token (its hash leaves the file); false when it has none. */
export function revokeDeviceToken(root: string, deviceId: string): boolean {
  return changeTokens(root, (tokens) => {
    const current = tokenEntry(tokens.devices, deviceId);
    if (!current) return { changed: false, result: false };
    if (current.state !== 'active') return { changed: false, result: true };
    tokens.devices[deviceId] = { state: 'revoked', revokedAt: new Date().toISOString() };
    return { changed: true, result: true };
  });
}

export function hasToken(root: string, deviceId: string): boolean {
  return tokenEntry(readTokensFile(root).devices, deviceId) !== undefined;
}

/** The `.env` of a token device: the token route's port, the token file instead of a certificate. */
export function tokenDeviceEnvFile(deviceId: string, domain: string, tokenPort: number): string {
  return [
    '# FieldStream field client (device token) — generated by fieldstream-admin devices add --token',
    `DEVICE_ID=${deviceId}`,
    `DOMAIN_NAME=${domain}`,
    `GATEWAY_URL=wss://${domain}:${tokenPort}/ws`,
    "# Paths as the field client container sees them (the bundle's certs/ folder is mounted at /certs)",
    'FIELD_CA_FILE=/certs/ca.crt',
    'FIELD_TOKEN_FILE=/certs/device.token',
    'FIELD_SIGNING_KEY_FILE=/certs/signing.key',
    "# FIELD_CRL_FILE unset: the server's certificate is checked against /certs/ca.crl (the CA's CRL;",
    '# after a --renew-dmz, copy the CA\'s current certs/ca.crl over it: read again without a restart)',
    'FIELD_SIMULATE=false',
    '',
  ].join('\n');
}

/** One archive: ca.crt, ca.crl, device.token, signing.key, .env, docker-compose.yml (no certificate, never the CA key). */
export function buildTokenBundle(root: string, deviceId: string, composeFile: string, tokenPort: number): string {
  const p = pkiPaths(root);
  const { token } = tokenPaths(root, deviceId);
  if (!existsSync(token)) throw new FieldStreamError('ADMIN_UNKNOWN_DEVICE', `Device ${deviceId} has no token on this machine.`);
  const meta = readPkiMeta(root);
  if (!meta) throw new FieldStreamError('PKI_CA_MISSING', `No ${p.meta}; run scripts/generate-certificates.sh DOMAIN first.`);
  return packDeviceBundle(root, deviceId, {
    files: [
      { from: token, name: 'device.token', secret: true },
      { from: p.device(deviceId).signingKey, name: 'signing.key', secret: true },
    ],
    env: tokenDeviceEnvFile(deviceId, meta.domain, tokenPort),
    composeFile,
  });
}
