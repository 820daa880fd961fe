import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, it } from 'node:test';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { createBackup, tarEntry } from '../../scripts/admin/backup.ts';
import { restoreBackup } from '../../scripts/admin/restore.ts';
import { classify } from '../../scripts/admin/backup-manifest.ts';
import { revokeDevice } from '../../pki/revocation.ts';

/** An archive as a backup writes it, of these files below the certificates folder, each as the manifest describes it. */
function archiveOf(files: Record<string, string>): Buffer {
  const entries = Object.entries(files).map(([path, text]) => ({ path, data: Buffer.from(text) }));
  const manifest = {
    format: 'fieldstream-backup',
    version: 1,
    created: new Date().toISOString(),
    source: { certs: '/c', 'distributor-state': '/s', 'command-state': '/j' },
    contents: {},
    files: entries.map((e) => ({ root: 'certs', path: e.path, kind: classify('certs', e.path), size: e.data.length, mode: 0o600, sha256: createHash('sha256').update(e.data).digest('hex') })),
  };
  const tar = [tarEntry('manifest.json', 0o600, new Date(), Buffer.from(JSON.stringify(manifest))), ...entries.map((e) => tarEntry(`files/certs/${e.path}`, 0o600, new Date(), e.data)), Buffer.alloc(1024)];
  return gzipSync(Buffer.concat(tar));
}

describe("the CA's files that are read with a schema, damaged in a backup", () => {
  it('a restore refuses them before writing anything, and a backup does not take them', async () => {
    // Their sha256 is checked against the manifest, which is the archive's own word: a restore
    // wrote a CRL number that is none, a CA log with a line that is no record, and every later
    // revocation then stopped with CONFIG_INVALID.
    const work = tempDir('backup-content');
    const target = { certsDir: join(work.dir, 'certs'), stateDir: join(work.dir, 'state'), commandState: join(work.dir, 'commands.jsonl') };
    const refused = (code: string) => (err: unknown) => isFieldStreamError(err) && err.code === code;
    try {
      for (const [path, text] of [['ca/crl-number', 'twelve\n'], ['ca/issued.jsonl', '{"name":"devices/a"}\n'], ['fieldstream-pki.json', '{"domain":"example.org"'], ['dmz/tokens/device-tokens.json', '[]']] as const) {
        const archive = join(work.dir, `${path.replace(/\//g, '_')}.tar.gz`);
        writeFileSync(archive, archiveOf({ 'ca.crt': 'x\n', [path]: text }));
        await assert.rejects(restoreBackup(target, archive), (err) => refused('BACKUP_INVALID')(err) && (err as Error).message.startsWith(`certs/${path} in the archive is damaged`), path);
        assert.equal(existsSync(target.certsDir), false, `${path}: nothing written`);
      }
      const whole = join(work.dir, 'whole.tar.gz');
      writeFileSync(whole, archiveOf({ 'ca/crl-number': '7\n', 'ca/issued.jsonl': '{"name":"devices/a","serial":"01","notAfter":"x","subject":"y"}\n{"torn' }));
      await restoreBackup(target, whole);
      assert.deepEqual(readdirSync(join(target.certsDir, 'ca')).sort(), ['crl-number', 'issued.jsonl'], 'a log whose last append never finished reads, as the CA reads it');

      const pki = makeTestPki(['dev-d']);
      try {
        revokeDevice(pki.dir, 'dev-d');
        writeFileSync(join(pki.dir, 'ca', 'crl-number'), 'twelve\n');
        const out = join(work.dir, 'out', 'b.tar.gz');
        mkdirSync(join(work.dir, 'out'));
        await assert.rejects(createBackup({ certsDir: pki.dir, stateDir: target.stateDir, commandState: target.commandState }, out), (err) => refused('BACKUP_UNREADABLE')(err) && /crl-number is damaged/.test((err as Error).message));
        assert.deepEqual(readdirSync(join(work.dir, 'out')), [], 'no archive');
      } finally {
        pki.cleanup();
      }
    } finally {
      work.cleanup();
    }
  });
});
