import { existsSync, readFileSync } from 'node:fs';
import { DeviceIdSchema } from '../shared/contract/primitives.ts';
import { FieldStreamError } from '../shared/errors.ts';
import { tokenPaths } from './device-tokens.ts';
import { pkiPaths } from './layout.ts';
import { isRevoked } from './onboarding.ts';
import { appendRevocationsLocked, readIssuedRecords, readRevokedSerials, serialOf, underRevocationLock, writeRevocations, type IssuedRecord } from './revocation.ts';
import { caKeyExists } from './set-meta.ts';

/**
 * A device's superseded certificates: those the CA issued to it before its newest. A renewal leaves
 * them valid until they expire, so that a device that has not yet been given its new certificate
 * keeps connecting; once it has (or at once, for a key that may have been copied), they are revoked
 * here, through the revocation log, CRL and gateways' list a device's revocation writes
 * (revocation.ts), under the same lock. Only certificates are revoked: the device stays valid
 * inside (its signing key registered, not in revoked-devices.txt), and its newest certificate too.
 */

/**
 * The superseded certificates of one device still valid: of its records in the CA's log (oldest
 * first, as they were appended), every one but the last that is neither revoked nor expired. An
 * expiry the log does not say (or cannot be read as a date) is taken as still valid: revoking an
 * expired certificate changes nothing, leaving a valid one would.
 */
export function supersededOf<T extends { serial: string; notAfter: string }>(issued: readonly T[], revoked: ReadonlySet<string>, now: number): T[] {
  const newest = issued.at(-1)?.serial;
  return issued.slice(0, -1).filter((r) => r.serial !== newest && !revoked.has(r.serial) && !(Date.parse(r.notAfter) <= now));
}

export interface SupersededRevocation {
  /** the serials revoked now */
  serials: string[];
  /** the serial of the certificate kept: the newest the CA issued to the device */
  kept: string;
}

/**
 * Revokes the superseded certificates of `deviceId` still valid (fieldstream-admin devices revoke
 * ID --superseded, scripts/revoke-device.sh ID --superseded). Refused, nothing revoked: a revoked
 * device (PKI_DEVICE_REVOKED), one the folder does not know (ADMIN_UNKNOWN_DEVICE), one with no
 * newer certificate than its only one (PKI_NO_NEWER_CERTIFICATE), and one whose certificate in
 * place is not the newest of the log (PKI_CERT_NOT_NEWEST): a renewal recorded its certificate and
 * was stopped before writing it, so the certificate the device and its bundle hold is one of those
 * that would be revoked.
 */
export function revokeSupersededCertificates(root: string, deviceId: string): SupersededRevocation {
  if (!DeviceIdSchema.safeParse(deviceId).success) throw new FieldStreamError('PKI_INVALID_NAME', `"${deviceId}" is not a device id: it must start with a letter or digit and hold only letters, digits, ".", "_" and "-".`);
  return underRevocationLock(root, () => {
    const p = pkiPaths(root);
    if (!caKeyExists(root)) throw new FieldStreamError('PKI_CA_MISSING', `No CA in ${p.caDir}.`);
    if (isRevoked(root, deviceId)) throw new FieldStreamError('PKI_DEVICE_REVOKED', `Device ${deviceId} was revoked, every certificate of it with it: none is left to supersede.`);
    const mine = readIssuedRecords(root).filter((r) => r.name === `devices/${deviceId}`);
    const cert = p.device(deviceId).cert;
    if (mine.length === 0 && !existsSync(cert) && !existsSync(tokenPaths(root, deviceId).token) && !existsSync(p.deviceKeyRegistry(deviceId))) {
      throw new FieldStreamError('ADMIN_UNKNOWN_DEVICE', `No certificate or token was issued to device ${deviceId}.`);
    }
    const newest = mine.at(-1);
    if (!newest || mine.length < 2) {
      throw new FieldStreamError(
        'PKI_NO_NEWER_CERTIFICATE',
        mine.length === 0
          ? `The CA's log (${p.caDir}/issued.jsonl) holds no certificate of device ${deviceId} (a device with a token has none: devices renew ${deviceId} --token replaces the token); nothing was revoked.`
          : `Device ${deviceId} has one certificate (serial ${newest?.serial}), no newer one: nothing is superseded, nothing was revoked. Renew it first (devices renew ${deviceId}), or renew and revoke at once (devices renew ${deviceId} --revoke-old).`,
      );
    }
    // A certificate in place that cannot be read is no certificate the device could hold either.
    const inPlace = existsSync(cert) ? serialOf(readFileSync(cert)) : undefined;
    if (inPlace !== undefined && inPlace !== newest.serial) {
      throw new FieldStreamError(
        'PKI_CERT_NOT_NEWEST',
        `The certificate in place for device ${deviceId} (${cert}, serial ${inPlace}) is not the newest the CA issued to it (serial ${newest.serial}): a renewal stopped before writing it, and the device's bundle holds one that would be revoked. Nothing was revoked: renew the device again (devices renew ${deviceId}), give it the new bundle, then revoke the superseded.`,
      );
    }
    return { serials: revokeSupersededLocked(root, mine, []), kept: newest.serial };
  });
}

/**
 * Reads the logs `revokeSupersededLocked` will read, so that a damaged one (CONFIG_INVALID) stops a
 * renewal with --revoke-old before its certificate is written, not after.
 */
export function checkRevocationLogs(root: string): void {
  readIssuedRecords(root);
  readRevokedSerials(root);
}

/**
 * Revokes the superseded certificates of one device still valid, given its records in the CA's log
 * (oldest first; the last is kept) and the serials of `replaced` (certificates that were in place,
 * should the log lack them: a set older than the log), then writes the CRL and the gateways' list,
 * as every revocation does, even with nothing new (a run stopped between the two is finished).
 * The caller holds the revocation lock (underRevocationLock): a device's renewal with --revoke-old
 * holds it across its issue and this, so no other renewal comes between. Returns the serials revoked now.
 */
export function revokeSupersededLocked(root: string, mine: readonly IssuedRecord[], replaced: readonly string[]): string[] {
  const newest = mine.at(-1);
  const name = newest?.name ?? '';
  const extra = replaced.filter((s) => s !== newest?.serial && !mine.some((r) => r.serial === s)).map((serial) => ({ name, serial, notAfter: '', subject: '' }));
  const stale = supersededOf([...extra, ...mine], readRevokedSerials(root), Date.now());
  const revoked = appendRevocationsLocked(root, stale);
  writeRevocations(root);
  return revoked.map((r) => r.serial);
}
