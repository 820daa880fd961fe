import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { createBackup } from '../../scripts/admin/backup.ts';
import type { AdminPaths } from '../../scripts/admin/paths.ts';
import { EXIT, runAdmin } from '../../scripts/admin/run.ts';
import { tempDir } from '../helpers/pki.ts';
import { refusedWith } from '../helpers/coded.ts';

/**
 * An archive written into a folder the backup reads was taken into the next backup as state (every
 * file of the state folder is), so each archive held the one before it and grew with every run; one
 * written over the command journal (--force) replaced the journal with an archive. The backup
 * refuses an archive's path inside the certificates or state folder, or at the journal's, whatever
 * links lead there (BACKUP_OUTPUT_IN_SOURCE), and an archive it finds among the state folder's files.
 */
describe('a backup archive written where the backup reads', () => {
  const work = tempDir('backup-out');
  const source: AdminPaths = { certsDir: join(work.dir, 'certs'), stateDir: join(work.dir, 'state'), commandState: join(work.dir, 'data', 'commands.jsonl') };
  const journal = '{"commandId":"c-1","deviceId":"dev-a","command":"ping"}\n';
  before(() => {
    const windows = new ReplayWindows(join(source.stateDir, 'replay'));
    for (let seq = 1; seq <= 10; seq++) windows.record('dev-a', 'epoch-1', seq);
    windows.persist();
    mkdirSync(join(source.certsDir, 'internal', 'device-keys'), { recursive: true });
    writeFileSync(join(source.certsDir, 'internal', 'device-keys', 'dev-a.key'), 'a key\n');
    mkdirSync(join(work.dir, 'data'), { recursive: true });
    writeFileSync(source.commandState, journal);
  });
  after(() => work.cleanup());


  it('inside the state folder, the certificates folder or a folder below them: refused naming the folder, no archive written', async () => {
    for (const [out, folder] of [
      [join(source.stateDir, 'backup.tar.gz'), source.stateDir],
      [join(source.stateDir, 'backups', 'nightly', 'b.tar.gz'), source.stateDir],
      [join(source.certsDir, 'backup.tar.gz'), source.certsDir],
      [join(source.certsDir, 'internal', 'device-keys', 'b.tar.gz'), source.certsDir],
    ] as const) {
      const err = await refusedWith('BACKUP_OUTPUT_IN_SOURCE', createBackup(source, out));
      assert.ok(err.message.includes(folder), err.message);
      assert.match(err.message, /outside/);
      assert.equal(existsSync(out), false, `${out}: no archive written`);
    }
    assert.equal(existsSync(join(source.stateDir, 'backups')), false, 'no folder made for it');
  });

  it('over the command journal, even with --force: refused, the journal as it was', async () => {
    const err = await refusedWith('BACKUP_OUTPUT_IN_SOURCE', createBackup(source, source.commandState, { force: true }));
    assert.ok(err.message.includes(source.commandState), err.message);
    assert.equal(readFileSync(source.commandState, 'utf8'), journal);
  });

  it('through a symbolic link to the state folder: refused', async () => {
    const link = join(work.dir, 'to-state');
    symlinkSync(source.stateDir, link);
    await refusedWith('BACKUP_OUTPUT_IN_SOURCE', createBackup(source, join(link, 'b.tar.gz')));
    assert.equal(existsSync(join(source.stateDir, 'b.tar.gz')), false);
  });

  it('beside the folders (a name that begins like one of them): written, and the next backup is no larger', async () => {
    const out = join(work.dir, 'state-backups', 'b1.tar.gz');
    const first = await createBackup(source, out);
    const second = await createBackup(source, join(work.dir, 'state-backups', 'b2.tar.gz'));
    assert.deepEqual(second.manifest.files.map((f) => f.path), first.manifest.files.map((f) => f.path));
  });

  it('an archive already among the state folder\'s files (written there by an earlier version): refused naming it', async () => {
    const old = join(work.dir, 'old-archive.tar.gz');
    await createBackup(source, old);
    const planted = join(source.stateDir, 'fieldstream-old.tar.gz');
    copyFileSync(old, planted);
    try {
      const err = await refusedWith('BACKUP_OUTPUT_IN_SOURCE', createBackup(source, join(work.dir, 'after-old.tar.gz')));
      assert.ok(err.message.includes(planted), err.message);
      assert.equal(existsSync(join(work.dir, 'after-old.tar.gz')), false);
    } finally {
      (await import('node:fs')).rmSync(planted);
    }
  });

  it('fieldstream-admin backup: exit 2 (usage), the message on stderr', async () => {
    let err = '';
    const code = await runAdmin(['backup', join(source.stateDir, 'cli.tar.gz'), '--certs-dir', source.certsDir, '--state-dir', source.stateDir, '--command-state', source.commandState], {
      out: () => undefined,
      err: (s: string) => void (err += s),
      env: {},
      cwd: work.dir,
    });
    assert.equal(code, EXIT.usage, err);
    assert.match(err, /BACKUP_OUTPUT_IN_SOURCE/);
  });
});
