import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ensureDevelopmentPki } from '../../embedded/dev-pki.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { quietStartEnv } from '../helpers/embedded.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';

const repoRoot = join(import.meta.dirname, '..', '..');

/** Every file under `root` with its content's hash and its mode: what "nothing was changed" compares. */
function snapshot(root: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, e.name);
      if (e.isDirectory()) walk(path);
      else files.set(relative(root, path), `${statSync(path).mode.toString(8)} ${createHash('sha256').update(readFileSync(path)).digest('hex')}`);
    }
  };
  walk(root);
  return files;
}

/** `npm start` (DEVICE_ID none, nothing listening on a fixed port) or `npm run stack` on `certs`: its exit status and stderr. */
function run(script: 'start-embedded.ts' | 'local-stack.ts', certs: string, work: string): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), join(repoRoot, 'scripts', script)], {
    cwd: work,
    env: { ...quietStartEnv(certs), STACK_DIR: join(work, 'stack') },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, stderr: r.stderr };
}

/**
 * npm start and npm run stack make a development set where there is none. Given a deployment's
 * folder they issued into it: under the deployment's CA on the trusted machine (their development
 * devices, keys in the clone, became credentials the deployment accepted), and on a server's copy,
 * which has no CA, a new CA and every service certificate over the deployment's (the brokers, the
 * bridge and every device refused them at the services' next start). So did generate-certificates.sh
 * run on a server's copy. Each is refused now, changing nothing.
 */
describe("a deployment's certificates folder", () => {
  const pki = makeTestPki([], 'fieldstream.example.org');
  const tmp = tempDir('pki-deployment');
  before(() => {
    // What the trusted machine ends with after its set-up and a device's onboarding.
    const r = spawnSync(join(repoRoot, 'scripts', 'generate-client-cert.sh'), ['pump-station-7'], { env: { ...process.env, CERTS_DIR: pki.dir }, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });
  after(() => {
    pki.cleanup();
    tmp.cleanup();
  });

  it('on the machine that keeps its CA: npm start and npm run stack refuse it, issuing no development device under that CA', () => {
    const before = snapshot(pki.dir);
    assert.throws(
      () => ensureDevelopmentPki(pki.dir, ['field-sim-001', 'sensor-001']),
      (e) => isFieldStreamError(e, 'PKI_NOT_DEVELOPMENT') && e.message.includes('fieldstream.example.org') && e.message.includes('CERTS_DIR=./certs-dev'),
    );
    for (const script of ['start-embedded.ts', 'local-stack.ts'] as const) {
      const r = run(script, pki.dir, tmp.dir);
      assert.equal(r.status, 1, `${script}: ${r.stderr}`);
      assert.match(r.stderr, /error PKI_NOT_DEVELOPMENT: .*set up for fieldstream\.example\.org.*Nothing was changed\. .*CERTS_DIR=\.\/certs-dev/, script);
      // Not in .env: the set-up scripts and fieldstream-admin read it too, and the deployment's next
      // device (generate-client-cert.sh ID) was issued by the development CA, its bundle for localhost.
      assert.doesNotMatch(r.stderr, /or \.env/, script);
      assert.match(r.stderr, /CERTS_DIR=\.\/certs-dev npm (start|run stack)/, script);
    }
    assert.deepEqual(snapshot(pki.dir), before, 'nothing was changed');
    assert.ok(!existsSync(join(pki.dir, 'devices', 'field-sim-001')));
  });

  it("on the internal server's copy (ca.crt, ca.crl, internal/, as deployment.md copies them): the set-up and npm start refuse it; --new-ca is the way to a new CA there", () => {
    const copy = join(tmp.dir, 'internal-copy');
    for (const f of ['ca.crt', 'ca.crl', 'internal']) cpSync(join(pki.dir, f), join(copy, f), { recursive: true });
    const before = snapshot(copy);

    const setup = spawnSync(join(repoRoot, 'scripts', 'generate-certificates.sh'), ['fieldstream.example.org'], { env: { ...process.env, CERTS_DIR: copy }, encoding: 'utf8' });
    assert.equal(setup.status, 73, setup.stdout + setup.stderr);
    assert.match(setup.stderr, /^error PKI_CA_KEY_MISSING: .*a server's copy\. Nothing was changed\. .*--new-ca/m);
    assert.throws(() => ensureDevelopmentPki(copy, ['field-sim-001']), (e) => isFieldStreamError(e, 'PKI_NOT_DEVELOPMENT') && e.message.includes("a server's copy"));
    const r = run('start-embedded.ts', copy, tmp.dir);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /error PKI_NOT_DEVELOPMENT: /);
    assert.deepEqual(snapshot(copy), before, 'nothing was changed');

    const fresh = spawnSync(join(repoRoot, 'scripts', 'generate-certificates.sh'), ['fieldstream.example.org', '--new-ca'], { env: { ...process.env, CERTS_DIR: copy }, encoding: 'utf8' });
    assert.equal(fresh.status, 0, fresh.stdout + fresh.stderr);
    assert.notEqual(readFileSync(join(copy, 'ca.crt'), 'utf8'), readFileSync(join(pki.dir, 'ca.crt'), 'utf8'), 'a new CA, asked for');
  });

  it("on the DMZ server's copy with fieldstream-pki.json: refused likewise, naming the domain", () => {
    const copy = join(tmp.dir, 'dmz-copy');
    for (const f of ['ca.crt', 'ca.crl', 'dmz', 'fieldstream-pki.json']) cpSync(join(pki.dir, f), join(copy, f), { recursive: true });
    const before = snapshot(copy);
    const setup = spawnSync(join(repoRoot, 'scripts', 'generate-certificates.sh'), ['fieldstream.example.org', '--renew'], { env: { ...process.env, CERTS_DIR: copy }, encoding: 'utf8' });
    assert.equal(setup.status, 73, setup.stdout + setup.stderr);
    assert.match(setup.stderr, /PKI_CA_KEY_MISSING: .*set up for fieldstream\.example\.org/);
    assert.throws(() => ensureDevelopmentPki(copy, ['field-sim-001']), (e) => isFieldStreamError(e, 'PKI_NOT_DEVELOPMENT') && e.message.includes('fieldstream.example.org'));
    assert.deepEqual(snapshot(copy), before, 'nothing was changed');
  });

  it('a development set (localhost) is kept and completed as before, and an empty folder becomes one', () => {
    const dev = join(tmp.dir, 'dev');
    assert.ok(ensureDevelopmentPki(dev, ['field-sim-001']).created.includes('ca'));
    assert.deepEqual(ensureDevelopmentPki(dev, ['field-sim-001', 'sensor-001']).created, ['devices/sensor-001']);
    // A set-up killed after it made the CA's folder and certificate, before its key: taken for no CA (made again), not for a server's copy.
    const killed = join(tmp.dir, 'killed');
    cpSync(dev, killed, { recursive: true });
    rmSync(join(killed, 'ca', 'ca.key'));
    assert.ok(ensureDevelopmentPki(killed, ['field-sim-001']).created.includes('ca'));
  });
});
