import assert from 'node:assert/strict';
import { cpSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { EXIT, runAdmin } from '../../scripts/admin/run.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';

/**
 * What `fieldstream-admin backup` says the archive holds. An internal server has the CA's
 * certificate (certs/ca.crt, of the kind "ca") but never its key (certs/ca/ stays on the machine
 * that keeps the CA): the summary said "The archive holds private keys and the CA key" of every
 * archive with a file of that kind, so an operator took the internal server's archive for a backup
 * of the CA.
 */
describe('fieldstream-admin backup: what it says it holds', () => {
  const pki = makeTestPki(['dev-a']);
  const work = tempDir('backup-summary');
  after(() => {
    pki.cleanup();
    work.cleanup();
  });
  const backup = async (certs: string, archive: string) => {
    const out: string[] = [];
    const err: string[] = [];
    const env = { CERTS_DIR: certs, DISTRIBUTOR_STATE_DIR: join(work.dir, 'state'), COMMAND_STATE_PATH: join(work.dir, 'commands.jsonl') };
    const code = await runAdmin(['backup', archive], { out: (t) => void out.push(t), err: (t) => void err.push(t), env, cwd: REPO_ROOT });
    assert.equal(code, EXIT.ok, err.join(''));
    return out.join('');
  };

  it('names the CA key only when the archive holds it', async () => {
    const withCa = await backup(pki.dir, join(work.dir, 'ca-machine.tar.gz'));
    assert.match(withCa, /The archive holds private keys and the CA key/, withCa);

    // The internal server's folder: everything but certs/ca/.
    const internal = join(work.dir, 'internal-certs');
    cpSync(pki.dir, internal, { recursive: true });
    rmSync(join(internal, 'ca'), { recursive: true });
    const out = await backup(internal, join(work.dir, 'internal.tar.gz'));
    assert.match(out, /ca 2/, out); // certs/ca.crt and fieldstream-pki.json, of the kind "ca"
    assert.doesNotMatch(out, /the CA key:/, out);
    assert.match(out, /holds no CA key \(ca\/ca\.key is not in this certificates folder\): back up the machine that keeps the CA/, out);
  });
});
