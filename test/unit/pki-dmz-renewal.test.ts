import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { pkiPaths } from '../../pki/layout.ts';
import { loadCa, setupPki } from '../../pki/onboarding.ts';
import { issueDeviceCertificate } from '../../pki/device-bundle.ts';
import { createCertificateAuthority, issueCertificate } from '../../pki/certificates.ts';
import { ensureDevelopmentPki } from '../../embedded/dev-pki.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { tempDir } from '../helpers/pki.ts';

const repoRoot = join(import.meta.dirname, '..', '..');
const openssl = (...args: string[]) => spawnSync('openssl', args, { encoding: 'utf8' });
const serial = (path: string) => new X509Certificate(readFileSync(path)).serialNumber.toUpperCase();
const DMZ = ['dmz/edge', 'dmz/gateway', 'dmz/gateway-client', 'dmz/mosquitto'];
const INTERNAL = ['internal/mosquitto', 'internal/bridge', 'internal/distributor', 'internal/monitor'];

/**
 * `generate-certificates.sh DOMAIN --renew-dmz`: a compromise of the DMZ server is recovered from
 * without a new CA, so without new bundles for the devices. The DMZ's service certificates are
 * issued again and every earlier one revoked (CRL, gateways' list); the DMZ broker's comes from an
 * anchor of its own that its clients trust alone, so the bridge, which checks no CRL, refuses the
 * old one; the gateway's likewise, which Caddy trusts alone for its hop to the gateways (no CRL
 * there either). (test/e2e/revocation-dmz.test.ts: the same with real Mosquittos and Caddy.)
 */
