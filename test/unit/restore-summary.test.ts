import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { EXIT, runAdmin } from '../../scripts/admin/run.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';

/**
 * What `fieldstream-admin restore` tells the operator to do next. The console reads the stored-feed
 * key once, at its start (console.ts): a console left running over a restore that put another key
 * in place refuses every message of the restarted distributors, which seal the feed with the
 * restored one. The summary said to restart the distributor and the command API only.
 */
describe('fieldstream-admin restore: what to restart', () => {
  const pki = makeTestPki(['dev-a']);
  const work = tempDir('restore-summary');
  after(() => {
    pki.cleanup();
    work.cleanup();
  });
  const admin = async (args: string[], env: Record<string, string>) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runAdmin(args, { out: (t) => void out.push(t), err: (t) => void err.push(t), env, cwd: REPO_ROOT });
    return { code, out: out.join(''), err: err.join('') };
  };
  const envOf = (dir: string, certs: string) => ({ CERTS_DIR: certs, DISTRIBUTOR_STATE_DIR: join(dir, 'state'), COMMAND_STATE_PATH: join(dir, 'commands.jsonl') });

  it('names the console when the archive holds the stored-feed key, and only then', async () => {
    const archive = join(work.dir, 'with-key.tar.gz');
    const made = await admin(['backup', archive], envOf(join(work.dir, 'src'), pki.dir));
    assert.equal(made.code, EXIT.ok, made.err);
    const restored = await admin(['restore', archive], envOf(join(work.dir, 't1'), join(work.dir, 't1', 'certs')));
    assert.equal(restored.code, EXIT.ok, restored.err);
    assert.match(restored.out, /restart\) the distributor, the command API and the console now/, restored.out);
    assert.match(restored.out, /stored-feed key/, restored.out);

    rmSync(pki.paths.storedFeedKey);
    const without = join(work.dir, 'without-key.tar.gz');
    assert.equal((await admin(['backup', without], envOf(join(work.dir, 'src'), pki.dir))).code, EXIT.ok);
    const plain = await admin(['restore', without], envOf(join(work.dir, 't2'), join(work.dir, 't2', 'certs')));
    assert.equal(plain.code, EXIT.ok, plain.err);
    assert.match(plain.out, /restart\) the distributor and the command API now/, plain.out);
  });
});
