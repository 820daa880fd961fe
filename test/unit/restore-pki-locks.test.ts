import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { appendFileSync, copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { adminWaitingFor, commandWaitingFor, holdLock } from '../helpers/admin-waiting.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';
import { pkiPaths } from '../../pki/layout.ts';
import { createBackup } from '../../scripts/admin/backup.ts';
import { restoreBackup } from '../../scripts/admin/restore.ts';
import { isFieldStreamError } from '../../shared/errors.ts';

/**
 * A restore and the commands that issue, revoke or back up certificates, as separate processes on
 * one certificates folder: a restore waits for the one holding the revocation lock, and what comes
 * while a restore writes (or after one was killed midway) refuses, so that no certificate of one CA
 * lands in a folder restored to another, nor the restored files mix with those of a new issue.
 */

/** A command as a process, with CERTS_DIR `certs`: its exit code and output. */
function command(file: string, args: readonly string[], certs: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(join(REPO_ROOT, file), args, { cwd: REPO_ROOT, env: { PATH: process.env.PATH ?? '', CERTS_DIR: certs, FIELDSTREAM_ENV_FILE: '/dev/null' } }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: unknown }).code) : 0, stdout, stderr });
    });
  });
}

describe('restore and the certificate commands, at once', () => {
  const work = tempDir('restore-locks');
  /** The installation backed up: its own CA, and one device. */
  const source = makeTestPki(['dev-src']);
  const archive = join(work.dir, 'backup.tar.gz');
  before(async () => {
    await createBackup({ certsDir: source.dir, stateDir: join(work.dir, 'no-state'), commandState: join(work.dir, 'no-state', 'commands.jsonl') }, archive);
  });
  after(() => {
    source.cleanup();
    work.cleanup();
  });
  /** An installation of another CA to restore over, and the paths a restore takes for it. */
  const installation = (name: string) => {
    const pki = makeTestPki([]);
    const paths = { certsDir: pki.dir, stateDir: join(work.dir, name, 'state'), commandState: join(work.dir, name, 'commands.jsonl') };
    const args = ['--certs-dir', paths.certsDir, '--state-dir', paths.stateDir, '--command-state', paths.commandState];
    return { pki, paths, args };
  };
  const caOf = (certs: string) => readFileSync(pkiPaths(certs).caCert, 'utf8');
  const verifiesUnder = (certs: string, deviceId: string) =>
    new X509Certificate(readFileSync(pkiPaths(certs).device(deviceId).cert)).verify(new X509Certificate(caOf(certs)).publicKey);

  it('restore waits for a certificate\'s issue holding the revocation lock, writing nothing meanwhile', async () => {
    const t = installation('waits');
    try {
      const lock = join(t.pki.dir, '.revocations.lock');
      const before = caOf(t.pki.dir);
      const held = holdLock(lock); // an issue under way (issueDeviceCertificate holds this while it records and writes)
      const { exited, output } = await adminWaitingFor(lock, ['restore', archive, '--force', ...t.args]);
      await sleep(300);
      assert.equal(caOf(t.pki.dir), before, 'nothing restored while the issue holds the lock');
      held.release();
      assert.equal(await exited, 0, output().stderr);
      assert.match(output().stdout, /^Restored /);
      assert.equal(caOf(t.pki.dir), caOf(source.dir));
      assert.equal(existsSync(join(t.pki.dir, '.restore-running')), false, 'the mark goes with the restore');
    } finally {
      t.pki.cleanup();
    }
  });

  it('while a restore writes, issuing a certificate or a token, revoking and backing up refuse (PKI_RESTORE_RUNNING); once it is done they work', async () => {
    const t = installation('refused');
    try {
      let seen = false;
      await restoreBackup(t.paths, archive, {
        force: true,
        whileMarked: async () => {
          seen = true;
          const cert = await command('scripts/generate-client-cert.sh', ['dev-new'], t.pki.dir);
          assert.equal(cert.code, 65, cert.stderr);
          assert.match(cert.stderr, /^error PKI_RESTORE_RUNNING: /m);
          const token = await command('bin/fieldstream-admin', ['devices', 'add', 'tok-new', '--token'], t.pki.dir);
          assert.equal(token.code, 1, token.stderr);
          assert.match(token.stderr, /^error PKI_RESTORE_RUNNING: /m);
          const revoke = await command('scripts/revoke-device.sh', ['dev-src'], t.pki.dir);
          assert.notEqual(revoke.code, 0);
          assert.match(revoke.stderr, /PKI_RESTORE_RUNNING/);
          const backup = await command('bin/fieldstream-admin', ['backup', join(work.dir, 'during.tar.gz'), ...t.args.slice(2)], t.pki.dir);
          assert.equal(backup.code, 1, backup.stderr);
          assert.match(backup.stderr, /^error PKI_RESTORE_RUNNING: /m);
          assert.equal(existsSync(pkiPaths(t.pki.dir).device('dev-new').cert), false);
          assert.equal(existsSync(join(t.pki.dir, 'devices', 'tok-new', 'device.token')), false);
          assert.equal(existsSync(join(work.dir, 'during.tar.gz')), false);
        },
      });
      assert.equal(seen, true, 'the restore marks the folder before it compares or writes anything');
      assert.equal(existsSync(join(t.pki.dir, '.restore-running')), false);
      assert.equal(caOf(t.pki.dir), caOf(source.dir));
      assert.equal(readFileSync(join(t.pki.dir, 'ca.crl'), 'utf8'), readFileSync(join(source.dir, 'ca.crl'), 'utf8'), 'the CRL restored, no revocation made beside it');
      const cert = await command('scripts/generate-client-cert.sh', ['dev-new'], t.pki.dir);
      assert.equal(cert.code, 0, cert.stderr);
      assert.equal(verifiesUnder(t.pki.dir, 'dev-new'), true, 'issued by the restored CA');
    } finally {
      t.pki.cleanup();
    }
  });

  it('a restore killed midway leaves its mark: issuing refuses until the restore is run again; a live restore keeps a second one out', async () => {
    const t = installation('killed');
    const mark = join(t.pki.dir, '.restore-running');
    const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      writeFileSync(mark, JSON.stringify({ pid: spawnSync('true').pid, host: hostname(), startedAt: new Date().toISOString() }) + '\n');
      const refused = await command('scripts/generate-client-cert.sh', ['dev-k'], t.pki.dir);
      assert.equal(refused.code, 65, refused.stderr);
      assert.match(refused.stderr, /^error PKI_RESTORE_RUNNING: .*killed.*run it again/m);
      assert.equal(existsSync(pkiPaths(t.pki.dir).device('dev-k').cert), false);

      // Another restore that runs (a live process of this host): a second one is refused, writing nothing.
      writeFileSync(mark, JSON.stringify({ pid: sleeper.pid, host: hostname(), startedAt: new Date().toISOString() }) + '\n');
      const ca = caOf(t.pki.dir);
      await assert.rejects(restoreBackup(t.paths, archive, { force: true }), (e) => isFieldStreamError(e) && e.code === 'PKI_RESTORE_RUNNING');
      assert.equal(caOf(t.pki.dir), ca);

      // Its process id reused by another process since (a process of that id, started at another
      // time): the restore was killed, not running. With its own start, it runs.
      const stat = readFileSync(`/proc/${sleeper.pid}/stat`, 'utf8');
      const procStart = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
      const markOf = (start: string | undefined) => writeFileSync(mark, JSON.stringify({ pid: sleeper.pid, host: hostname(), startedAt: new Date().toISOString(), procStart: start }) + '\n');
      markOf(String(Number(procStart) + 1));
      const reused = await command('scripts/generate-client-cert.sh', ['dev-k'], t.pki.dir);
      assert.equal(reused.code, 65, reused.stderr);
      assert.match(reused.stderr, /^error PKI_RESTORE_RUNNING: A restore of .* was killed while it wrote it/m);
      markOf(procStart);
      const running = await command('scripts/generate-client-cert.sh', ['dev-k'], t.pki.dir);
      assert.equal(running.code, 65, running.stderr);
      assert.match(running.stderr, /^error PKI_RESTORE_RUNNING: A restore is writing /m);

      // The killed one's: run again, the restore finishes and takes its mark away.
      writeFileSync(mark, JSON.stringify({ pid: spawnSync('true').pid, host: hostname(), startedAt: new Date().toISOString() }) + '\n');
      await restoreBackup(t.paths, archive, { force: true });
      assert.equal(existsSync(mark), false);
      const issued = await command('scripts/generate-client-cert.sh', ['dev-k'], t.pki.dir);
      assert.equal(issued.code, 0, issued.stderr);
      assert.equal(verifiesUnder(t.pki.dir, 'dev-k'), true);
    } finally {
      sleeper.kill();
      t.pki.cleanup();
    }
  });

  it('the mark of a restore cut off by a power cut is taken for a killed one after the reboot, though its pid is another live process now', async () => {
    const t = installation('rebooted');
    const mark = join(t.pki.dir, '.restore-running');
    // After the reboot, the restore's pid is some other process's (pids start again from 1).
    const other = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      writeFileSync(mark, JSON.stringify({ pid: other.pid, host: hostname(), startedAt: new Date(Date.now() - 3_600_000).toISOString(), boot: '00000000-0000-4000-8000-000000000000' }) + '\n');
      const refused = await command('scripts/generate-client-cert.sh', ['dev-r'], t.pki.dir);
      assert.equal(refused.code, 65, refused.stderr);
      assert.match(refused.stderr, /^error PKI_RESTORE_RUNNING: .*killed.*run it again/m);
      // Run again as the message says: it finishes, and the commands work again.
      await restoreBackup(t.paths, archive, { force: true });
      assert.equal(existsSync(mark), false);
      const issued = await command('scripts/generate-client-cert.sh', ['dev-r'], t.pki.dir);
      assert.equal(issued.code, 0, issued.stderr);
    } finally {
      other.kill();
      t.pki.cleanup();
    }
  });

  it('a certificate made under the CA a restore then replaced is not written into the restored folder', async () => {
    const t = installation('ca-changed');
    try {
      const lock = join(t.pki.dir, '.revocations.lock');
      const held = holdLock(lock);
      // The issue loads the CA and makes its key, then waits for the lock (held here) to record and write.
      const issuing = command('scripts/generate-client-cert.sh', ['dev-late'], t.pki.dir);
      await sleep(4_000);
      // A restore of another CA ran meanwhile, start to end (here: its CA's files put in place).
      const p = pkiPaths(t.pki.dir);
      const s = pkiPaths(source.dir);
      for (const [from, to] of [[s.caCert, p.caCert], [s.caKey, p.caKey], [s.publicCa, p.publicCa]] as const) copyFileSync(from, to);
      held.release();
      const r = await issuing;
      assert.equal(r.code, 65, r.stderr);
      assert.match(r.stderr, /^error PKI_BUSY: .*CA/m);
      assert.equal(existsSync(p.device('dev-late').cert), false, 'no certificate of the replaced CA');
      assert.doesNotMatch(readFileSync(join(p.caDir, 'issued.jsonl'), 'utf8'), /dev-late/);
    } finally {
      t.pki.cleanup();
    }
  });
});

