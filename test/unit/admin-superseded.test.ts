import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { X509Certificate } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { adminWith } from '../helpers/admin.ts';
import { holdLock } from '../helpers/admin-waiting.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';
import { EXIT } from '../../scripts/admin/run.ts';
import type { DeviceSummary } from '../../scripts/admin/devices.ts';
import { supersededOf } from '../../pki/superseded.ts';
import { verifyCrl } from '../../shared/security/crl.ts';

/**
 * Rotating a device's certificate for good: the certificates a renewal superseded revoked (devices
 * revoke ID --superseded, or at once with devices renew ID --revoke-old), the newest kept, the
 * device itself not revoked; on certificates issued at test time, through the same revocation log,
 * CRL and gateways' list as a device's revocation.
 */
const run = promisify(execFile);

describe('fieldstream-admin: revoking the certificates a renewal superseded', () => {
  const pki = makeTestPki(['rot-a', 'rot-b', 'rot-c', 'rot-d', 'rot-e', 'rot-f']);
  after(() => pki.cleanup());
  const admin = adminWith(pki.dir);
  const list = async () => JSON.parse((await admin('devices', 'list', '--json')).out) as DeviceSummary[];
  const device = async (id: string) => (await list()).find((d) => d.id === id) as DeviceSummary;
  const serialOf = (id: string) => new X509Certificate(readFileSync(pki.paths.device(id).cert)).serialNumber.toUpperCase();
  const revokedLog = () => (existsSync(join(pki.dir, 'ca', 'revoked.jsonl')) ? readFileSync(join(pki.dir, 'ca', 'revoked.jsonl'), 'utf8') : '');
  const gatewayList = () => (existsSync(join(pki.dir, 'dmz', 'revocation', 'revoked-serials.txt')) ? readFileSync(join(pki.dir, 'dmz', 'revocation', 'revoked-serials.txt'), 'utf8').split('\n').filter(Boolean) : []);
  const crlSerials = () => verifyCrl(readFileSync(pki.paths.crl), readFileSync(pki.paths.caCert, 'utf8')).serials;
  const key = (serial: string) => serial.replace(/^0+(?=.)/, '');

  it('refuses a device with one certificate (no newer one to keep): PKI_NO_NEWER_CERTIFICATE, exit 4, nothing revoked', async () => {
    const log = revokedLog();
    const r = await admin('devices', 'revoke', 'rot-a', '--superseded');
    assert.equal(r.code, EXIT.conflict, r.err);
    assert.match(r.err, /^error PKI_NO_NEWER_CERTIFICATE: .*rot-a/);
    assert.equal(r.out, '');
    assert.equal(revokedLog(), log);
    assert.equal((await device('rot-a')).revoked, false);
  });

  it('lists and shows the superseded certificates still valid after a renewal, and what revokes them', async () => {
    const first = serialOf('rot-b');
    const renewed = await admin('devices', 'renew', 'rot-b');
    assert.equal(renewed.code, EXIT.ok);
    assert.match(renewed.out, /\nThe earlier certificate\(s\) stay valid until they expire: once the device connects with the new one \(the gateway logs its serial\), revoke them with bin\/fieldstream-admin devices revoke rot-b --superseded\.\n/);
    const second = serialOf('rot-b');
    assert.equal((await admin('devices', 'renew', 'rot-b')).code, EXIT.ok);
    const d = await device('rot-b');
    assert.deepEqual(d.superseded.map((s) => s.serial), [first, second]);
    assert.deepEqual((await device('rot-a')).superseded, []);
    const table = (await admin('devices', 'list')).out;
    assert.match(table, /^ID\s+AUTH\s+EXPIRES\s+DAYS LEFT\s+TOKEN\s+REVOKED\s+SIGNING KEY\s+SUPERSEDED\n/);
    assert.match(table, /\nrot-b\s+certificate\s+\S+\s+7(29|30)\s+-\s+no\s+registered\s+2 still valid\n/);
    assert.match(table, /\nrot-a\s+certificate\s+\S+\s+7(29|30)\s+-\s+no\s+registered\s+-\n/);
    assert.match(table, /\nrot-b: 2 superseded certificate\(s\) still valid; once the device connects with its newest, revoke them: bin\/fieldstream-admin devices revoke rot-b --superseded\n/);
    const shown = (await admin('devices', 'show', 'rot-b')).out;
    assert.match(shown, new RegExp(`\\n  superseded:    2 still valid \\(serials ${first}, ${second}\\): devices revoke rot-b --superseded\\n`));
    assert.match(shown, new RegExp(`${first} until \\S+ \\(superseded, still valid\\)`));
  });

  it('revokes every earlier certificate of the device and no other: the log, the CRL and the gateways\' list; the device stays valid', async () => {
    const d = await device('rot-b');
    const old = d.superseded.map((s) => s.serial);
    const newest = serialOf('rot-b');
    const others = ['rot-a', 'rot-c'].map(serialOf);
    const signing = readFileSync(pki.paths.deviceKeyRegistry('rot-b'), 'utf8');
    const r = await admin('devices', 'revoke', 'rot-b', '--superseded');
    assert.equal(r.code, EXIT.ok, r.err);
    assert.match(r.out, new RegExp(`^Revoked the superseded certificates of device rot-b \\(serials ${old.join(', ')}\\); its newest, ${newest}, stays valid\\.\\n`));
    assert.match(r.out, /dmz\/revocation\/revoked-serials\.txt\s+updated: copy it to the DMZ server; gateways apply it within seconds/);
    for (const s of old) {
      assert.ok(gatewayList().includes(s), s);
      assert.ok(crlSerials().has(key(s)), s);
      assert.match(revokedLog(), new RegExp(`"serial":"${s}"`));
    }
    for (const s of [newest, ...others]) {
      assert.ok(!gatewayList().includes(s), s);
      assert.ok(!crlSerials().has(key(s)), s);
    }
    const after_ = await device('rot-b');
    assert.equal(after_.revoked, false);
    assert.equal(after_.revokedAt, undefined, 'the device was not revoked: no date of its revocation');
    assert.equal(after_.signingKeyRegistered, true);
    assert.equal(readFileSync(pki.paths.deviceKeyRegistry('rot-b'), 'utf8'), signing);
    assert.ok(!existsSync(pki.paths.revokedDevices) || !/^rot-b$/m.test(readFileSync(pki.paths.revokedDevices, 'utf8')));
    assert.deepEqual(after_.superseded, []);
    assert.deepEqual(after_.issued.map((i) => i.revoked), [true, true, false]);
    assert.match((await admin('devices', 'list')).out, /\nrot-b\s+certificate\s+\S+\s+7(29|30)\s+-\s+no\s+registered\s+-\n/);
    // Run again: nothing left, said so, exit 0; the device can still be renewed.
    const again = await admin('devices', 'revoke', 'rot-b', '--superseded');
    assert.equal(again.code, EXIT.ok, again.err);
    assert.match(again.out, /^Device rot-b has no superseded certificate left valid/);
    assert.equal((await admin('devices', 'renew', 'rot-b')).code, EXIT.ok);
  });

  it('renew --revoke-old issues the new certificate and revokes every earlier one at once', async () => {
    const before = serialOf('rot-c');
    const r = await admin('devices', 'renew', 'rot-c', '--revoke-old');
    assert.equal(r.code, EXIT.ok, r.err);
    const newest = serialOf('rot-c');
    assert.notEqual(newest, before);
    assert.match(r.out, /^Renewed device rot-c\n/);
    assert.doesNotMatch(r.out, /stay valid until they expire/);
    assert.match(r.out, new RegExp(`\\n  revoked:     the superseded certificate\\(s\\) ${before}: `));
    assert.ok(gatewayList().includes(before));
    assert.ok(crlSerials().has(key(before)));
    assert.ok(!gatewayList().includes(newest));
    const d = await device('rot-c');
    assert.equal(d.revoked, false);
    assert.equal(d.signingKeyRegistered, true);
    assert.deepEqual(d.superseded, []);
  });

  it('refuses when the certificate in place is not the newest the CA issued (a renewal that stopped midway): PKI_CERT_NOT_NEWEST, nothing revoked', async () => {
    const earlier = readFileSync(pki.paths.device('rot-d').cert);
    assert.equal((await admin('devices', 'renew', 'rot-d')).code, EXIT.ok);
    // As a renewal killed between recording its certificate and writing it leaves the folder.
    writeFileSync(pki.paths.device('rot-d').cert, earlier);
    const log = revokedLog();
    const r = await admin('devices', 'revoke', 'rot-d', '--superseded');
    assert.equal(r.code, EXIT.conflict, r.err);
    assert.match(r.err, /^error PKI_CERT_NOT_NEWEST: /);
    assert.equal(revokedLog(), log);
  });

  it('refuses a revoked device (4), an unknown one (3), a token device (4), and options where they do not belong (2)', async () => {
    assert.equal((await admin('devices', 'renew', 'rot-e')).code, EXIT.ok);
    assert.equal((await admin('devices', 'revoke', 'rot-e')).code, EXIT.ok);
    const revoked = await admin('devices', 'revoke', 'rot-e', '--superseded');
    assert.equal(revoked.code, EXIT.conflict);
    assert.match(revoked.err, /^error PKI_DEVICE_REVOKED: /);
    const unknown = await admin('devices', 'revoke', 'nobody', '--superseded');
    assert.equal(unknown.code, EXIT.notFound);
    assert.match(unknown.err, /^error ADMIN_UNKNOWN_DEVICE: /);
    assert.equal((await admin('devices', 'add', 'tok-s', '--token')).code, EXIT.ok);
    const token = await admin('devices', 'revoke', 'tok-s', '--superseded');
    assert.equal(token.code, EXIT.conflict);
    assert.match(token.err, /^error PKI_NO_NEWER_CERTIFICATE: /);
    for (const argv of [['devices', 'renew', 'tok-s', '--token', '--revoke-old'], ['devices', 'add', 'x', '--revoke-old'], ['devices', 'add', 'x', '--superseded'], ['devices', 'revoke', 'rot-a', '--revoke-old'], ['devices', 'renew', 'rot-a', '--superseded']]) {
      const r = await admin(...argv);
      assert.equal(r.code, EXIT.usage, `${argv.join(' ')}: ${r.err}`);
      assert.match(r.err, /^error ADMIN_USAGE: /);
    }
  });

  it('waits for the revocation lock a device\'s revocation takes, and revokes once it is free', async () => {
    const old = serialOf('rot-f');
    assert.equal((await admin('devices', 'renew', 'rot-f')).code, EXIT.ok);
    const held = holdLock(pki.paths.revocationsLock);
    let released = false;
    try {
      const env = { ...process.env, CERTS_DIR: pki.dir, FIELDSTREAM_ENV_FILE: '/dev/null' };
      const running = run(join(REPO_ROOT, 'bin', 'fieldstream-admin'), ['devices', 'revoke', 'rot-f', '--superseded'], { env, cwd: REPO_ROOT });
      await sleep(2000);
      assert.ok(!revokedLog().includes(old), 'nothing revoked while the lock is held');
      held.release();
      released = true;
      const r = await running;
      assert.match(r.stdout, new RegExp(`serials ${old}\\)`));
      assert.ok(gatewayList().includes(old));
    } finally {
      if (!released) held.release();
    }
  });

  it('scripts/generate-client-cert.sh --renew --revoke-old and scripts/revoke-device.sh --superseded do the same', async () => {
    const env = { ...process.env, CERTS_DIR: pki.dir };
    const first = serialOf('rot-a');
    await run(join(REPO_ROOT, 'scripts', 'generate-client-cert.sh'), ['rot-a', '--renew'], { env, cwd: REPO_ROOT });
    const second = serialOf('rot-a');
    const r = await run(join(REPO_ROOT, 'scripts', 'revoke-device.sh'), ['rot-a', '--superseded'], { env, cwd: REPO_ROOT });
    assert.match(r.stdout, new RegExp(`serials ${first}\\)`));
    assert.ok(gatewayList().includes(first) && !gatewayList().includes(second));
    const renewed = await run(join(REPO_ROOT, 'scripts', 'generate-client-cert.sh'), ['rot-a', '--renew', '--revoke-old'], { env, cwd: REPO_ROOT });
    assert.match(renewed.stdout, new RegExp(`revoked:     the superseded certificate\\(s\\) ${second}`));
    assert.ok(gatewayList().includes(second) && !gatewayList().includes(serialOf('rot-a')));
    assert.equal((await device('rot-a')).revoked, false);
    // --revoke-old without --renew: a first certificate supersedes nothing.
    const bad = await run(join(REPO_ROOT, 'scripts', 'generate-client-cert.sh'), ['rot-z', '--revoke-old'], { env, cwd: REPO_ROOT }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(bad.code, 64, bad.stderr);
    assert.ok(!existsSync(pki.paths.device('rot-z').cert));
  });
});

describe('supersededOf: which certificates a device\'s rotation leaves to revoke', () => {
  const now = Date.parse('2026-12-01T00:00:00Z');
  const rec = (serial: string, notAfter: string) => ({ serial, notAfter });
  it('every earlier one neither revoked nor expired; never the newest', () => {
    const issued = [rec('A1', 'Jan  1 00:00:00 2026 GMT'), rec('B2', 'Dec  1 00:00:00 2027 GMT'), rec('C3', 'Dec  1 00:00:00 2027 GMT'), rec('D4', 'Dec  1 00:00:00 2028 GMT')];
    assert.deepEqual(supersededOf(issued, new Set(['C3']), now).map((r) => r.serial), ['B2'], 'A1 expired, C3 revoked, D4 the newest');
    assert.deepEqual(supersededOf(issued.slice(0, 1), new Set(), now), []);
    assert.deepEqual(supersededOf([], new Set(), now), []);
    // an expiry the log does not say is taken as still valid: revoked rather than left
    assert.deepEqual(supersededOf([rec('E5', ''), rec('F6', 'Dec  1 00:00:00 2028 GMT')], new Set(), now).map((r) => r.serial), ['E5']);
  });
});
