import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, watch, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { adminWaitingFor, holdLock } from '../helpers/admin-waiting.ts';
import { adminWith } from '../helpers/admin.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';
import { createBackup, tarEntry } from '../../scripts/admin/backup.ts';
import { EXIT, runAdmin, USAGE } from '../../scripts/admin/run.ts';
import type { DeviceSummary } from '../../scripts/admin/devices.ts';
import { revokeDevice } from '../../pki/revocation.ts';

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
  const admin = adminWith(pki.dir);
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
    assert.match(text.out, /^ID\s+AUTH\s+EXPIRES\s+DAYS LEFT\s+TOKEN\s+REVOKED\s+SIGNING KEY\s+SUPERSEDED\n/);
    assert.match(text.out, /\ndev-a\s+certificate\s+\d{4}-\d\d-\d\dT[\d:.]+Z\s+7(29|30)\s+-\s+no\s+registered\s+-\n/);
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
    assert.match(text.out, new RegExp(`\\ntok-x\\s+token\\s+${printed.replace(/\./g, '\\.')}\\s+(9|10)\\s+active\\s+no\\s+registered\\s+-\\n`));
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
    assert.match(r.out, /docker load[\s\S]*FIELDSTREAM_IMAGE[\s\S]*docker-compose up -d/, 'the image is put on the device before docker-compose would pull it from Docker Hub');
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
    assert.match(r.out, /on the internal server, copy the list over its own \(in place\) and remove the key\n\s+there too/);
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

  // revokeDevice revokes a device's certificates even when the tokens file is damaged, and then says
  // the token could not be; `devices revoke` first looked the device up through a listing that reads
  // that file, and so stopped at TOKENS_FILE_INVALID with nothing revoked: a stolen device's
  // certificate stayed good until someone repaired a file it has nothing to do with.
  it('revokes a certificate device even when the tokens file is damaged, and says its token could not be', async () => {
    const own = makeTestPki(['dev-t']);
    try {
      const tokens = join(own.dir, 'dmz', 'tokens', 'device-tokens.json');
      mkdirSync(dirname(tokens), { recursive: true });
      writeFileSync(tokens, '{"devices": {"dev-t": ');
      const { code, out, err } = await adminWith(own.dir)('devices', 'revoke', 'dev-t');
      assert.notEqual(code, EXIT.ok, out);
      assert.match(err, /TOKENS_FILE_INVALID/);
      assert.match(err, /certificates are revoked/);
      const serials = readFileSync(join(own.dir, 'dmz', 'revocation', 'revoked-serials.txt'), 'utf8').trim().split('\n').filter(Boolean);
      assert.ok(serials.length > 0, 'the certificate is on the gateways\' list');
      assert.match(readFileSync(join(own.dir, 'internal', 'revoked-devices.txt'), 'utf8'), /^dev-t$/m);
      // An id without a certificate, whose token cannot be told: refused, nothing listed as revoked.
      assert.notEqual(await runAdmin(['devices', 'revoke', 'nobody'], { out: () => undefined, err: () => undefined, env: { CERTS_DIR: own.dir }, cwd: REPO_ROOT }), EXIT.ok);
      assert.doesNotMatch(readFileSync(join(own.dir, 'internal', 'revoked-devices.txt'), 'utf8'), /^nobody$/m);
    } finally {
      own.cleanup();
    }
  });

  // `devices list` read the tokens file before anything else, and a damaged one made it answer
  // nothing but TOKENS_FILE_INVALID: the fleet could not be looked at until the file was repaired.
  it('lists every device when the tokens file is damaged, its token information unreadable, the coded error once and exit 1', async () => {
    const own = makeTestPki(['dev-u', 'dev-v']);
    try {
      const tokens = join(own.dir, 'dmz', 'tokens', 'device-tokens.json');
      mkdirSync(dirname(tokens), { recursive: true });
      writeFileSync(tokens, '{"devices": {"dev-u": ');
      for (const json of [true, false]) {
        const { code, out, err } = await adminWith(own.dir)('devices', 'list', ...(json ? ['--json'] : []));
        assert.equal(code, EXIT.failed, err);
        assert.equal(err.match(/TOKENS_FILE_INVALID/g)?.length, 1, err);
        assert.match(err, /^error TOKENS_FILE_INVALID: /);
        if (json) {
          const devices = JSON.parse(out) as DeviceSummary[];
          assert.deepEqual(devices.map((d) => d.id), ['dev-u', 'dev-v']);
          for (const d of devices) {
            assert.deepEqual(d.token, { state: 'unreadable' });
            assert.ok(d.certificate, 'what the other sources say is there');
          }
        } else {
          assert.match(out, /\ndev-u\s.*\sunreadable\s/);
          assert.match(out, /\ndev-v\s.*\sunreadable\s/);
        }
      }
      assert.ok(USAGE.includes('devices list'));
      assert.match(USAGE, /1 failed \(devices list: also when the tokens file cannot be read/);
    } finally {
      own.cleanup();
    }
  });

  it('a revoked list edited by hand (CRLF, blanks around an id) still refuses to renew, add or re-register the revoked device', async () => {
    const list_ = join(pki.dir, 'internal', 'revoked-devices.txt');
    // What an editor on Windows, or a hand that indents, leaves: the distributor and `devices list` read it as revoked.
    writeFileSync(list_, readFileSync(list_, 'utf8').replace(/^dev-b$/m, '  dev-b \r'));
    assert.equal((await list()).find((x) => x.id === 'dev-b')?.revoked, true);
    const serials = readFileSync(join(pki.dir, 'dmz', 'revocation', 'revoked-serials.txt'), 'utf8');
    const renew = await admin('devices', 'renew', 'dev-b');
    assert.equal(renew.code, EXIT.conflict, renew.out);
    assert.match(renew.err, /^error PKI_DEVICE_REVOKED: /);
    assert.equal((await admin('devices', 'add', 'dev-b', '--token')).code, EXIT.conflict);
    assert.equal(existsSync(pki.paths.deviceKeyRegistry('dev-b')), false, 'its signing key is not registered again');
    assert.equal((await list()).find((x) => x.id === 'dev-b')?.issued.every((i) => serials.includes(i.serial)), true, 'no certificate issued outside the revoked serials');
    const again = await admin('devices', 'revoke', 'dev-b');
    assert.equal(again.code, EXIT.ok, again.err);
    assert.equal(readFileSync(list_, 'utf8').split('\n').filter((l) => l.trim() === 'dev-b').length, 1, 'listed once');
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

describe('fieldstream-admin backup and restore: unreadable state, hostile archives, what a crash leaves', () => {
  const work = tempDir('admin-backup');
  after(() => work.cleanup());
  /** A small installation: the CA's files and a command journal (classify() goes by name). */
  const src = { certsDir: join(work.dir, 'src', 'certs'), stateDir: join(work.dir, 'src', 'state'), commandState: join(work.dir, 'src', 'commands.jsonl') };
  const archive = join(work.dir, 'backup.tar.gz');
  before(async () => {
    mkdirSync(join(src.certsDir, 'ca'), { recursive: true });
    writeFileSync(join(src.certsDir, 'ca', 'ca.key'), 'the CA key\n', { mode: 0o600 });
    writeFileSync(join(src.certsDir, 'ca.crt'), 'the CA certificate\n');
    writeFileSync(src.commandState, '{"commandId":"c-1"}\n');
    await createBackup(src, archive);
  });
  const pathArgs = (p: typeof src) => ['--certs-dir', p.certsDir, '--state-dir', p.stateDir, '--command-state', p.commandState];
  const target = (name: string) => ({ certsDir: join(work.dir, name, 'certs'), stateDir: join(work.dir, name, 'state'), commandState: join(work.dir, name, 'commands.jsonl') });
  const admin = async (...argv: string[]) => {
    let out = '';
    let err = '';
    const code = await runAdmin(argv, { out: (t) => void (out += t), err: (t) => void (err += t), env: {}, cwd: work.dir });
    return { code, out, err };
  };
  /** The admin command as a process: `bash -c PRELUDE` then the command, with `env`. */
  const adminProcess = (prelude: string, argv: string[], env: Record<string, string> = {}) => {
    // --norc: bash reads ~/.bashrc when its input is a socket, as Node's pipes are
    const r = spawnSync('bash', ['--norc', '--noprofile', '-c', `${prelude} "$@"`, 'bash', process.execPath, '--import', 'tsx', join(REPO_ROOT, 'scripts', 'admin', 'cli.ts'), ...argv], {
      cwd: REPO_ROOT,
      env: { PATH: process.env.PATH ?? '', FIELDSTREAM_ENV_FILE: '/dev/null', TSX_DISABLE_CACHE: '1', ...env },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  /** The id of a process that ran and is gone. */
  const deadPid = () => spawnSync('true').pid;

  it('backup fails, naming it, on a folder or file it cannot read; only a folder that does not exist is empty', async () => {
    // Tests run as root, whom no mode stops: a path through a file cannot be read by anyone (ENOTDIR).
    const file = join(work.dir, 'a-file');
    writeFileSync(file, 'not a folder');
    const out = join(work.dir, 'unreadable.tar.gz');
    const folder = await admin('backup', out, ...pathArgs({ ...src, stateDir: join(file, 'state') }));
    assert.equal(folder.code, EXIT.failed, folder.err);
    assert.match(folder.err, new RegExp(`^error BACKUP_UNREADABLE: Cannot read the folder ${join(file, 'state')} \\(ENOTDIR\\)`));
    const journal = await admin('backup', out, ...pathArgs({ ...src, commandState: join(file, 'commands.jsonl') }));
    assert.match(journal.err, /^error BACKUP_UNREADABLE: Cannot read the command journal .*\(ENOTDIR\)/);
    if (existsSync('/proc/self/mem')) {
      // a file whose every read fails with an I/O error (EIO): a process's memory at address 0
      const io = await admin('backup', out, ...pathArgs({ ...src, commandState: '/proc/self/mem' }));
      assert.match(io.err, /^error BACKUP_UNREADABLE: Cannot read \/proc\/self\/mem \(EIO\)/);
    }
    assert.equal(existsSync(out), false, 'no archive');
    const noState = await admin('backup', out, ...pathArgs({ ...src, stateDir: join(work.dir, 'no-such-state') }));
    assert.equal(noState.code, EXIT.ok, noState.err);
    assert.match(noState.out, /: ca 2, command-journal 1\n/);
  });

  it('backup stages no copy of a key on disk: it writes its archive only, and removes what a killed backup left', async () => {
    const tmp = join(work.dir, 'watched-tmp');
    const outDir = join(work.dir, 'watched-out');
    mkdirSync(tmp);
    mkdirSync(outDir);
    const out = join(outDir, 'b.tar.gz');
    const dead = `b.tar.gz.tmp-${deadPid()}`;
    writeFileSync(join(outDir, dead), 'half an archive, of a backup killed midway');
    writeFileSync(join(outDir, 'b.tar.gz.tmp-1'), 'of a backup still running (process 1 runs)');
    const seen = new Set<string>();
    const watchers = [watch(tmp, (_, name) => seen.add(`tmp/${name}`)), watch(outDir, (_, name) => seen.add(`out/${name}`))];
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = tmp; // os.tmpdir(), where a staging folder would go
    try {
      const r = await admin('backup', out, ...pathArgs(src));
      assert.equal(r.code, EXIT.ok, r.err);
      await sleep(100); // inotify's events come after
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
      for (const w of watchers) w.close();
    }
    assert.deepEqual([...seen].sort(), ['out/b.tar.gz', `out/b.tar.gz.tmp-${process.pid}`, `out/${dead}`].sort());
    assert.deepEqual(readdirSync(outDir).sort(), ['b.tar.gz', 'b.tar.gz.tmp-1']);
    assert.equal(statSync(out).mode & 0o777, 0o600);
  });

  it('backup reads the certificates folder between two revocations, never across one: the CRL it keeps is the one of its revocation log', async () => {
    const pki = makeTestPki(['dev-a']);
    try {
      const lock = join(pki.dir, '.revocations.lock');
      const out = join(work.dir, 'during-revocation.tar.gz');
      const held = holdLock(lock); // a revocation under way (revokeDevice holds this while it writes the log, the lists and the CRL)
      // The backup says it waits once it found the lock held (not a fixed pause: a slow start would
      // have read the folder before the revocation, not beside it).
      const { exited, output } = await adminWaitingFor(lock, ['backup', out, '--certs-dir', pki.dir, '--state-dir', join(work.dir, 'no-state'), '--command-state', join(work.dir, 'no-journal')]);
      assert.equal(existsSync(out), false, 'the backup waits for the revocation to finish');
      held.release();
      const { serials } = revokeDevice(pki.dir, 'dev-a'); // the revocation, now, as it would have finished
      assert.equal(await exited, 0, output().stderr);
      assert.match(output().stdout, /^Backed up /);
      const restored = target('after-revocation');
      assert.equal((await admin('restore', out, ...pathArgs(restored))).code, EXIT.ok);
      for (const file of ['ca.crl', 'ca/revoked.jsonl', 'dmz/revocation/revoked-serials.txt', 'internal/revoked-devices.txt']) {
        assert.equal(readFileSync(join(restored.certsDir, file), 'utf8'), readFileSync(join(pki.dir, file), 'utf8'), file);
      }
      assert.ok(serials.every((s) => readFileSync(join(restored.certsDir, 'dmz/revocation/revoked-serials.txt'), 'utf8').includes(s)));
    } finally {
      pki.cleanup();
    }
  });

  it('restore checks an entry\'s declared size before reading it: a hostile 32 MiB entry, a full disk, a coded error, nothing staged', () => {
    const evil = Buffer.from('evil');
    const entries = [
      tarEntry('manifest.json', 0o600, new Date(0), Buffer.from(JSON.stringify({
        format: 'fieldstream-backup', version: 1, created: new Date(0).toISOString(), source: { certs: '', 'distributor-state': '', 'command-state': '' },
        contents: { ca: 1 }, files: [{ root: 'certs', path: 'ca.crt', kind: 'ca', size: evil.length, mode: 0o644, sha256: createHash('sha256').update(evil).digest('hex') }],
      }))),
      tarEntry('files/certs/ca.crt', 0o644, new Date(0), Buffer.alloc(32 * 1024 * 1024)),
      Buffer.alloc(1024),
    ];
    const hostile = join(work.dir, 'oversized.tar.gz');
    writeFileSync(hostile, gzipSync(Buffer.concat(entries)));
    const tmp = join(work.dir, 'small-tmp');
    mkdirSync(tmp);
    const t = target('oversized');
    // ulimit -f: no file may grow past 256 KiB, as on a full /tmp (write fails, EFBIG)
    const r = adminProcess('ulimit -f 256 &&', ['restore', hostile, ...pathArgs(t)], { TMPDIR: tmp });
    assert.equal(r.code, EXIT.failed, r.stderr);
    assert.match(r.stderr, /^error BACKUP_TAMPERED: files\/certs\/ca\.crt is not the file the manifest describes: its entry declares 33554432 bytes, the manifest 4\.\n$/);
    assert.deepEqual(readdirSync(tmp).filter((n) => n.startsWith('fieldstream')), [], 'no staging folder left');
    assert.equal(existsSync(dirname(t.certsDir)), false, 'nothing restored');
  });

  const strace = spawnSync('strace', ['-f', '-qq', '-e', 'trace=none', 'true']).status === 0;
  it('restore writes each file durably: synced, renamed into place, its folder synced (seen with strace)', { skip: strace ? false : 'strace is not installed or may not trace' }, () => {
    const t = target('durable');
    const trace = join(work.dir, 'restore.strace');
    const r = adminProcess(`strace -f -qq -e trace=openat,fsync,fdatasync,rename,renameat,renameat2 -o ${trace}`, ['restore', archive, ...pathArgs(t)]);
    assert.equal(r.code, EXIT.ok, r.stderr);
    // Which file each fsync was of: the path its descriptor was opened with.
    const fds = new Map<string, string>();
    const calls: Array<{ sync?: string; rename?: [string, string] }> = [];
    for (const line of readFileSync(trace, 'utf8').split('\n')) {
      const open = /^\d+\s+openat\(AT_FDCWD, "([^"]+)", .*\) = (\d+)$/.exec(line);
      const sync = /^\d+\s+f(?:data)?sync\((\d+)\)\s+= 0$/.exec(line);
      const rename = /^\d+\s+rename(?:at2?)?\((?:AT_FDCWD, )?"([^"]+)", (?:AT_FDCWD, )?"([^"]+)".*\) = 0$/.exec(line);
      if (open) fds.set(open[2]!, open[1]!);
      else if (sync) calls.push({ sync: fds.get(sync[1]!) ?? '?' });
      else if (rename) calls.push({ rename: [rename[1]!, rename[2]!] });
    }
    for (const file of [join(t.certsDir, 'ca.crt'), join(t.certsDir, 'ca', 'ca.key'), t.commandState]) {
      const at = calls.findIndex((c) => c.rename?.[1] === file);
      assert.ok(at > 0, `${file} renamed into place: ${JSON.stringify(calls)}`);
      const from = calls[at]!.rename![0];
      assert.equal(calls.slice(0, at).reverse().find((c) => c.sync)?.sync, from, `${file}: written aside and synced before its rename`);
      assert.equal(calls.slice(at).find((c) => c.sync)?.sync, dirname(file), `${file}: its folder synced after`);
    }
  });
});
