import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readSettingFile } from './config.ts';
import { FieldStreamError } from './errors.ts';
import { DAY_MS, TIMINGS } from './limits.ts';
import type { Logger } from './logger.ts';

/** Reads a PEM file named by a setting; a failure names the setting, so the user knows what to fix. */
export function readPemSetting(variable: string, path: string): string {
  return readSettingFile(variable, path);
}

/**
 * A certificate and its private key, each named by a setting, read and checked to be a pair: a key
 * that is not the certificate's fails every TLS handshake, and OpenSSL's error for it ("key values
 * mismatch") came as a crash with a stack trace at the first connection, or as endless retries.
 */
export function readKeyPairSettings(cert: { variable: string; path: string }, key: { variable: string; path: string }): { cert: string; key: string } {
  const certPem = readPemSetting(cert.variable, cert.path);
  const keyPem = readPemSetting(key.variable, key.path);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(certPem);
  } catch (err) {
    throw new FieldStreamError('CONFIG_INVALID', `${cert.variable}=${cert.path} is not a certificate: ${(err as Error).message}`, { variable: cert.variable, path: cert.path });
  }
  let matches: boolean;
  try {
    matches = x509.checkPrivateKey(createPrivateKey(keyPem));
  } catch (err) {
    throw new FieldStreamError('CONFIG_INVALID', `${key.variable}=${key.path} is not a private key: ${(err as Error).message}`, { variable: key.variable, path: key.path });
  }
  if (!matches) throw new FieldStreamError('CONFIG_INVALID', `${key.variable}=${key.path} is not the key of ${cert.variable}=${cert.path}: copy the two files of one pair`, { variable: key.variable, path: key.path });
  return { cert: certPem, key: keyPem };
}

/** Whole days from `nowMs` until `atMs` (negative once past): how certificate lifetimes are told. */
export function daysUntil(atMs: number, nowMs: number = Date.now()): number {
  return Math.floor((atMs - nowMs) / DAY_MS);
}

/** Logs CERT_EXPIRING_SOON (or CERT_EXPIRED) for a service's own certificate. */
export function warnIfExpiring(variable: string, certPem: string, log: Pick<Logger, 'warn'>): void {
  let notAfter: number;
  try {
    notAfter = Date.parse(new X509Certificate(certPem).validTo);
  } catch {
    return; // not a certificate: the TLS layer will say so
  }
  const days = daysUntil(notAfter);
  if (days < 0) log.warn({ code: 'CERT_EXPIRED', variable }, `${variable} expired ${-days} days ago`);
  else if (days < TIMINGS.certWarnDays) log.warn({ code: 'CERT_EXPIRING_SOON', variable, daysLeft: days }, `${variable} expires in ${days} days: renew it`);
}