describe('renewing the DMZ certificates after a compromise (--renew-dmz)', () => {
  const tmp = tempDir('pki-dmz');
  const root = join(tmp.dir, 'certs');
  const p = pkiPaths(root);
  const old = new Map<string, { serial: string; pem: string; key: string }>();
  const kept = new Map<string, string>();
  let output = '';
  before(() => {
    setupPki(root, { domain: 'fieldstream.example.org', edgeHosts: ['dmz2.example.org'], dmzBrokerHosts: ['dmz.internal.example'] });
    issueDeviceCertificate(root, 'pump-1');
    for (const f of DMZ) old.set(f, { serial: serial(p.service(f).cert), pem: readFileSync(p.service(f).cert, 'utf8'), key: readFileSync(p.service(f).key, 'utf8') });
    for (const f of [...INTERNAL.map((i) => p.service(i).cert), p.device('pump-1').cert, p.caCert, p.storedFeedKey]) kept.set(f, readFileSync(f, 'utf8'));
  });
  after(() => tmp.cleanup());

  it('a set gives the DMZ broker\'s clients its anchor from the start: the CA, which issued the broker\'s certificate', () => {
    for (const anchor of Object.values(p.dmzBrokerCa)) {
      assert.ok(new X509Certificate(readFileSync(anchor)).raw.equals(new X509Certificate(readFileSync(p.publicCa)).raw), anchor);
      assert.equal(openssl('verify', '-CAfile', anchor, p.service('dmz/mosquitto').cert).status, 0);
    }
    // The gateway's likewise, for Caddy: what Caddy trusted before (the CA), so nothing changes until a --renew-dmz.
    assert.ok(new X509Certificate(readFileSync(p.gatewayCa)).raw.equals(new X509Certificate(readFileSync(p.publicCa)).raw));
    assert.equal(openssl('verify', '-CAfile', p.gatewayCa, '-verify_hostname', 'gateway', p.service('dmz/gateway').cert).status, 0);
    // Its client certificate to the DMZ broker is the CA's, and only a client's.
    assert.equal(openssl('verify', '-CAfile', p.publicCa, '-purpose', 'sslclient', p.service('dmz/gateway-client').cert).status, 0);
    assert.notEqual(openssl('verify', '-CAfile', p.publicCa, '-purpose', 'sslserver', p.service('dmz/gateway-client').cert).status, 0);
    assert.match(openssl('x509', '-in', p.service('dmz/gateway-client').cert, '-noout', '-subject').stdout, /CN ?= ?gateway\b/);
  });

  it('the script issues the DMZ certificates again without the names given at the set-up, and revokes the old ones', () => {
    output = execFileSync(join(repoRoot, 'scripts', 'generate-certificates.sh'), ['fieldstream.example.org', '--renew-dmz'], { env: { ...process.env, CERTS_DIR: root }, encoding: 'utf8' });
    for (const f of DMZ) assert.notEqual(serial(p.service(f).cert), old.get(f)?.serial, f);
    const crl = openssl('crl', '-in', join(root, 'ca.crl'), '-noout', '-text').stdout;
    const listed = readFileSync(join(root, 'dmz', 'revocation', 'revoked-serials.txt'), 'utf8');
    for (const f of DMZ) {
      const s = old.get(f)?.serial as string;
      assert.match(crl, new RegExp(`Serial Number: ${s}`), `${f} in the CRL`);
      assert.ok(listed.includes(s), `${f} in the gateways' list`);
      assert.ok(output.includes(s), `${f} reported`);
    }
    for (const f of DMZ) assert.ok(!crl.includes(serial(p.service(f).cert)), `the new ${f} is not revoked`);
    // The names the old certificates answered to (--edge-host, --dmz-broker-host), not given now.
    assert.match(openssl('x509', '-in', p.service('dmz/edge').cert, '-noout', '-ext', 'subjectAltName').stdout, /DNS:dmz2\.example\.org/);
    assert.match(openssl('x509', '-in', p.service('dmz/mosquitto').cert, '-noout', '-ext', 'subjectAltName').stdout, /DNS:dmz\.internal\.example/);
    assert.match(output, /docker-compose -f docker-compose\.dmz\.yml up -d --force-recreate/);
    // The device's client reads a CRL copied over its bundle's again (docs/operations.md): no restart
    // of every device is asked for.
    assert.match(output, /certs\/ca\.crl over each device's certs\/ca\.crl \(its bundle folder\): its client reads it\s+again without a restart/);
    assert.doesNotMatch(output, /restart field-client/);
  });

  it('leaves the CA, the internal certificates, the stored-feed key and the devices as they were', () => {
    for (const [f, text] of kept) assert.equal(readFileSync(f, 'utf8'), text, f);
    assert.equal(openssl('verify', '-CAfile', p.publicCa, '-crl_check', '-CRLfile', join(root, 'ca.crl'), p.device('pump-1').cert).status, 0);
    // The gateway's client certificate (what the DMZ broker checks, with the CA and its CRL) and the edge's are the CA's.
    assert.equal(openssl('verify', '-CAfile', p.publicCa, '-crl_check', '-CRLfile', join(root, 'ca.crl'), p.service('dmz/gateway-client').cert, p.service('dmz/edge').cert).status, 0);
  });

  it("the gateway's new server certificate verifies with its new anchor only, as Caddy checks it (name \"gateway\"); the old one, and every other of the CA, do not", () => {
    assert.match(openssl('x509', '-in', p.gatewayCa, '-noout', '-subject').stdout, /gateway CA/);
    assert.notEqual(readFileSync(p.gatewayCa, 'utf8'), readFileSync(p.dmzBrokerCa.dmz, 'utf8'), 'an anchor for each');
    const oldGateway = join(tmp.dir, 'old-gateway.crt');
    writeFileSync(oldGateway, old.get('dmz/gateway')?.pem as string);
    assert.equal(openssl('verify', '-CAfile', p.gatewayCa, '-verify_hostname', 'gateway', '-purpose', 'sslserver', p.service('dmz/gateway').cert).status, 0);
    assert.notEqual(openssl('verify', '-CAfile', p.gatewayCa, oldGateway).status, 0, 'the stolen gateway certificate');
    for (const other of [p.service('dmz/gateway-client').cert, p.service('dmz/edge').cert, p.device('pump-1').cert]) {
      assert.notEqual(openssl('verify', '-CAfile', p.gatewayCa, other).status, 0, other);
    }
    assert.notEqual(openssl('verify', '-CAfile', p.publicCa, p.service('dmz/gateway').cert).status, 0);
  });

  it('the DMZ broker\'s new certificate verifies with its new anchor only; the old one, and the edge certificate (same host), do not', () => {
    const anchor = readFileSync(p.dmzBrokerCa.internal, 'utf8');
    assert.equal(readFileSync(p.dmzBrokerCa.dmz, 'utf8'), anchor);
    assert.match(openssl('x509', '-in', p.dmzBrokerCa.internal, '-noout', '-subject').stdout, /DMZ broker CA/);
    const oldBroker = join(tmp.dir, 'old-broker.crt');
    writeFileSync(oldBroker, old.get('dmz/mosquitto')?.pem as string);
    assert.equal(openssl('verify', '-CAfile', p.dmzBrokerCa.internal, '-verify_hostname', 'dmz.internal.example', p.service('dmz/mosquitto').cert).status, 0);
    assert.notEqual(openssl('verify', '-CAfile', p.dmzBrokerCa.internal, oldBroker).status, 0);
    assert.notEqual(openssl('verify', '-CAfile', p.dmzBrokerCa.internal, p.service('dmz/edge').cert).status, 0);
    assert.notEqual(openssl('verify', '-CAfile', p.publicCa, p.service('dmz/mosquitto').cert).status, 0);
  });

  it("docs/operations.md's openssl verify commands pass as printed on a renewed set (the anchor in certs/internal/ is no certificate of the CA)", () => {
    const docs = readFileSync(join(repoRoot, 'docs', 'operations.md'), 'utf8');
    const commands = docs.split('\n').filter((l) => l.startsWith('openssl verify '));
    assert.ok(commands.length >= 2, 'the commands are printed');
    for (const command of commands) {
      const run = spawnSync('bash', ['-c', command], { cwd: tmp.dir, encoding: 'utf8' });
      assert.equal(run.status, 0, `${command}\n${run.stdout}${run.stderr}`);
    }
  });

  it('a later --renew keeps the DMZ broker on an anchor of its own (a new one), never the CA again; a plain run changes nothing', () => {
    const before = readFileSync(p.dmzBrokerCa.internal, 'utf8');
    const report = setupPki(root, { domain: 'fieldstream.example.org' });
    assert.deepEqual(report.created, []);
    assert.equal(readFileSync(p.dmzBrokerCa.internal, 'utf8'), before);
    setupPki(root, { domain: 'fieldstream.example.org', renew: true, dmzBrokerHosts: ['dmz.internal.example'], edgeHosts: ['dmz2.example.org'] });
    const after = readFileSync(p.dmzBrokerCa.internal, 'utf8');
    assert.notEqual(after, before);
    assert.notEqual(openssl('verify', '-CAfile', p.publicCa, p.service('dmz/mosquitto').cert).status, 0);
    assert.equal(openssl('verify', '-CAfile', p.dmzBrokerCa.dmz, p.service('dmz/mosquitto').cert).status, 0);
    assert.notEqual(openssl('verify', '-CAfile', p.publicCa, p.service('dmz/gateway').cert).status, 0, "the gateway's too");
    assert.equal(openssl('verify', '-CAfile', p.gatewayCa, p.service('dmz/gateway').cert).status, 0);
  });

  it('mends the anchor files from the broker\'s certificate: a run killed between them, Docker\'s folder, a set made before them', () => {
    writeFileSync(p.dmzBrokerCa.internal, readFileSync(p.publicCa));
    rmSync(p.dmzBrokerCa.dmz);
    mkdirSync(p.dmzBrokerCa.dmz);
    const report = setupPki(root, { domain: 'fieldstream.example.org' });
    assert.deepEqual(report.created.sort(), ['dmz/dmz-broker-ca.crt', 'internal/dmz-broker-ca.crt']);
    for (const anchor of Object.values(p.dmzBrokerCa)) assert.equal(openssl('verify', '-CAfile', anchor, p.service('dmz/mosquitto').cert).status, 0);
  });

  it('never goes back to the CA as the anchor once DMZ certificates of it were revoked: not with certs/dmz/ moved off this machine, nor with a broker certificate of the CA put back', () => {
    // The DMZ's keys need not stay on the machine that keeps the CA: an operator who moved
    // certs/dmz/ to the DMZ server, then ran the set-up again (a new --internal-broker-host, the
    // upgrade step), had the broker's certificate issued by the CA again and the CA written as the
    // anchor: the bridge (no CRL) took the stolen, revoked broker certificate, and the edge's, again.
    const copy = join(tmp.dir, 'moved');
    execFileSync('cp', ['-a', root, copy]);
    const q = pkiPaths(copy);
    const stolenBroker = join(tmp.dir, 'stolen-broker.crt');
    writeFileSync(stolenBroker, old.get('dmz/mosquitto')?.pem as string);
    const stolenEdge = join(tmp.dir, 'stolen-edge.crt');
    writeFileSync(stolenEdge, old.get('dmz/edge')?.pem as string);
    rmSync(join(copy, 'dmz'), { recursive: true });
    setupPki(copy, { domain: 'fieldstream.example.org', dmzBrokerHosts: ['dmz.internal.example'] });
    for (const anchor of Object.values(q.dmzBrokerCa)) {
      assert.notEqual(openssl('verify', '-CAfile', anchor, '-verify_hostname', 'dmz.internal.example', stolenBroker).status, 0, `${anchor}: the stolen broker certificate`);
      assert.notEqual(openssl('verify', '-CAfile', anchor, '-verify_hostname', 'fieldstream.example.org', stolenEdge).status, 0, `${anchor}: the stolen edge certificate`);
      assert.equal(openssl('verify', '-CAfile', anchor, '-verify_hostname', 'dmz.internal.example', q.service('dmz/mosquitto').cert).status, 0, `${anchor}: the broker's own`);
    }
    const stolenGateway = join(tmp.dir, 'stolen-gateway.crt');
    writeFileSync(stolenGateway, old.get('dmz/gateway')?.pem as string);
    assert.notEqual(openssl('verify', '-CAfile', q.gatewayCa, stolenGateway).status, 0, 'Caddy\'s anchor: the stolen gateway certificate');
    assert.equal(openssl('verify', '-CAfile', q.gatewayCa, '-verify_hostname', 'gateway', q.service('dmz/gateway').cert).status, 0, "Caddy's anchor: the gateway's own");
    // The stolen (revoked) certificate of the CA put back as the broker's, with its key: refused, not
    // made the anchor. (Without its key, it is no pair, and is issued again from an anchor of its own.)
    writeFileSync(q.service('dmz/mosquitto').cert, old.get('dmz/mosquitto')?.pem as string);
    writeFileSync(q.service('dmz/mosquitto').key, old.get('dmz/mosquitto')?.key as string);
    const before = readFileSync(q.dmzBrokerCa.internal, 'utf8');
    assert.throws(() => setupPki(copy, { domain: 'fieldstream.example.org' }), (e) => e instanceof FieldStreamError && e.code === 'PKI_DMZ_ANCHOR_MISSING');
    assert.equal(readFileSync(q.dmzBrokerCa.internal, 'utf8'), before);
  });

  it("a set renewed before the gateway had an anchor (its gateway certificate of the CA, DMZ certificates revoked): the set-up refuses to make the CA Caddy's anchor, --renew-dmz mends it", () => {
    // What an earlier version's --renew-dmz left: a new gateway certificate of the CA. Written as
    // Caddy's anchor, the CA would let Caddy take the stolen, revoked one again: the gap itself.
    const copy = join(tmp.dir, 'renewed-before');
    execFileSync('cp', ['-a', root, copy]);
    const q = pkiPaths(copy);
    const kc = issueCertificate(loadCa(copy), { commonName: 'gateway', organizationalUnit: 'services', role: 'both', subjectAltNames: ['gateway', 'localhost', '127.0.0.1', '::1'], validityDays: 825 });
    writeFileSync(q.service('dmz/gateway').cert, kc.certPem);
    writeFileSync(q.service('dmz/gateway').key, kc.keyPem);
    rmSync(q.gatewayCa);
    assert.throws(
      () => setupPki(copy, { domain: 'fieldstream.example.org' }),
      (e) => e instanceof FieldStreamError && e.code === 'PKI_DMZ_ANCHOR_MISSING' && /gateway\.crt/.test(e.message) && /Caddy/.test(e.message),
    );
    assert.equal(existsSync(q.gatewayCa), false, 'no anchor written');
    setupPki(copy, { domain: 'fieldstream.example.org', renewDmz: true });
    assert.equal(openssl('verify', '-CAfile', q.gatewayCa, '-verify_hostname', 'gateway', q.service('dmz/gateway').cert).status, 0);
    const replaced = join(tmp.dir, 'replaced-gateway.crt');
    writeFileSync(replaced, kc.certPem);
    assert.notEqual(openssl('verify', '-CAfile', q.gatewayCa, replaced).status, 0, 'the certificate it replaced');
  });

  it('writes the anchor files holding the revocation lock: a backup (which reads under it) or a --renew-dmz never sees them apart from the broker\'s certificate', async () => {
    // A run that wrote them after letting the lock go could put an older anchor over the one a
    // concurrent --renew-dmz had just written with its broker certificate (the bridge then refused
    // the broker), and a backup taken meanwhile held a broker certificate and an anchor apart.
    const copy = join(tmp.dir, 'locked');
    execFileSync('cp', ['-a', root, copy]);
    const anchor = pkiPaths(copy).dmzBrokerCa.internal;
    writeFileSync(anchor, readFileSync(p.publicCa)); // to be mended by the run below
    const holderCode = `
      import { readFileSync } from 'node:fs';
      import { underRevocationLock } from ${JSON.stringify(join(repoRoot, 'pki', 'revocation.ts'))};
      underRevocationLock(${JSON.stringify(copy)}, () => {
        const before = readFileSync(${JSON.stringify(anchor)}, 'utf8');
        process.stdout.write('held\\n');
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 6000);
        process.stdout.write(readFileSync(${JSON.stringify(anchor)}, 'utf8') === before ? 'unchanged\\n' : 'changed\\n');
      });`;
    const holder = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', holderCode], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
    let said = '';
    holder.stdout.setEncoding('utf8');
    await new Promise<void>((resolve, reject) => {
      holder.stdout.on('data', (d: string) => {
        said += d;
        if (said.includes('held')) resolve();
      });
      holder.on('exit', () => reject(new Error(`the lock holder ended: ${said}`)));
    });
    const run = spawn(join(repoRoot, 'scripts', 'generate-certificates.sh'), ['fieldstream.example.org'], { env: { ...process.env, CERTS_DIR: copy }, stdio: 'ignore' });
    const [[holderCode_], [runCode]] = await Promise.all([once(holder, 'exit'), once(run, 'exit')]);
    assert.equal(holderCode_, 0);
    assert.equal(runCode, 0);
    assert.match(said, /unchanged/, 'the anchor file was not written while another command held the lock');
    assert.equal(openssl('verify', '-CAfile', anchor, pkiPaths(copy).service('dmz/mosquitto').cert).status, 0, 'mended once the lock was free');
  });

  it('npm start runs on a development set renewed so (its clients verify the broker with the anchor), and refuses the deployment\'s', () => {
    const dev = join(tmp.dir, 'dev-certs');
    ensureDevelopmentPki(dev, ['pump-1']);
    execFileSync(join(repoRoot, 'scripts', 'generate-certificates.sh'), ['localhost', '--renew-dmz'], { env: { ...process.env, CERTS_DIR: dev }, encoding: 'utf8' });
    assert.doesNotThrow(() => ensureDevelopmentPki(dev, ['pump-1', 'pump-2']));
    assert.throws(() => ensureDevelopmentPki(root, ['pump-1']), (e) => e instanceof FieldStreamError && e.code === 'PKI_NOT_DEVELOPMENT');
  });

  it('says so when a DMZ certificate is not on this machine, so its names (--edge-host, --dmz-broker-host of the set-up) cannot be kept', () => {
    const copy = join(tmp.dir, 'without-dmz');
    execFileSync('cp', ['-a', root, copy]);
    rmSync(join(copy, 'dmz'), { recursive: true });
    const out = execFileSync(join(repoRoot, 'scripts', 'generate-certificates.sh'), ['fieldstream.example.org', '--renew-dmz'], { env: { ...process.env, CERTS_DIR: copy }, encoding: 'utf8' });
    // The new broker certificate names the domain only: a bridge dialling dmz.internal.example fails its host name check.
    assert.doesNotMatch(openssl('x509', '-in', pkiPaths(copy).service('dmz/mosquitto').cert, '-noout', '-ext', 'subjectAltName').stdout, /dmz\.internal\.example/);
    assert.match(out, /dmz\/mosquitto\.crt was not there/);
    assert.match(out, /--dmz-broker-host/);
    // Given again, they are there, and nothing is said.
    const again = execFileSync(join(repoRoot, 'scripts', 'generate-certificates.sh'), ['fieldstream.example.org', '--renew-dmz'], { env: { ...process.env, CERTS_DIR: root }, encoding: 'utf8' });
    assert.doesNotMatch(again, /was not there/);
  });

  it('refuses --renew-dmz with --new-ca, and without a CA', () => {
    const both = spawnSync(join(repoRoot, 'scripts', 'generate-certificates.sh'), ['fieldstream.example.org', '--renew-dmz', '--new-ca'], { env: { ...process.env, CERTS_DIR: root }, encoding: 'utf8' });
    assert.equal(both.status, 64);
    assert.match(both.stderr, /ADMIN_USAGE/);
    const none = spawnSync(join(repoRoot, 'scripts', 'generate-certificates.sh'), ['fieldstream.example.org', '--renew-dmz'], { env: { ...process.env, CERTS_DIR: join(tmp.dir, 'empty') }, encoding: 'utf8' });
    assert.equal(none.status, 65);
    assert.match(none.stderr, /PKI_CA_MISSING/);
  });

  it('refuses --renew-service for a name that is no internal client certificate, a server or DMZ certificate, with --new-ca, and without a CA: nothing changed', () => {
    const run = (args: string[], dir = root) => spawnSync(join(repoRoot, 'scripts', 'generate-certificates.sh'), ['fieldstream.example.org', ...args], { env: { ...process.env, CERTS_DIR: dir }, encoding: 'utf8' });
    const crl = readFileSync(join(root, 'ca.crl'), 'utf8');
    const cases: Array<[string[], number, RegExp]> = [
      [['--renew-service', 'nope'], 64, /ADMIN_USAGE: --renew-service "nope" is not an internal service's certificate: give one of bridge, distributor, command-api, consumer, console, monitor/],
      [['--renew-service', 'internal-mosquitto'], 64, /ADMIN_USAGE: .*internal\/mosquitto is a server certificate, which no client checks against a CRL/],
      [['--renew-service', 'gateway'], 64, /ADMIN_USAGE: .*dmz\/gateway is one of the DMZ's certificates, which --renew-dmz issues again/],
      [['--renew-service', 'consumer', '--new-ca'], 64, /ADMIN_USAGE: --renew-service and --new-ca do not go together/],
    ];
    for (const [args, status, message] of cases) {
      const r = run(args);
      assert.equal(r.status, status, args.join(' '));
      assert.match(r.stderr, message);
      assert.match(r.stderr, /usage:[\s\S]*--renew-service NAME/);
    }
    const none = run(['--renew-service', 'consumer'], join(tmp.dir, 'empty'));
    assert.equal(none.status, 65);
    assert.match(none.stderr, /PKI_CA_MISSING: --renew-service/);
    assert.equal(readFileSync(join(root, 'ca.crl'), 'utf8'), crl);
    assert.throws(() => setupPki(root, { domain: 'fieldstream.example.org', renewServices: ['mosquitto'] }), (e) => e instanceof FieldStreamError && e.code === 'PKI_INVALID_NAME');
  });

  it('--renew-dmz and --renew-service in one run: each set issued again and revoked, reported apart, under one CRL', () => {
    const was = new Map([...DMZ, 'internal/console'].map((f) => [f, serial(p.service(f).cert)]));
    const distributor = readFileSync(p.service('internal/distributor').cert, 'utf8');
    const report = setupPki(root, { domain: 'fieldstream.example.org', renewDmz: true, renewServices: ['console'], dmzBrokerHosts: ['dmz.internal.example'] });
    // Every earlier console certificate: the one in place, and the one the --renew above replaced without revoking it.
    const earlier = readFileSync(join(p.caDir, 'issued.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { name: string; serial: string })
      .filter((r) => r.name === 'internal/console' && r.serial !== serial(p.service('internal/console').cert)).map((r) => r.serial);
    assert.ok(earlier.length >= 2 && earlier.includes(was.get('internal/console') as string));
    assert.deepEqual(report.revokedServices?.map((r) => ({ ...r, serials: [...r.serials].sort() })), [{ file: 'internal/console', serials: earlier.sort() }]);
    assert.deepEqual([...(report.revoked ?? [])].sort(), DMZ.map((f) => was.get(f)).sort());
    const crl = openssl('crl', '-in', join(root, 'ca.crl'), '-noout', '-text').stdout;
    for (const s of was.values()) assert.match(crl, new RegExp(`Serial Number: ${s}`));
    assert.equal(openssl('verify', '-CAfile', p.publicCa, '-crl_check', '-CRLfile', join(root, 'ca.crl'), p.service('internal/console').cert, p.service('dmz/gateway-client').cert).status, 0);
    assert.equal(readFileSync(p.service('internal/distributor').cert, 'utf8'), distributor);
  });

  it('a DMZ broker certificate of neither the CA nor an anchor of its own: PKI_DMZ_ANCHOR_MISSING, mended by --renew-dmz', () => {
    const other = createCertificateAuthority('Not ours', 1);
    const kc = issueCertificate(other, { commonName: 'dmz-mosquitto', organizationalUnit: 'services', role: 'server', subjectAltNames: ['dmz-mosquitto', 'fieldstream.example.org', 'dmz.internal.example', 'localhost', '127.0.0.1', '::1'], validityDays: 1 });
    writeFileSync(p.service('dmz/mosquitto').cert, kc.certPem);
    writeFileSync(p.service('dmz/mosquitto').key, kc.keyPem);
    assert.throws(() => setupPki(root, { domain: 'fieldstream.example.org' }), (e) => e instanceof FieldStreamError && e.code === 'PKI_DMZ_ANCHOR_MISSING');
    setupPki(root, { domain: 'fieldstream.example.org', renewDmz: true });
    assert.equal(openssl('verify', '-CAfile', p.dmzBrokerCa.internal, p.service('dmz/mosquitto').cert).status, 0);
  });
});
