import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { adminWith } from '../helpers/admin.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { EXIT } from '../../scripts/admin/run.ts';

/**
 * A device id differing from a known device's only by case ("Sensor-1" beside "sensor-1") is
 * refused when it would be new. On a case-insensitive file system (macOS's, Windows', an SMB share
 * holding the file storage) the two are one folder: the second device took the first one's
 * folder, its signing key in the internal registry (and so could sign as it), and its stored files.
 */
describe('fieldstream-admin devices add: an id differing from a known device only by case', () => {
  const pki = makeTestPki([]);
  after(() => pki.cleanup());
  const admin = adminWith(pki.dir);

  it('is refused (PKI_INVALID_NAME, exit 2) for a certificate and for a token, whether the known device has a certificate, a token or was revoked; renewing a known id is not', async () => {
    for (const [known, twin, knownFlags] of [
      ['sensor-1', 'Sensor-1', []],
      ['PLC-2', 'plc-2', ['--token']],
      ['gone-3', 'GONE-3', []],
    ] as const) {
      const added = await admin('devices', 'add', known, ...knownFlags);
      assert.equal(added.code, EXIT.ok, added.err);
      if (known === 'gone-3') assert.equal((await admin('devices', 'revoke', known)).code, EXIT.ok);
      const key = existsSync(pki.paths.deviceKeyRegistry(known)) ? readFileSync(pki.paths.deviceKeyRegistry(known)) : undefined;
      for (const flags of [[], ['--token']]) {
        const r = await admin('devices', 'add', twin, ...flags);
        assert.equal(r.code, EXIT.usage, `${twin} ${flags.join(' ')}: ${r.out} ${r.err}`);
        assert.match(r.err, new RegExp(`^error PKI_INVALID_NAME: DEVICE_ID "${twin}" differs from the known device ${known} only by case`));
        assert.equal(existsSync(pki.paths.device(twin).dir), false, `${twin}: no folder of its own`);
        assert.equal(existsSync(pki.paths.deviceKeyRegistry(twin)), false, `${twin}: no signing key registered`);
      }
      if (key) assert.deepEqual(readFileSync(pki.paths.deviceKeyRegistry(known)), key, `${known}: its registered signing key unchanged`);
    }
    // The known devices themselves are renewed as before.
    assert.equal((await admin('devices', 'renew', 'sensor-1')).code, EXIT.ok);
    assert.equal((await admin('devices', 'renew', 'PLC-2', '--token')).code, EXIT.ok);
    // An id unlike any other is taken.
    assert.equal((await admin('devices', 'add', 'sensor-10')).code, EXIT.ok);
  });
});