/**
 * generate-certificates.sh beside the commands that issue, revoke, change tokens, back up or
 * restore: it makes its keys first, then writes the CA, its public copy, fieldstream-pki.json, the
 * stored-feed key, the revoked devices' list and the service certificates under both locks, in their
 * order (.revocations.lock, then .tokens.lock), and only if nothing it read changed meanwhile.
 */
describe('generate-certificates.sh and the other certificate commands, at once', () => {
  /** The files a set-up writes that the other commands write or read under their locks. */
  const shared = (certs: string) => {
    const p = pkiPaths(certs);
    return [p.caCert, p.caKey, p.publicCa, p.meta, p.storedFeedKey, p.revokedDevices, p.crl, p.service('internal/distributor').cert, p.service('dmz/gateway').cert];
  };
  const snapshot = (certs: string) => shared(certs).map((f) => (existsSync(f) ? readFileSync(f, 'utf8') : undefined));
  const caOf = (certs: string) => readFileSync(pkiPaths(certs).caCert, 'utf8');

  it('waits for each lock held by another command before it writes anything', async () => {
    for (const name of ['.revocations.lock', '.tokens.lock']) {
      const pki = makeTestPki([]);
      try {
        const before = snapshot(pki.dir);
        const lock = join(pki.dir, name);
        const held = holdLock(lock); // a revocation, a token's issue, a backup or a restore's mark under way
        const { exited, output } = await commandWaitingFor('scripts/generate-certificates.sh', lock, ['example.org', '--new-ca'], { CERTS_DIR: pki.dir });
        await sleep(300);
        assert.deepEqual(snapshot(pki.dir), before, `nothing written while ${name} is held`);
        held.release();
        assert.equal(await exited, 0, output().stderr);
        const p = pkiPaths(pki.dir);
        assert.notEqual(caOf(pki.dir), before[0], 'a new CA');
        assert.equal(readFileSync(p.publicCa, 'utf8'), caOf(pki.dir));
        assert.equal(JSON.parse(readFileSync(p.meta, 'utf8')).domain, 'example.org');
        assert.equal(new X509Certificate(readFileSync(p.service('internal/distributor').cert)).verify(new X509Certificate(caOf(pki.dir)).publicKey), true);
        assert.deepEqual(['.revocations.lock', '.tokens.lock'].filter((l) => existsSync(join(pki.dir, l))), [], 'both let go');
      } finally {
        pki.cleanup();
      }
    }
  });

  it('writes nothing once a restore put another CA in place while it waited, or another set-up a certificate (PKI_BUSY), or a restore is writing the folder (PKI_RESTORE_RUNNING)', async () => {
    const other = makeTestPki([]);
    const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      for (const meanwhile of ['another CA', 'another set-up', 'a restore running'] as const) {
        const pki = makeTestPki([]);
        try {
          const lock = join(pki.dir, '.revocations.lock');
          const held = holdLock(lock);
          // The CA kept: it loads it and makes the services' keys, then waits for the locks.
          const { exited, output } = await commandWaitingFor('scripts/generate-certificates.sh', lock, ['localhost', '--renew'], { CERTS_DIR: pki.dir });
          const p = pkiPaths(pki.dir);
          if (meanwhile === 'another CA') {
            // A restore of another installation ran start to end (here: its CA's files put in place).
            const o = pkiPaths(other.dir);
            for (const [from, to] of [[o.caCert, p.caCert], [o.caKey, p.caKey], [o.publicCa, p.publicCa]] as const) copyFileSync(from, to);
          } else if (meanwhile === 'another set-up') {
            // Another run issued the distributor's certificate again (here: its file changed).
            appendFileSync(p.service('internal/distributor').cert, '\n');
          } else {
            writeFileSync(p.restoreMark, JSON.stringify({ pid: sleeper.pid, host: hostname(), startedAt: new Date().toISOString() }) + '\n');
          }
          const before = snapshot(pki.dir);
          held.release();
          assert.equal(await exited, 65, output().stderr);
          assert.match(output().stderr, { 'another CA': /^error PKI_BUSY: .*CA/m, 'another set-up': /^error PKI_BUSY: .*distributor\.crt changed/m, 'a restore running': /^error PKI_RESTORE_RUNNING: /m }[meanwhile]);
          assert.deepEqual(snapshot(pki.dir), before, `${meanwhile}: nothing written`);
        } finally {
          pki.cleanup();
        }
      }
    } finally {
      sleeper.kill();
      other.cleanup();
    }
  });
});
