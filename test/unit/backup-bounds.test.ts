import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { createBackup } from '../../scripts/admin/backup.ts';
import { BACKUP_BOUNDS, type BackupBounds } from '../../scripts/admin/backup-bounds.ts';
import type { AdminPaths } from '../../scripts/admin/paths.ts';
import { restoreBackup } from '../../scripts/admin/restore.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * A backup and a restore check one archive against the same bounds (scripts/admin/backup-bounds.ts):
 * the archive's size, its manifest's, the files' count and bytes, and all it unpacks to. The backup
 * counted its files but not its manifest: an archive whose files fitted and whose manifest took it
 * past a bound was written, and the restore then refused it (BACKUP_TOO_LARGE, BACKUP_INVALID), an
 * archive found useless on the day it is needed. With each bound set just below and at what one real
 * archive holds, the backup writes the archive exactly when the restore takes it.
 */
describe('backup and restore agree on the bounds of an archive', () => {
  const work = tempDir('backup-bounds');
  const source: AdminPaths = { certsDir: join(work.dir, 'no-certs'), stateDir: join(work.dir, 'state'), commandState: join(work.dir, 'commands.jsonl') };
  const archive = join(work.dir, 'backup.tar.gz');
  /** One time for every backup here: the same files make the same archive, byte for byte. */
  const now = new Date('2026-12-01T00:00:00.000Z');
  /** What the archive made with the default bounds holds, bound by bound. */
  const actual: Partial<Record<keyof BackupBounds, number>> = {};
  before(async () => {
    const windows = new ReplayWindows(join(source.stateDir, 'replay'));
    for (let seq = 1; seq <= 30; seq++) windows.record(`dev-${seq % 4}`, 'epoch-1', seq);
    windows.persist();
    writeFileSync(join(source.stateDir, 'gateways.txt'), 'gw-1\n');
    writeFileSync(source.commandState, `{"commandId":"${randomBytes(16).toString('hex')}","deviceId":"dev-a","command":"ping"}\n`);
    // Files that do not compress, each smaller than the archive (which bounds any one file too),
    // and many names: a manifest that is a good part of the archive.
    for (let i = 0; i < 20; i++) writeFileSync(join(source.stateDir, `instances-note-${i}.txt`), randomBytes(120).toString('base64'));
    const { manifest } = await createBackup(source, archive, { now });
    const bytes = readFileSync(archive);
    actual.archiveMaxBytes = bytes.length;
    actual.unpackedMaxBytes = gunzipSync(bytes).length;
    actual.manifestMaxBytes = Buffer.byteLength(JSON.stringify(manifest, null, 1) + '\n');
    actual.maxFiles = manifest.files.length;
    actual.filesMaxBytes = manifest.files.reduce((n, f) => n + f.size, 0);
  });
  after(() => work.cleanup());

  it('the defaults are the limits of shared/limits.ts', () => {
    assert.equal(BACKUP_BOUNDS.archiveMaxBytes, LIMITS.backupArchiveMaxBytes);
    assert.equal(BACKUP_BOUNDS.filesMaxBytes, LIMITS.backupMaxBytes);
    assert.equal(BACKUP_BOUNDS.maxFiles, LIMITS.backupMaxFiles);
    assert.equal(BACKUP_BOUNDS.manifestMaxBytes, LIMITS.backupManifestMaxBytes);
    assert.ok(BACKUP_BOUNDS.unpackedMaxBytes >= LIMITS.backupMaxBytes + LIMITS.backupManifestMaxBytes);
  });

  let n = 0;
  /** Whether a promise resolves; a refusal other than the archive's size or validity fails the test. */
  async function accepted(p: Promise<unknown>): Promise<boolean> {
    try {
      await p;
      return true;
    } catch (err) {
      assert.ok(isFieldStreamError(err) && (err.code === 'BACKUP_TOO_LARGE' || err.code === 'BACKUP_INVALID'), String(err));
      return false;
    }
  }

  for (const bound of ['archiveMaxBytes', 'manifestMaxBytes', 'unpackedMaxBytes', 'maxFiles', 'filesMaxBytes'] as const) {
    it(`${bound}: one below what the archive holds, both refuse (the backup BACKUP_TOO_LARGE, writing nothing); at it, both take it`, async () => {
      const at = actual[bound] as number;
      for (const value of [at - 1, at]) {
        const bounds: BackupBounds = { ...BACKUP_BOUNDS, [bound]: value };
        const out = join(work.dir, `${bound}-${value}.tar.gz`);
        let backupErr: unknown;
        const backedUp = await accepted(createBackup(source, out, { bounds, now }).catch((e: unknown) => {
          backupErr = e;
          throw e;
        }));
        const target: AdminPaths = { certsDir: join(work.dir, `t${++n}`, 'certs'), stateDir: join(work.dir, `t${n}`, 'state'), commandState: join(work.dir, `t${n}`, 'commands.jsonl') };
        const restored = await accepted(restoreBackup(target, archive, { bounds }));
        assert.equal(backedUp, restored, `${bound} = ${value} (the archive holds ${at}): backup ${backedUp ? 'wrote it' : 'refused'}, restore ${restored ? 'took it' : 'refused'}`);
        assert.equal(backedUp, value === at, `${bound} = ${value}`);
        if (!backedUp) {
          assert.ok(isFieldStreamError(backupErr, 'BACKUP_TOO_LARGE'), String(backupErr));
          assert.equal(existsSync(out), false, 'no archive written');
        }
      }
    });
  }
});
