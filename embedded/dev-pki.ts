import { existsSync } from 'node:fs';
import { pkiPaths } from '../pki/layout.ts';
import { ensureSigningKey, issueDeviceCertificate, readPkiMeta, setupPki } from '../pki/onboarding.ts';

/**
 * Development certificates for `npm start`: reuses whatever is in the certificates folder (a CA
 * made by scripts/generate-certificates.sh included) and creates only what is missing: a CA for
 * localhost, the service certificates, and one certificate per listed device.
 */
export function ensureDevelopmentPki(certsDir: string, deviceIds: readonly string[]): { created: string[] } {
  const created: string[] = [];
  const meta = readPkiMeta(certsDir);
  const report = setupPki(certsDir, { domain: meta?.domain ?? 'localhost' });
  if (report.ca === 'created') created.push('ca');
  created.push(...report.created);
  for (const id of deviceIds) {
    if (!existsSync(pkiPaths(certsDir).device(id).cert)) {
      issueDeviceCertificate(certsDir, id);
      created.push(`devices/${id}`);
    }
    ensureSigningKey(certsDir, id);
  }
  return { created };
}
