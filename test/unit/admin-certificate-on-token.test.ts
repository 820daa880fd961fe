import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { adminWith } from '../helpers/admin.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';
import { tokenPaths } from '../../pki/device-tokens.ts';
import { EXIT } from '../../scripts/admin/run.ts';
import type { DeviceSummary } from '../../scripts/admin/devices.ts';

/**
 * A device has a client certificate or a device token, not both (docs/security-mechanisms.md,
 * "Device tokens"). `devices add ID`, `devices renew ID` and generate-client-cert.sh on a device
 * that has a token issued the certificate all the same, exit 0: the token stayed valid beside it as
 * a second way in, the token's bundle was overwritten by the certificate's, and `devices list` still
 * showed a token device, its certificate out of sight. With a tokens file that could not be read,
 * the certificate was issued blind.
 */

/** generate-client-cert.sh as a process, with CERTS_DIR `certs`: its exit code and output. */
function clientCert(certs: string, deviceId: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env = { PATH: process.env.PATH ?? '', CERTS_DIR: certs, FIELDSTREAM_ENV_FILE: '/dev/null' };
    execFile(join(REPO_ROOT, 'scripts', 'generate-client-cert.sh'), [deviceId], { cwd: REPO_ROOT, env }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: unknown }).code) : 0, stdout, stderr });
    });
  });
}

describe('a certificate for a device that has a device token', () => {
  const pki = makeTestPki([]);
  after(() => pki.cleanup());
  const admin = adminWith(pki.dir);
  /** The CA's log of issued certificates: a certificate refused must leave no record in it. */
  const issuedLog = () => readFileSync(join(pki.dir, 'ca', 'issued.jsonl'), 'utf8');

  it('is refused by devices add, devices renew and generate-client-cert.sh (PKI_CERT_EXISTS); the token, its bundle and the listing stay as they were', async () => {
    const added = await admin('devices', 'add', 'tok-1', '--token');
    assert.equal(added.code, EXIT.ok, added.err);
    const tokens = readFileSync(tokenPaths(pki.dir).file, 'utf8');
    const bundle = readFileSync(pki.paths.bundle('tok-1'));
    const log = issuedLog();

    for (const argv of [['devices', 'add', 'tok-1'], ['devices', 'renew', 'tok-1']]) {
      const r = await admin(...argv);
      assert.equal(r.code, EXIT.conflict, `${argv.join(' ')}: ${r.out}${r.err}`);
      assert.match(r.err, /^error PKI_CERT_EXISTS: Device tok-1 has a device token \(\S+device-tokens\.json\): a device has a certificate or a token, not both\./, argv.join(' '));
      assert.match(r.err, /devices renew tok-1 --token/, 'says how to renew the token');
      assert.match(r.err, /devices add NEW-ID.*devices revoke tok-1/, 'says how to move the device to a certificate');
    }
    const script = await clientCert(pki.dir, 'tok-1');
    assert.equal(script.code, 73, script.stderr);
    assert.match(script.stderr, /^error PKI_CERT_EXISTS: Device tok-1 has a device token /m);

    assert.equal(existsSync(pki.paths.device('tok-1').cert), false, 'no certificate written');
    assert.equal(existsSync(pki.paths.device('tok-1').key), false, 'no certificate key written');
    assert.equal(issuedLog(), log, 'no certificate recorded in the CA log');
    assert.equal(readFileSync(tokenPaths(pki.dir).file, 'utf8'), tokens, 'the tokens file unchanged');
    assert.deepEqual(readFileSync(pki.paths.bundle('tok-1')), bundle, 'the token bundle is not replaced');
    const listed = JSON.parse((await admin('devices', 'list', '--json')).out) as DeviceSummary[];
    const tok = listed.find((d) => d.id === 'tok-1');
    assert.equal(tok?.auth, 'token');
    assert.equal(tok?.certificate, undefined);

    // The token is still renewed as before; a device without a token still gets its certificate.
    const renewed = await admin('devices', 'renew', 'tok-1', '--token');
    assert.equal(renewed.code, EXIT.ok, renewed.err);
    const cert = await admin('devices', 'add', 'dev-1');
    assert.equal(cert.code, EXIT.ok, cert.err);
    const again = await admin('devices', 'renew', 'dev-1');
    assert.equal(again.code, EXIT.ok, again.err);
  });

  it('with a tokens file that cannot be read, nothing is issued (TOKENS_FILE_INVALID), the message says how to repair it; once repaired, the certificate is issued', async () => {
    const file = tokenPaths(pki.dir).file;
    const good = readFileSync(file, 'utf8');
    const log = issuedLog();
    writeFileSync(file, good.slice(0, 40)); // torn: it can no longer be told whether dev-2 has a token
    const r = await admin('devices', 'add', 'dev-2');
    assert.equal(r.code, EXIT.failed, r.out);
    assert.match(r.err, /^error TOKENS_FILE_INVALID: Device dev-2 is not issued a certificate: /);
    assert.match(r.err, /Put a good copy back as \S+device-tokens\.json \(the one last copied to the DMZ server/);
    const script = await clientCert(pki.dir, 'dev-2');
    assert.equal(script.code, 65, script.stderr);
    assert.match(script.stderr, /^error TOKENS_FILE_INVALID: Device dev-2 is not issued a certificate: /m);
    assert.equal(existsSync(pki.paths.device('dev-2').cert), false, 'no certificate written');
    assert.equal(issuedLog(), log, 'no certificate recorded in the CA log');

    writeFileSync(file, good);
    const repaired = await admin('devices', 'add', 'dev-2');
    assert.equal(repaired.code, EXIT.ok, repaired.err);
    assert.equal(existsSync(pki.paths.device('dev-2').cert), true);
  });
});
