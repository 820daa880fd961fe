import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { makeTestPki } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';
import { EXIT, runAdmin, USAGE } from '../../scripts/admin/run.ts';
import type { DeviceSummary } from '../../scripts/admin/devices.ts';

/**
 * fieldstream-admin's device commands on a PKI made at test time: arguments, messages and exit
 * codes; issuing and revoking through the same pki/ code as scripts/generate-client-cert.sh and
 * scripts/revoke-device.sh, which keep working beside it.
 */
const run = promisify(execFile);

describe('fieldstream-admin devices', () => {
  const pki = makeTestPki(['dev-a', 'dev-b']);
  after(() => pki.cleanup());

  /** Runs a command line in this process with the test PKI as CERTS_DIR. */
  const admin = async (...argv: string[]) => {
    let out = '';
    let err = '';
    const code = await runAdmin(argv, { out: (t) => void (out += t), err: (t) => void (err += t), env: { CERTS_DIR: pki.dir }, cwd: REPO_ROOT });
    return { code, out, err };
  };
  const list = async () => JSON.parse((await admin('devices', 'list', '--json')).out) as DeviceSummary[];

  it('answers bad arguments with its usage and exit 2', async () => {
    for (const argv of [[], ['devices'], ['devices', 'frobnicate'], ['nonsense'], ['devices', 'show'], ['devices', 'show', 'a', 'b'], ['devices', 'list', 'extra'], ['devices', 'list', '--bogus'], ['devices', 'add', 'x', '--force'], ['backup'], ['devices', 'add', '../etc'], ['devices', 'add', 'dev-c', '--days', '0'], ['devices', 'add', 'dev-c', '--days', 'ten'], ['restore', 'f', '--expect-sha256', 'abc']]) {
      const r = await admin(...argv);
      assert.equal(r.code, EXIT.usage, `${argv.join(' ')}: ${r.err}`);
      assert.match(r.err, /^error ADMIN_USAGE: /, argv.join(' '));
      assert.ok(r.err.includes(USAGE), argv.join(' '));
      assert.equal(r.out, '');
    }
    const help = await admin('--help');
    assert.equal(help.code, EXIT.ok);
    assert.equal(help.out, USAGE);
  });

  it('lists every device with its certificate expiry, revoked flag and signing key', async () => {
    const devices = await list();
    assert.deepEqual(devices.map((d) => d.id), ['dev-a', 'dev-b']);
    for (const d of devices) {
      assert.equal(d.revoked, false);
      assert.equal(d.signingKeyRegistered, true);
      assert.ok(d.certificate && d.certificate.daysLeft >= 729 && d.certificate.daysLeft <= 730, JSON.stringify(d.certificate));
      assert.equal(d.issued.length, 1);
    }
    const text = await admin('devices', 'list');
    assert.equal(text.code, EXIT.ok);
    assert.match(text.out, /^ID\s+AUTH\s+EXPIRES\s+DAYS LEFT\s+TOKEN\s+REVOKED\s+SIGNING KEY\n/);
    assert.match(text.out, /\ndev-a\s+certificate\s+\d{4}-\d\d-\d\dT[\d:.]+Z\s+7(29|30)\s+-\s+no\s+registered\n/);
    for (const d of devices) assert.deepEqual([d.auth, d.expiresAt], ['certificate', d.certificate?.notAfter]);
  });

  it('shows one device, and says 3 for an unknown one', async () => {
    const shown = await admin('devices', 'show', 'dev-a');
    assert.equal(shown.code, EXIT.ok);
    assert.match(shown.out, /^device dev-a\n  auth:          client certificate, expires \d{4}-[\d-]+T[\d:.]+Z\n  certificate:   serial [0-9A-F]+, valid .* \(\d+ days left\)\n/);
    assert.match(shown.out, /signing key:   registered/);
    const unknown = await admin('devices', 'show', 'nobody');
    assert.equal(unknown.code, EXIT.notFound);
    assert.match(unknown.err, /^error ADMIN_UNKNOWN_DEVICE: /);
  });

  it('adds a token device with --days: the expiry is printed, listed and shown; --days is checked as for certificates', async () => {
    const before = Date.now();
    const r = await admin('devices', 'add', 'tok-x', '--token', '--days', '10');
    assert.equal(r.code, EXIT.ok, r.err);
    const printed = /\n  expires: +(\S+) \(10 days;/.exec(r.out)?.[1];
    assert.ok(printed, r.out);
    const ms = Date.parse(printed) - before;
    assert.ok(ms >= 10 * 86_400_000 - 1000 && ms <= 10 * 86_400_000 + 60_000, printed);
    const d = (await list()).find((x) => x.id === 'tok-x');
    assert.deepEqual([d?.auth, d?.expiresAt, d?.token?.state === 'active' && d.token.expiresAt, d?.token?.state === 'active' && d.token.expired], ['token', printed, printed, false]);
    const text = await admin('devices', 'list');
    assert.match(text.out, new RegExp(`\\ntok-x\\s+token\\s+${printed.replace(/\./g, '\\.')}\\s+(9|10)\\s+active\\s+no\\s+registered\\n`));
    const shown = await admin('devices', 'show', 'tok-x');
    assert.match(shown.out, new RegExp(`\\n  auth: +device token, expires ${printed.replace(/\./g, '\\.')}\\n`));
    assert.match(shown.out, /\n  token: +active since \S+, expires \S+ \((9|10) days left\)\n/);
    for (const bad of ['0', '3651', '1.5']) assert.equal((await admin('devices', 'renew', 'tok-x', '--token', '--days', bad)).code, EXIT.usage, bad);
    const renewed = await admin('devices', 'renew', 'tok-x', '--token');
    assert.equal(renewed.code, EXIT.ok, renewed.err);
    assert.match(renewed.out, /\n  expires: +\S+ \(730 days;/, 'the default: the device certificates\' validity');
  });

  it('adds a device: certificate, key 0600, signing key registered, bundle; a second add is refused with 4', async () => {
    const r = await admin('devices', 'add', 'dev-c', '--days', '30');
    assert.equal(r.code, EXIT.ok, r.err);
    assert.match(r.out, /^Added device dev-c\n/);
    const d = pki.paths.device('dev-c');
    assert.equal(statSync(d.key).mode & 0o777, 0o600);
    assert.equal(statSync(pki.paths.deviceKeyRegistry('dev-c')).mode & 0o777, 0o600);
    assert.equal(readFileSync(d.signingKey, 'utf8'), readFileSync(pki.paths.deviceKeyRegistry('dev-c'), 'utf8'));
    assert.ok(existsSync(pki.paths.bundle('dev-c')));
    const c = (await list()).find((x) => x.id === 'dev-c');
    assert.ok(c?.certificate && c.certificate.daysLeft >= 29 && c.certificate.daysLeft <= 30);
    const again = await admin('devices', 'add', 'dev-c');
    assert.equal(again.code, EXIT.conflict);
    assert.match(again.err, /^error PKI_CERT_EXISTS: /);
  });

  it('renews a device: a new serial, the same signing key; an unknown device is 3', async () => {
    const before = (await list()).find((x) => x.id === 'dev-b');
    const signing = readFileSync(pki.paths.device('dev-b').signingKey, 'utf8');
    const r = await admin('devices', 'renew', 'dev-b');
    assert.equal(r.code, EXIT.ok, r.err);
    assert.match(r.out, /^Renewed device dev-b\n/);
    const after_ = (await list()).find((x) => x.id === 'dev-b');
    assert.notEqual(after_?.certificate?.serial, before?.certificate?.serial);
    assert.equal(after_?.issued.length, 2);
    assert.equal(readFileSync(pki.paths.device('dev-b').signingKey, 'utf8'), signing);
    assert.equal(readFileSync(pki.paths.deviceKeyRegistry('dev-b'), 'utf8'), signing);
    const unknown = await admin('devices', 'renew', 'nobody');
    assert.equal(unknown.code, EXIT.notFound);
  });

  it('revokes a device as scripts/revoke-device.sh does; it cannot be added or renewed again (4); an unknown one is 3', async () => {
    const r = await admin('devices', 'revoke', 'dev-b');
    assert.equal(r.code, EXIT.ok, r.err);
    assert.match(r.out, /^Revoked device dev-b \(certificate serials [0-9A-F]+, [0-9A-F]+\)/);
    const b = (await list()).find((x) => x.id === 'dev-b');
    assert.equal(b?.revoked, true);
    assert.ok(b?.revokedAt);
    assert.equal(b?.signingKeyRegistered, false);
    assert.ok(b?.issued.every((i) => i.revoked));
    const serials = readFileSync(join(pki.dir, 'dmz', 'revocation', 'revoked-serials.txt'), 'utf8');
    for (const i of b?.issued ?? []) assert.ok(serials.includes(i.serial));
    assert.match(readFileSync(join(pki.dir, 'internal', 'revoked-devices.txt'), 'utf8'), /^dev-b$/m);
    assert.equal((await admin('devices', 'add', 'dev-b')).code, EXIT.conflict);
    assert.equal((await admin('devices', 'renew', 'dev-b')).code, EXIT.conflict);
    assert.equal((await admin('devices', 'revoke', 'nobody')).code, EXIT.notFound);
    assert.match((await admin('devices', 'list')).out, /\ndev-b\s.*\syes \(/);
  });

  it('runs as bin/fieldstream-admin and as bin/fieldstream admin, with its exit codes; the old scripts keep working beside it', async () => {
    const env = { PATH: process.env.PATH, CERTS_DIR: pki.dir, FIELDSTREAM_ENV_FILE: '/dev/null' };
    const bin = (file: string, args: string[]) =>
      run(join(REPO_ROOT, 'bin', file), args, { env, cwd: REPO_ROOT }).then(
        (r) => ({ code: 0, ...r }),
        (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
      );
    assert.equal((await bin('fieldstream-admin', [])).code, EXIT.usage);
    assert.equal((await bin('fieldstream-admin', ['devices', 'show', 'nobody'])).code, EXIT.notFound);
    // a device added by the old script is the admin command's as well, and the other way round
    await run(join(REPO_ROOT, 'scripts', 'generate-client-cert.sh'), ['dev-old'], { env, cwd: REPO_ROOT });
    const shown = await bin('fieldstream', ['admin', 'devices', 'show', 'dev-old', '--json']);
    assert.equal(shown.code, 0, shown.stderr);
    assert.equal(JSON.parse(shown.stdout).signingKeyRegistered, true);
    await run(join(REPO_ROOT, 'scripts', 'revoke-device.sh'), ['dev-c'], { env, cwd: REPO_ROOT });
    assert.equal((await list()).find((x) => x.id === 'dev-c')?.revoked, true);
  });
});
