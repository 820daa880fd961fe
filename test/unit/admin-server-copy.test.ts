import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { adminWith } from '../helpers/admin.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { EXIT } from '../../scripts/admin/run.ts';
import { REPO_ROOT } from '../helpers/stack.ts';

/**
 * `fieldstream-admin devices list|show` on the internal server's copy of the certificates (ca.crt,
 * ca.crl, internal/: no CA, no issuing log, no tokens file), where docs/operations.md says it shows
 * the registered keys and revocations. It listed every device as a certificate device, a token
 * device too, which nothing there can tell; and `devices show ID` answered ADMIN_UNKNOWN_DEVICE for
 * each device the list had just shown.
 */
describe("fieldstream-admin on the internal server's copy of the certificates", () => {
  const pki = makeTestPki(['pump-1']);
  const tmp = tempDir('admin-server-copy');
  after(() => {
    pki.cleanup();
    tmp.cleanup();
  });

  it('lists each registered or revoked device with its auth unknown, and shows each one it lists', async () => {
    const onCa = adminWith(pki.dir);
    assert.equal((await onCa('devices', 'add', 'plc-1', '--token')).code, EXIT.ok);
    assert.equal((await onCa('devices', 'add', 'plc-2', '--token')).code, EXIT.ok);
    assert.equal((await onCa('devices', 'revoke', 'plc-2')).code, EXIT.ok);

    const copy = join(tmp.dir, 'internal-copy');
    for (const f of ['ca.crt', 'ca.crl', 'internal']) cpSync(join(pki.dir, f), join(copy, f), { recursive: true });
    const onServer = adminWith(copy);

    const listed = await onServer('devices', 'list', '--json');
    assert.equal(listed.code, EXIT.ok, listed.err);
    const devices = JSON.parse(listed.out) as Array<{ id: string; auth: string; revoked: boolean; signingKeyRegistered: boolean }>;
    assert.deepEqual(
      devices.map((d) => [d.id, d.auth, d.revoked, d.signingKeyRegistered]),
      [
        ['plc-1', 'unknown', false, true],
        ['plc-2', 'unknown', true, false],
        ['pump-1', 'unknown', false, true],
      ],
    );
    for (const { id } of devices) {
      const shown = await onServer('devices', 'show', id);
      assert.equal(shown.code, EXIT.ok, `${id}: ${shown.err}`);
      assert.match(shown.out, new RegExp(`^device ${id}\\n`));
      assert.doesNotMatch(shown.out, /client certificate|device token/, shown.out);
    }
    // On the machine that keeps the CA each is what it is.
    const onCaListed = JSON.parse((await onCa('devices', 'list', '--json')).out) as Array<{ id: string; auth: string }>;
    assert.deepEqual(onCaListed.map((d) => [d.id, d.auth]), [['plc-1', 'token'], ['plc-2', 'token'], ['pump-1', 'certificate']]);
    assert.equal((await onServer('devices', 'show', 'nothing-here')).code, EXIT.notFound);
  });
});

/**
 * After `generate-certificates.sh --new-ca` the certificates of the devices not issued again are of
 * the replaced CA: the servers refuse them. `devices list` showed them as any other, valid for 729
 * days more.
 */
describe('fieldstream-admin devices list after --new-ca', () => {
  const pki = makeTestPki(['old-1', 'old-2']);
  after(() => pki.cleanup());

  it('says which certificates are of a replaced CA, until the device is issued again', async () => {
    const admin = adminWith(pki.dir);
    const env = { PATH: process.env.PATH ?? '', FIELDSTREAM_ENV_FILE: '/dev/null', CERTS_DIR: pki.dir };
    execFileSync(join(REPO_ROOT, 'scripts', 'generate-certificates.sh'), ['localhost', '--new-ca'], { cwd: REPO_ROOT, env, stdio: 'ignore' });
    assert.equal((await admin('devices', 'renew', 'old-2')).code, EXIT.ok);

    const listed = JSON.parse((await admin('devices', 'list', '--json')).out) as Array<{ id: string; certificate?: { ofCa?: boolean } }>;
    assert.deepEqual(listed.map((d) => [d.id, d.certificate?.ofCa]), [['old-1', false], ['old-2', true]]);
    const table = (await admin('devices', 'list')).out;
    assert.match(table, /^old-1 .*replaced CA/m, table);
    assert.doesNotMatch(table, /^old-2 .*replaced CA/m, table);
    assert.match(table, /Certificates of a replaced CA[^\n]*refuse: old-1\.[\s\S]*devices renew ID/, table);
    assert.match((await admin('devices', 'show', 'old-1')).out, /certificate: .*of a replaced CA/);
  });
});
