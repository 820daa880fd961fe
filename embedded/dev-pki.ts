import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { pkiPaths } from '../pki/layout.ts';
import { isRevoked, readPkiMeta, setupPki } from '../pki/onboarding.ts';
import { ensureSigningKey, issueDeviceCertificate } from '../pki/device-bundle.ts';

/**
 * Development certificates for `npm start`: reuses whatever is in the certificates folder (a CA
 * made by scripts/generate-certificates.sh included) and creates only what is missing: a CA for
 * localhost, the service certificates, and one certificate per listed device. A listed device's
 * certificate that the CA did not sign (left from a CA that `--new-ca` replaced) is issued again;
 * a revoked one is left alone.
 */
export function ensureDevelopmentPki(certsDir: string, deviceIds: readonly string[]): { created: string[] } {
  const created: string[] = [];
  const meta = readPkiMeta(certsDir);
  const report = setupPki(certsDir, { domain: meta?.domain ?? 'localhost' });
  if (report.ca === 'created') created.push('ca');
  created.push(...report.created);
  const p = pkiPaths(certsDir);
  const ca = new X509Certificate(readFileSync(p.caCert));
  for (const id of deviceIds) {
    // A listed device revoked since (revoke-device.sh) stays revoked: nothing is issued to it again,
    // nor its signing key put back, and npm start goes on without it (a new CA keeps the revoked
    // devices' list: such a device's old certificate would otherwise stop every start).
    if (isRevoked(certsDir, id)) continue;
    const cert = p.device(id).cert;
    const stale = existsSync(cert) && !new X509Certificate(readFileSync(cert)).verify(ca.publicKey);
    if (!existsSync(cert) || stale) {
      issueDeviceCertificate(certsDir, id, { renew: stale });
      created.push(`devices/${id}`);
    }
    ensureSigningKey(certsDir, id);
  }
  return { created };
}
