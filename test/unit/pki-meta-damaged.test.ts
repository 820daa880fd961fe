import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { makeTestPki } from '../helpers/pki.ts';
import { EXIT, runAdmin } from '../../scripts/admin/run.ts';

const repoRoot = join(import.meta.dirname, '..', '..');

describe('a damaged fieldstream-pki.json', () => {
  it('is a coded error before anything is issued, and generate-certificates.sh DOMAIN writes it again', async () => {
    // Read back from disk with zod's parse and JSON.parse unguarded: the scripts died with a
    // SyntaxError's stack trace, fieldstream-admin said "error:" without a code, a device was
    // issued its certificate before the bundle failed (so the next try needed --renew), and
    // generate-certificates.sh, which writes the file, died reading it first.
    const pki = makeTestPki([], 'example.org');
    const env = { ...process.env, CERTS_DIR: pki.dir };
    try {
      writeFileSync(pki.paths.meta, '{"domain": "example.or'); // torn by hand or by a full disk
      const client = spawnSync(join(repoRoot, 'scripts', 'generate-client-cert.sh'), ['dev-1'], { env, encoding: 'utf8' });
      assert.equal(client.status, 65, client.stderr);
      assert.match(client.stderr, /^error CONFIG_INVALID: .*fieldstream-pki\.json.*generate-certificates\.sh/m);
      assert.ok(!existsSync(pki.paths.device('dev-1').cert), 'no certificate issued');

      let err = '';
      const code = await runAdmin(['devices', 'add', 'dev-2'], { out: () => undefined, err: (t) => void (err += t), env: { CERTS_DIR: pki.dir }, cwd: repoRoot });
      assert.equal(code, EXIT.failed, err);
      assert.match(err, /^error CONFIG_INVALID: /);
      assert.ok(!existsSync(pki.paths.device('dev-2').cert), 'no certificate issued');

      writeFileSync(pki.paths.meta, JSON.stringify({ domain: 'not a domain', createdAt: 'x' }));
      const setup = spawnSync(join(repoRoot, 'scripts', 'generate-certificates.sh'), ['example.org'], { env, encoding: 'utf8' });
      assert.equal(setup.status, 0, setup.stderr);
      assert.equal(JSON.parse(readFileSync(pki.paths.meta, 'utf8')).domain, 'example.org');
      const again = spawnSync(join(repoRoot, 'scripts', 'generate-client-cert.sh'), ['dev-1'], { env, encoding: 'utf8' });
      assert.equal(again.status, 0, again.stderr);
    } finally {
      pki.cleanup();
    }
  });
});
