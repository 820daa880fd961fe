import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { FieldStreamError } from './errors.ts';
import { DAY_MS, TIMINGS } from './limits.ts';
import type { Logger } from './logger.ts';

/** Reads a PEM file named by a setting; a failure names the setting, so the user knows what to fix. */
export function readPemSetting(variable: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `${variable}=${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      variable,
      path,
    });
  }
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
