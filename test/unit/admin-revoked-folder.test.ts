import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { describe, it } from 'node:test';
import { makeTestPki } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';
import { EXIT, runAdmin } from '../../scripts/admin/run.ts';

describe('fieldstream-admin devices list where Docker made a folder of revoked-devices.txt', () => {
  it('lists the devices, as the services read such a list: nothing revoked', async () => {
    // A compose host started before the list was copied there has a folder in its place (Docker
    // makes one for a missing bind-mounted file). devices list read it as a file and failed with
    // "error: EISDIR", no code, where the onboarding and the services take it as an empty list.
    const pki = makeTestPki(['dev-f']);
    try {
      rmSync(pki.paths.revokedDevices);
      mkdirSync(pki.paths.revokedDevices);
      let out = '';
      let err = '';
      const code = await runAdmin(['devices', 'list', '--json'], { out: (t) => void (out += t), err: (t) => void (err += t), env: { CERTS_DIR: pki.dir }, cwd: REPO_ROOT });
      assert.equal(code, EXIT.ok, err);
      const devices = JSON.parse(out) as Array<{ id: string; revoked: boolean }>;
      assert.deepEqual(devices.map((d) => [d.id, d.revoked]), [['dev-f', false]]);
    } finally {
      pki.cleanup();
    }
  });
});
