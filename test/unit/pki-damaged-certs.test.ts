import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pkiPaths } from '../../pki/layout.ts';
import { setupPki } from '../../pki/onboarding.ts';
import { tempDir } from '../helpers/pki.ts';

const repoRoot = join(import.meta.dirname, '..', '..');
const openssl = (...args: string[]) => execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
/** A PEM file cut short inside its block, its armour closed again: what a torn copy leaves. */
const tear = (path: string) => writeFileSync(path, `${readFileSync(path, 'utf8').slice(0, 200)}\n-----END CERTIFICATE-----\n`);

describe('generate-certificates.sh on a set with a damaged certificate file', () => {
  it('issues a damaged server certificate or anchor file again, plainly and with --renew-dmz, instead of dying on an OpenSSL error', () => {
    // A torn PEM block reached new X509Certificate() unguarded (the names check, the DMZ anchors,
    // the names a --renew-dmz keeps): every run died with "error:04800064:PEM routines::bad base64
    // decode" and a stack trace, no code, until someone found and removed the file.
    const scratch = tempDir('damaged-certs');
    const certs = join(scratch.dir, 'certs');
    const q = pkiPaths(certs);
    const env = { ...process.env, CERTS_DIR: certs };
    const script = (...args: string[]) => spawnSync(join(repoRoot, 'scripts', 'generate-certificates.sh'), ['example.org', ...args], { env, encoding: 'utf8' });
    const pairs = (file: string) => new X509Certificate(readFileSync(q.service(file).cert)).checkPrivateKey(createPrivateKey(readFileSync(q.service(file).key)));
    try {
      setupPki(certs, { domain: 'example.org' });
      for (const file of ['dmz/mosquitto', 'internal/mosquitto']) tear(q.service(file).cert);
      tear(q.dmzBrokerCa.internal);
      const plain = script();
      assert.equal(plain.status, 0, plain.stdout + plain.stderr);
      assert.match(plain.stdout, /issued: .*dmz\/mosquitto.*internal\/mosquitto/);
      for (const file of ['dmz/mosquitto', 'internal/mosquitto']) assert.ok(pairs(file), file);
      assert.doesNotThrow(() => openssl('verify', '-CAfile', q.publicCa, q.service('internal/mosquitto').cert));
      for (const anchor of Object.values(q.dmzBrokerCa)) {
        assert.doesNotThrow(() => openssl('verify', '-CAfile', anchor, '-verify_hostname', 'example.org', q.service('dmz/mosquitto').cert), anchor);
      }

      tear(q.service('dmz/edge').cert);
      const renewed = script('--renew-dmz');
      assert.equal(renewed.status, 0, renewed.stdout + renewed.stderr);
      assert.match(renewed.stdout, /dmz\/edge\.crt was not there \(or was damaged\), so the names it had could not be kept/);
      assert.ok(pairs('dmz/edge'));
      assert.doesNotThrow(() => openssl('verify', '-CAfile', q.publicCa, '-verify_hostname', 'example.org', q.service('dmz/edge').cert));
    } finally {
      scratch.cleanup();
    }
  });
});
