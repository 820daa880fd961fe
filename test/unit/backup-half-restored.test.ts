import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { createBackup, tarEntry } from '../../scripts/admin/backup.ts';
import type { AdminPaths } from '../../scripts/admin/paths.ts';
import { restoreBackup } from '../../scripts/admin/restore.ts';
import { killedRestore } from '../helpers/killed-restore.ts';
import { tempDir } from '../helpers/pki.ts';
import { refusedWith } from '../helpers/coded.ts';

/**
 * A restore killed midway leaves its marks (.restore-running) in the folders it was writing, some
 * files restored and others not. A backup of those folders took the half-restored state, and the
 * mark with it, as if it were whole: restored later, it brought back replay windows of two times
 * without a word. A backup must refuse such a folder (RESTORE_INCOMPLETE), naming it and what to
 * do, and a restore must refuse an archive that holds a restore's mark.
 */
describe('a backup of folders a killed restore left half restored', () => {
  const work = tempDir('backup-half');
  // No certificates folder: the certificates folder's own mark (PKI_RESTORE_RUNNING) is not what
  // stops these backups.
  const source: AdminPaths = { certsDir: join(work.dir, 'no-certs'), stateDir: join(work.dir, 'state'), commandState: join(work.dir, 'commands.jsonl') };
  const archive = join(work.dir, 'backup.tar.gz');
  before(async () => {
    const windows = new ReplayWindows(join(source.stateDir, 'replay'));
    for (let seq = 1; seq <= 10; seq++) windows.record('dev-a', 'epoch-1', seq);
    windows.persist();
    writeFileSync(join(source.stateDir, 'gateways.txt'), 'gw-1\n');
    writeFileSync(source.commandState, '{"commandId":"c-1","deviceId":"dev-a","command":"ping"}\n');
    await createBackup(source, archive);
  });
  after(() => work.cleanup());


  it('refuses (RESTORE_INCOMPLETE) naming the folder and what to do, writes no archive; backs up once the restore is run to its end', { timeout: 60_000 }, async () => {
    const dir = join(work.dir, 'killed');
    const target: AdminPaths = { certsDir: join(dir, 'certs'), stateDir: join(dir, 'state'), commandState: join(dir, 'command-api', 'commands.jsonl') };
    await killedRestore(target, archive, 1);
    assert.ok(existsSync(join(target.stateDir, '.restore-running')), 'the killed restore left its mark');

    const out = join(work.dir, 'of-half-restored.tar.gz');
    const err = await refusedWith('RESTORE_INCOMPLETE', createBackup(target, out));
    assert.ok(err.message.includes(target.stateDir), err.message);
    assert.match(err.message, /run the restore again to its end/);
    assert.match(err.message, /no archive was written/i);
    assert.equal(existsSync(out), false, 'no archive written');

    // The journal's folder alone marked: refused as well.
    const journalOnly: AdminPaths = { ...source, stateDir: join(work.dir, 'empty-state'), commandState: join(target.commandState) };
    const err2 = await refusedWith('RESTORE_INCOMPLETE', createBackup(journalOnly, out));
    assert.ok(err2.message.includes(dirname(target.commandState)), err2.message);

    // Run to its end: the marks go, and the backup is taken, without any mark in it.
    await restoreBackup(target, archive, { force: true });
    const { manifest } = await createBackup(target, out);
    assert.deepEqual(manifest.files.filter((f) => f.path.includes('.restore-running')), []);
  });

  it('a mark in the device keys folder refuses too', async () => {
    const certsDir = join(work.dir, 'keys-marked', 'certs');
    mkdirSync(join(certsDir, 'internal', 'device-keys'), { recursive: true });
    writeFileSync(join(certsDir, 'internal', 'device-keys', 'dev-a.key'), 'k');
    writeFileSync(join(certsDir, 'internal', 'device-keys', '.restore-running'), '{}');
    const err = await refusedWith('RESTORE_INCOMPLETE', createBackup({ ...source, certsDir }, join(work.dir, 'keys-marked.tar.gz')));
    assert.ok(err.message.includes(join(certsDir, 'internal', 'device-keys')), err.message);
  });

  it('a restore refuses an archive that holds a restore mark (one taken of a half-restored folder), writing nothing', async () => {
    const mark = Buffer.from('{"pid":1,"host":"h","startedAt":"2026-01-01T00:00:00.000Z"}\n');
    const { createHash } = await import('node:crypto');
    const manifest = {
      format: 'fieldstream-backup',
      version: 1,
      created: new Date().toISOString(),
      source: { certs: 'c', 'distributor-state': 's', 'command-state': 'j' },
      contents: { 'replay-windows': 1 },
      files: [{ root: 'distributor-state', path: '.restore-running', kind: 'replay-windows', size: mark.length, mode: 0o600, sha256: createHash('sha256').update(mark).digest('hex') }],
    };
    const file = join(work.dir, 'with-mark.tar.gz');
    const at = new Date();
    writeFileSync(file, Buffer.concat([gzipSync(tarEntry('manifest.json', 0o600, at, Buffer.from(JSON.stringify(manifest)))), gzipSync(Buffer.concat([tarEntry('files/distributor-state/.restore-running', 0o600, at, mark), Buffer.alloc(1024)]))]));
    const target: AdminPaths = { certsDir: join(work.dir, 'with-mark', 'certs'), stateDir: join(work.dir, 'with-mark', 'state'), commandState: join(work.dir, 'with-mark', 'commands.jsonl') };
    const err = await refusedWith('BACKUP_INVALID', restoreBackup(target, file, { force: true }));
    assert.match(err.message, /restore's mark|half restored/);
    assert.equal(existsSync(join(work.dir, 'with-mark')), false, 'nothing written');
  });
});
