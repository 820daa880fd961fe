import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runDoctor } from '../../field-client/src/doctor.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { LIMITS } from '../../shared/limits.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';

const REPO = join(import.meta.dirname, '..', '..');
/** Whether this test can run a command as another user (root, with setpriv): to see a folder it cannot read. */
/** Whether /dev/shm is a file system other than / (a tmpfs): where a folder's free space differs from the root's. */
const separateFs = () => {
  try {
    return statSync('/dev/shm').dev !== statSync('/').dev;
  } catch {
    return false;
  }
};
const asNobody = process.getuid?.() === 0 && spawnSync('setpriv', ['--version']).status === 0;

/**
 * `fieldstream doctor` on the files the field client reads at its start besides its certificates:
 * the signing key, the commands file, FIELD_DATA_DIR and its queue. Each one the client stops on
 * (CONFIG_FILE_UNREADABLE, CONFIG_INVALID, a data folder it cannot make or read) must be a failed
 * check naming the code, never "ok", and never a crash with a stack trace.
 */
describe('fieldstream doctor: the files the client reads at its start', () => {
  let pki: ReturnType<typeof makeTestPki>;
  let tmp: ReturnType<typeof tempDir>;
  let env: Record<string, string>;
  before(async () => {
    pki = makeTestPki(['dev-a']);
    tmp = tempDir('doctor-local');
    env = {
      DEVICE_ID: 'dev-a',
      GATEWAY_URL: `wss://localhost:${await freePort()}/ws`, // nothing listens: only the local checks matter
      FIELD_CA_FILE: pki.paths.publicCa,
      FIELD_CERT_FILE: pki.paths.device('dev-a').cert,
      FIELD_KEY_FILE: pki.paths.device('dev-a').key,
      FIELD_DATA_DIR: join(tmp.dir, 'data'),
      FIELD_HTTP_PORT: 'off',
    };
  });
  after(() => {
    pki.cleanup();
    tmp.cleanup();
  });
  const check = async (name: string, extra: Record<string, string>) => {
    const results = await runDoctor({ ...env, ...extra });
    return { r: results.find((x) => x.name === name), all: JSON.stringify(results) };
  };

  it('fails the commands check on a signing key the client cannot read or that holds no key, as the client stops on it', async () => {
    // It said "ok: only commands authenticated for this device run", and the client then refused to start.
    const notAKey = join(tmp.dir, 'signing.key');
    writeFileSync(notAKey, 'not a key\n');
    for (const [path, code] of [[join(tmp.dir, 'missing.key'), 'CONFIG_FILE_UNREADABLE'], [tmp.dir, 'CONFIG_FILE_UNREADABLE'], [notAKey, 'CONFIG_INVALID']] as const) {
      const { r, all } = await check('commands', { FIELD_SIGNING_KEY_FILE: path });
      assert.equal(r?.level, 'fail', all);
      assert.match(r?.detail ?? '', new RegExp(`^${code}: FIELD_SIGNING_KEY_FILE=`), all);
    }
    const key = join(tmp.dir, 'good-signing.key');
    writeFileSync(key, `${'ab'.repeat(32)}\n`);
    assert.equal((await check('commands', { FIELD_SIGNING_KEY_FILE: key })).r?.level, 'ok');
  });

  it('fails the commands check on a commands file the client cannot read or that is not one', async () => {
    const notJson = join(tmp.dir, 'commands.json');
    writeFileSync(notJson, '{ not json');
    for (const [path, code] of [[join(tmp.dir, 'missing.json'), 'CONFIG_FILE_UNREADABLE'], [notJson, 'CONFIG_INVALID']] as const) {
      const { r, all } = await check('commands', { FIELD_COMMANDS_FILE: path });
      assert.equal(r?.level, 'fail', all);
      assert.match(r?.detail ?? '', new RegExp(`^${code}: FIELD_COMMANDS_FILE=`), all);
    }
  });

  it('fails the queue check when FIELD_DATA_DIR is a file, where the client cannot make its folder', async () => {
    // It said "0 bytes queued" and "N MiB free in FIELD_DATA_DIR", and the client then stopped at its start.
    const file = join(tmp.dir, 'a-file');
    writeFileSync(file, 'x');
    const results = await runDoctor({ ...env, FIELD_DATA_DIR: file });
    const all = JSON.stringify(results);
    const queue = results.find((x) => x.name === 'queue');
    assert.equal(queue?.level, 'fail', all);
    assert.match(queue?.detail ?? '', /^FIELD_DATA_DIR_UNUSABLE: FIELD_DATA_DIR=.* is not a folder/, all);
    assert.ok(!results.some((x) => x.name === 'disk' && x.level === 'ok'), all);
  });

  it('says a queue folder it cannot read is unusable, rather than crash (in process and as the command an operator runs)', async () => {
    const dir = join(tmp.dir, 'queue-is-a-file');
    mkdirSync(dir);
    writeFileSync(join(dir, 'queue'), 'x');
    const { r, all } = await check('queue', { FIELD_DATA_DIR: dir });
    assert.equal(r?.level, 'fail', all);
    assert.match(r?.detail ?? '', /^FIELD_DATA_DIR_UNUSABLE: .*queue cannot be read: ENOTDIR/, all);

    const out = await new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
      execFile(join(REPO, 'bin', 'fieldstream'), ['doctor'], { cwd: tmp.dir, env: { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null', ...env, FIELD_DATA_DIR: dir }, timeout: 60_000 }, (err, stdout, stderr) =>
        resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
    assert.equal(out.status, 1, out.stdout + out.stderr);
    assert.doesNotMatch(out.stderr, /at |Error:/, out.stderr); // no stack trace
    assert.match(out.stdout, /✖ queue +FIELD_DATA_DIR_UNUSABLE/, out.stdout);
    assert.match(out.stdout, /✔ set aside|! set aside|✖ set aside/, out.stdout); // the checks after it still ran
  });

  it("fails the queue check on a FIELD_DATA_DIR this user cannot read or write, rather than count it empty", { skip: asNobody ? false : 'needs root and setpriv, to run the doctor as another user' }, async () => {
    // Run as another user than the folder's owner: it said "0 bytes queued" and "N MiB free" (the
    // queue folder looked absent), and exited 0.
    const dir = join(tmp.dir, 'not-ours');
    mkdirSync(join(dir, 'queue'), { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    chmodSync(tmp.dir, 0o711); // the folder above may be entered: only FIELD_DATA_DIR's own mode stops the user
    const out = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', join(REPO, 'bin', 'fieldstream'), 'doctor'], {
      cwd: '/',
      env: { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null', ...env, FIELD_DATA_DIR: dir },
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(out.status, 1, out.stdout + out.stderr);
    assert.match(out.stdout, /✖ queue +FIELD_DATA_DIR_UNUSABLE: FIELD_DATA_DIR=.* cannot be read and written by this user: EACCES/, out.stdout + out.stderr);
    assert.doesNotMatch(out.stdout, /✔ disk/, out.stdout);
  });
  it('refuses a file setting naming something endless (/dev/zero) as too large, the doctor and the client alike, where both ran out of memory', async () => {
    for (const [check_, variable] of [['certificates', 'FIELD_CERT_FILE'], ['certificates', 'FIELD_CA_FILE'], ['commands', 'FIELD_SIGNING_KEY_FILE']] as const) {
      const { r, all } = await check(check_, { [variable]: '/dev/zero' });
      assert.equal(r?.level, 'fail', all);
      assert.match(r?.detail ?? '', new RegExp(`^CONFIG_INVALID: ${variable}=/dev/zero is larger than ${LIMITS.settingFileMaxBytes} bytes`), all);
    }
    const client = spawnSync(join(REPO, 'node_modules', '.bin', 'tsx'), [join(REPO, 'field-client', 'src', 'main.ts')], {
      cwd: tmp.dir,
      env: { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null', ...env, FIELD_CERT_FILE: '/dev/zero', NODE_OPTIONS: '--max-old-space-size=256' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.notEqual(client.status, 0, client.stderr);
    assert.equal(client.signal, null, `ended by ${client.signal}: ${client.stderr.slice(-500)}`);
    assert.match(client.stderr, /CONFIG_INVALID[: ].*FIELD_CERT_FILE=\/dev\/zero is larger than/, client.stderr.slice(-2000));
  });
  it('measures the free space of the file system a data folder not made yet will be made on, not of /', { skip: separateFs() ? false : 'needs /dev/shm on a file system of its own' }, async () => {
    const dir = join('/dev/shm', `fieldstream-doctor-${process.pid}`, 'not-yet', 'data');
    const { r, all } = await check('disk', { FIELD_DATA_DIR: dir });
    const freeMib = (path: string) => ((s) => (s.bavail * s.bsize) / 1048576)(statfsSync(path));
    const got = Number(/^(\d+) MiB free/.exec(r?.detail ?? '')?.[1]);
    // Within 64 MiB of /dev/shm's (other programs write there meanwhile), and not the root's.
    assert.ok(Math.abs(got - freeMib('/dev/shm')) <= 64, `${got} MiB, /dev/shm has ${freeMib('/dev/shm')}: ${all}`);
    if (Math.abs(freeMib('/') - freeMib('/dev/shm')) > 256) assert.ok(Math.abs(got - freeMib('/')) > 128, `${got} MiB is the root's: ${all}`);
  });
});
