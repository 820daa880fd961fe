import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { makeTestPki } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';
import { hasToken } from '../../pki/device-tokens.ts';
import { EXIT, runAdmin } from '../../scripts/admin/run.ts';

describe('fieldstream-admin devices add --token with a CADDY_TOKEN_PORT that is no port', () => {
  it('refuses before the token is issued, so the same command works once the setting is fixed', async () => {
    // The port was checked when the bundle was made, after the token was issued and its hash
    // written to the DMZ's file: the command failed with ADMIN_USAGE, no bundle, and the fixed
    // command then answered PKI_CERT_EXISTS ("already has a token").
    const pki = makeTestPki([]);
    const admin = async (env: Record<string, string>, ...argv: string[]) => {
      let err = '';
      const code = await runAdmin(argv, { out: () => undefined, err: (t) => void (err += t), env: { CERTS_DIR: pki.dir, ...env }, cwd: REPO_ROOT });
      return { code, err };
    };
    try {
      const bad = await admin({ CADDY_TOKEN_PORT: '84440' }, 'devices', 'add', 'plc-9', '--token');
      assert.equal(bad.code, EXIT.usage, bad.err);
      assert.match(bad.err, /^error ADMIN_USAGE: CADDY_TOKEN_PORT/);
      assert.equal(hasToken(pki.dir, 'plc-9'), false, 'no token issued');
      assert.equal(existsSync(pki.paths.deviceKeyRegistry('plc-9')), false, 'no signing key registered');
      const good = await admin({}, 'devices', 'add', 'plc-9', '--token');
      assert.equal(good.code, EXIT.ok, good.err);
      assert.ok(existsSync(pki.paths.bundle('plc-9')));
    } finally {
      pki.cleanup();
    }
  });
});
