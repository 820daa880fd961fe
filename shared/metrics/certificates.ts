import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ServiceMetrics } from './registry.ts';

/** A certificate file a service reads, by the setting that names it (MQTT_CERT_FILE, MQTT_CA_FILE, ...). */
export interface CertificateFile {
  setting: string;
  path: string;
}

/** The notAfter of the first certificate in a PEM text, Unix seconds; undefined when it holds none that parses. */
export function notAfterSeconds(pem: string): number | undefined {
  try {
    return Math.floor(Date.parse(new X509Certificate(pem).validTo) / 1000);
  } catch {
    return undefined;
  }
}

/**
 * `certificate_expiry_timestamp_seconds{setting}`: when the certificate each file holds ends (its
 * first: the service's own, or the first CA of a bundle), read again at every scrape so that a
 * renewed file shows. The services' and the brokers' certificates are issued together, for 825
 * days: they end on one day, and every connection made after it is refused. At start a service only
 * logs CERT_EXPIRING_SOON, which a service running for months never says; this lets an alert
 * (FieldStreamServiceCertificateExpiringSoon) say it weeks before. A file that cannot be read or
 * parsed has no series (the service logged it at start, or cannot run).
 */
export function certificateExpiry(m: ServiceMetrics, files: readonly CertificateFile[]): ServiceMetrics {
  const wanted = files.filter((f) => f.path !== '');
  if (wanted.length === 0) return m;
  m.gauge('certificate_expiry_timestamp_seconds', "When the certificate in the file a setting names ends (notAfter of its first certificate), Unix seconds; read at each scrape.", ['setting'], function () {
    this.reset();
    for (const f of wanted) {
      let pem: string;
      try {
        pem = readFileSync(f.path, 'utf8');
      } catch {
        continue;
      }
      const at = notAfterSeconds(pem);
      if (at !== undefined) this.set({ setting: f.setting }, at);
    }
  });
  return m;
}
