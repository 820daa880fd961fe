import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { FieldStreamError } from './errors.ts';
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

/** days ahead of a certificate's expiry from which services warn at start */
export const CERT_WARN_DAYS = 30;

/** Logs CERT_EXPIRING_SOON (or CERT_EXPIRED) for a service's own certificate. */
export function warnIfExpiring(variable: string, certPem: string, log: Pick<Logger, 'warn'>): void {
  let notAfter: number;
  try {
    notAfter = Date.parse(new X509Certificate(certPem).validTo);
  } catch {
    return; // not a certificate: the TLS layer will say so
  }
  const days = Math.floor((notAfter - Date.now()) / 86_400_000);
  if (days < 0) log.warn({ code: 'CERT_EXPIRED', variable }, `${variable} expired ${-days} days ago`);
  else if (days < CERT_WARN_DAYS) log.warn({ code: 'CERT_EXPIRING_SOON', variable, daysLeft: days }, `${variable} expires in ${days} days: renew it`);
}
