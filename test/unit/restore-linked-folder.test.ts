import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { createBackup } from '../../scripts/admin/backup.ts';
import { restoreBackup } from '../../scripts/admin/restore.ts';

describe('restore onto an installation with a symbolic link below its folders', () => {
  it('refuses before writing anything, rather than write (or chmod) through the link outside the folder', async () => {
    // The target was checked lexically only (resolve and relative): a folder below the certificates
    // or state folder that is a link (one a service's user could make in its own state folder) took
    // the restored keys, and the files the restore chmods, wherever it pointed.
    const pki = makeTestPki(['dev-s']);
    const work = tempDir('restore-linked');
    try {
      const none = join(work.dir, 'no-state');
      const archive = join(work.dir, 'backup.tar.gz');
      await createBackup({ certsDir: pki.dir, stateDir: none, commandState: join(none, 'commands.jsonl') }, archive);

      const certs = join(work.dir, 'target-certs');
      const outside = join(work.dir, 'outside');
      mkdirSync(certs);
      mkdirSync(outside);
      writeFileSync(join(outside, 'mine.txt'), 'not the restore\'s\n');
      symlinkSync(outside, join(certs, 'internal'));
      await assert.rejects(
        restoreBackup({ certsDir: certs, stateDir: join(work.dir, 'target-state'), commandState: join(work.dir, 'target-state', 'commands.jsonl') }, archive, { force: true }),
        (err) => isFieldStreamError(err) && err.code === 'BACKUP_UNSAFE_PATH' && /internal/.test(err.message),
      );
      assert.deepEqual(readdirSync(outside), ['mine.txt'], 'nothing written through the link');
      assert.deepEqual(readdirSync(certs), ['internal'], 'nor anywhere else');

      // Given a real folder there, it restores.
      const plain = join(work.dir, 'plain-certs');
      mkdirSync(join(plain, 'internal'), { recursive: true });
      const r = await restoreBackup({ certsDir: plain, stateDir: join(work.dir, 'target-state'), commandState: join(work.dir, 'target-state', 'commands.jsonl') }, archive);
      assert.ok(r.written.some((f) => f.startsWith(join(plain, 'internal', 'device-keys'))));
    } finally {
      work.cleanup();
      pki.cleanup();
    }
  });
});
