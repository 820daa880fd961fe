import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { adminWith } from '../helpers/admin.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { hasToken } from '../../pki/device-tokens.ts';
import { EXIT } from '../../scripts/admin/run.ts';
import type { DeviceSummary } from '../../scripts/admin/devices.ts';

/**
 * A device has a client certificate or a device token, not both (docs/security-mechanisms.md,
 * "Device tokens"). `devices add ID --token` on a device with a certificate issued the token all the
 * same: the certificate stayed valid beside it, the certificate's bundle was overwritten by the
 * token's, and `devices list` showed the device as a token device, its certificate out of sight.
 */
describe('fieldstream-admin devices add --token on a device that has a certificate', () => {
  const pki = makeTestPki([]);
  after(() => pki.cleanup());
  /** Runs a command line in this process with the test PKI as CERTS_DIR. */
  const admin = adminWith(pki.dir);

  it('is refused (PKI_CERT_EXISTS, exit 4) naming the certificate; no token, the bundle and the listing as they were', async () => {
    const added = await admin('devices', 'add', 'dev-c');
    assert.equal(added.code, EXIT.ok, added.err);
    const bundle = readFileSync(pki.paths.bundle('dev-c'));
    const r = await admin('devices', 'add', 'dev-c', '--token');
    assert.equal(r.code, EXIT.conflict, r.out);
    assert.match(r.err, /^error PKI_CERT_EXISTS: Device dev-c already has a certificate \(\S+client\.crt\): a device has a certificate or a token, not both/);
    assert.equal(hasToken(pki.dir, 'dev-c'), false, 'no token issued');
    assert.deepEqual(readFileSync(pki.paths.bundle('dev-c')), bundle, 'the certificate bundle is not replaced');
    const listed = JSON.parse((await admin('devices', 'list', '--json')).out) as DeviceSummary[];
    assert.equal(listed.find((d) => d.id === 'dev-c')?.auth, 'certificate');
    // A device without a certificate still gets its token.
    const token = await admin('devices', 'add', 'plc-1', '--token');
    assert.equal(token.code, EXIT.ok, token.err);
    assert.equal(hasToken(pki.dir, 'plc-1'), true);
  });
});
