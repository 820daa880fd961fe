import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { adminWith } from '../helpers/admin.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { ensureDevelopmentPki } from '../../embedded/dev-pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';
import { EXIT } from '../../scripts/admin/run.ts';

/**
 * After `generate-certificates.sh --new-ca`, the bundles made before hold the old CA, and the
 * script says how to make them again. It told every device, token devices included, to run
 * `generate-client-cert.sh DEVICE_ID --renew`: for a token device that is refused (a device has a
 * certificate or a token, not both); its bundle is made again by `devices renew ID --token`.
 */
describe('generate-certificates.sh --new-ca with token devices', () => {
  const pki = makeTestPki([]);
  after(() => pki.cleanup());
  const admin = adminWith(pki.dir);

  it('tells certificate devices to run generate-client-cert.sh --renew and token devices devices renew ID --token', async () => {
    assert.equal((await admin('devices', 'add', 'dev-1')).code, EXIT.ok);
    assert.equal((await admin('devices', 'add', 'tok-1', '--token')).code, EXIT.ok);
    const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const env = { PATH: process.env.PATH ?? '', CERTS_DIR: pki.dir, FIELDSTREAM_ENV_FILE: '/dev/null' };
      execFile(join(REPO_ROOT, 'scripts', 'generate-certificates.sh'), ['localhost', '--new-ca'], { cwd: REPO_ROOT, env }, (err, stdout, stderr) => {
        resolve({ code: err ? Number((err as { code?: unknown }).code) : 0, stdout, stderr });
      });
    });
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /scripts\/generate-client-cert\.sh DEVICE_ID --renew\) for dev-1\b/);
    assert.match(out.stdout, /bin\/fieldstream-admin devices renew DEVICE_ID --token\) for tok-1\b/);
    assert.doesNotMatch(out.stdout, /--renew\) for [^(\n]*tok-1/, 'a token device is not sent to generate-client-cert.sh');
    // What it says works: the token device's bundle is made again, under the new CA.
    const renewed = await admin('devices', 'renew', 'tok-1', '--token');
    assert.equal(renewed.code, EXIT.ok, renewed.err);
  });
});

/**
 * It listed revoked devices too, certificate or token, whose bundles stay in bundles/: the command
 * it gave them (generate-client-cert.sh ID --renew, devices renew ID --token) is refused,
 * PKI_DEVICE_REVOKED.
 */
describe('generate-certificates.sh --new-ca with revoked devices', () => {
  it('names only devices that can be issued again, and says which bundles are of revoked devices', () => {
    const scratch = tempDir('new-ca-revoked');
    const certs = join(scratch.dir, 'certs');
    const env = { PATH: process.env.PATH ?? '', FIELDSTREAM_ENV_FILE: '/dev/null', CERTS_DIR: certs };
    const run = (file: string, args: string[]) => execFileSync(join(REPO_ROOT, file), args, { cwd: REPO_ROOT, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      ensureDevelopmentPki(certs, ['field-sim-001']); // what npm start makes
      for (const id of ['kept-device', 'gone-device']) run('scripts/generate-client-cert.sh', [id]);
      for (const id of ['kept-plc', 'gone-plc']) run('bin/fieldstream-admin', ['devices', 'add', id, '--token']);
      run('scripts/revoke-device.sh', ['gone-device']);
      run('bin/fieldstream-admin', ['devices', 'revoke', 'gone-plc']);

      const out = run('scripts/generate-certificates.sh', ['fieldstream.example.org', '--new-ca']);
      const certificate = /\(scripts\/generate-client-cert\.sh DEVICE_ID --renew\) for ([^\n(.]+?)(?:, and|\.)/.exec(out)?.[1];
      const token = /\(bin\/fieldstream-admin devices renew DEVICE_ID --token\) for ([^\n(.]+?)(?:, and|\.)/.exec(out)?.[1];
      assert.equal(certificate, 'kept-device', out);
      assert.equal(token, 'kept-plc', out);
      assert.match(out, /gone-device, gone-plc were revoked: nothing to issue/, out);

      // What it says to do works, for each device it names.
      run('scripts/generate-client-cert.sh', ['kept-device', '--renew']);
      run('bin/fieldstream-admin', ['devices', 'renew', 'kept-plc', '--token']);
    } finally {
      scratch.cleanup();
    }
  });
});
