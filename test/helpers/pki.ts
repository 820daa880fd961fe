import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pkiPaths, type PkiPaths } from '../../pki/layout.ts';
import { setupPki } from '../../pki/onboarding.ts';
import { issueDeviceCertificate } from '../../pki/device-bundle.ts';
import { createCertificateAuthority, issueCertificate } from '../../pki/certificates.ts';

/** A fresh certificate set in a temporary folder, made at test time (no key is ever committed). */
export function makeTestPki(deviceIds: readonly string[], domain = 'localhost'): { dir: string; paths: PkiPaths; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'fieldstream-pki-'));
  setupPki(dir, { domain });
  for (const id of deviceIds) issueDeviceCertificate(dir, id);
  return { dir, paths: pkiPaths(dir), cleanup: () => (process.env.FIELDSTREAM_KEEP_TEST_DIRS === '1' ? undefined : rmSync(dir, { recursive: true, force: true })) };
}

/** A device certificate from a CA that is not ours, with the same CN as a real device. */
export function foreignDeviceCert(deviceId: string): { ca: string; cert: string; key: string } {
  const ca = createCertificateAuthority('Some Other CA', 1);
  const kc = issueCertificate(ca, { commonName: deviceId, organizationalUnit: 'devices', role: 'client', validityDays: 1 });
  return { ca: ca.certPem, cert: kc.certPem, key: kc.keyPem };
}

/** A temporary folder, removed at cleanup unless FIELDSTREAM_KEEP_TEST_DIRS=1 (to read the logs after a failure). */
export function tempDir(prefix: string): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), `fieldstream-${prefix}-`));
  return {
    dir,
    cleanup: () => {
      if (process.env.FIELDSTREAM_KEEP_TEST_DIRS === '1') process.stderr.write(`kept ${dir}\n`);
      else rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs `fn` with a temporary folder, removed afterwards (see tempDir). */
export function inTempDir<T>(prefix: string, fn: (dir: string) => T): T {
  const tmp = tempDir(prefix);
  try {
    return fn(tmp.dir);
  } finally {
    tmp.cleanup();
  }
}
