import { cpSync, existsSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pkiPaths, type PkiPaths } from '../../pki/layout.ts';
import { setupPki } from '../../pki/onboarding.ts';
import { issueDeviceCertificate } from '../../pki/device-bundle.ts';
import { createCertificateAuthority, issueCertificate } from '../../pki/certificates.ts';

/**
 * A fresh certificate set in a temporary folder, made at test time (no key is ever committed). Its
 * CA and service certificates take 13 RSA keys, a second or two: `npm test` gives a folder in
 * FIELDSTREAM_TEST_PKI_CACHE where the first test file to ask makes a set once, and each file's
 * first set is a copy of it. Its later ones are made anew, so that two sets of one test never
 * share a CA (a certificate of one must not verify under the other); test files never meet.
 */
export function makeTestPki(deviceIds: readonly string[], domain = 'localhost'): { dir: string; paths: PkiPaths; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'fieldstream-pki-'));
  baseSet(dir, domain);
  for (const id of deviceIds) issueDeviceCertificate(dir, id);
  const cleanup = (): void => {
    // Named when kept, as tempDir's folders are: among the many in /tmp, the failed test's set is otherwise not to be found.
    if (process.env.FIELDSTREAM_KEEP_TEST_DIRS === '1') process.stderr.write(`kept ${dir}\n`);
    else rmSync(dir, { recursive: true, force: true });
  };
  return { dir, paths: pkiPaths(dir), cleanup };
}

/** The domains whose run-wide set this process has copied once already. */
const copied = new Set<string>();

/** setupPki into `dir`, or a copy of the run's set for `domain` (see makeTestPki). */
function baseSet(dir: string, domain: string): void {
  const cache = process.env.FIELDSTREAM_TEST_PKI_CACHE;
  if (!cache || copied.has(domain) || !existsSync(cache)) {
    setupPki(dir, { domain });
    return;
  }
  copied.add(domain);
  const set = join(cache, encodeURIComponent(domain));
  if (!existsSync(set)) {
    // Made aside, then renamed into place: two files asking at once (npm test runs two unit files
    // at a time) each make one, the first rename wins, and nobody copies a set half written.
    const making = mkdtempSync(join(cache, '.making-'));
    setupPki(making, { domain });
    try {
      renameSync(making, set);
    } catch {
      rmSync(making, { recursive: true, force: true });
    }
  }
  cpSync(set, dir, { recursive: true });
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

/** The MQTT settings of an internal service (`service`, e.g. internal/distributor) on a broker at `url`, over mutual TLS with the test PKI's certificates. */
export function serviceMqttSettings(paths: PkiPaths, service: string, url: string | undefined): { MQTT_URL: string | undefined; MQTT_CA_FILE: string; MQTT_CERT_FILE: string; MQTT_KEY_FILE: string } {
  const s = paths.service(service);
  return { MQTT_URL: url, MQTT_CA_FILE: paths.publicCa, MQTT_CERT_FILE: s.cert, MQTT_KEY_FILE: s.key };
}
