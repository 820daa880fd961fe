import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { pkiPaths } from '../pki/layout.ts';
import { isRevoked, readPkiMeta, setupPki } from '../pki/onboarding.ts';
import { isServerCopy } from '../pki/set-meta.ts';
import { FieldStreamError } from '../shared/errors.ts';
import { ensureSigningKey, issueDeviceCertificate } from '../pki/device-bundle.ts';

/** The domain of the development set (`npm start`'s, `npm run stack`'s): its servers are on this machine. */
export const DEVELOPMENT_DOMAIN = 'localhost';

/**
 * Development certificates for `npm start` and `npm run stack`: reuses whatever is in the
 * certificates folder of a development set (set up for localhost, by them or by
 * scripts/generate-certificates.sh) and creates only what is missing: a CA for localhost, the
 * service certificates, and one certificate per listed device. A listed device's certificate that
 * the CA did not sign (left from a CA that `--new-ca` replaced) is issued again; a revoked one is
 * left alone.
 *
 * A deployment's folder is refused, changing nothing (PKI_NOT_DEVELOPMENT). Under a deployment's CA
 * (the trusted machine, set up for its domain) the development devices, whose keys lie in the
 * folder for anyone who copies the clone, were credentials the deployment accepted. On a server's
 * copy (no CA there) a new CA and service certificates were made over the deployment's: the bridge,
 * the brokers and every device refused them at the services' next start.
 */
export function ensureDevelopmentPki(certsDir: string, deviceIds: readonly string[]): { created: string[] } {
  const created: string[] = [];
  const meta = readPkiMeta(certsDir);
  const copy = isServerCopy(certsDir);
  if (copy || (meta !== undefined && meta.domain !== DEVELOPMENT_DOMAIN)) {
    const what = copy ? `a server's copy of a deployment's certificates (${meta ? `set up for ${meta.domain}, ` : ''}no CA in ${pkiPaths(certsDir).caDir})` : `the certificates of the deployment set up for ${meta?.domain ?? ''}, with its CA`;
    throw new FieldStreamError(
      'PKI_NOT_DEVELOPMENT',
      `${certsDir} holds ${what}: a development set there would ${copy ? 'replace them with a new CA' : 'be issued under that CA, its devices credentials the deployment accepts'}. Nothing was changed. ` +
        // Not .env: the set-up scripts and fieldstream-admin read it too, and the deployment's next
        // device would be issued by the development CA, its bundle for localhost.
        'Give it a certificates folder of its own, in the environment: CERTS_DIR=./certs-dev npm start (or npm run stack); not in .env, where the set-up scripts and fieldstream-admin would take it too.',
    );
  }
  const report = setupPki(certsDir, { domain: DEVELOPMENT_DOMAIN });
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
