import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { createBackup } from '../../scripts/admin/backup.ts';
import type { AdminPaths } from '../../scripts/admin/paths.ts';
import { restoreBackup } from '../../scripts/admin/restore.ts';
import { EXIT, runAdmin } from '../../scripts/admin/run.ts';
import { killedRestore } from '../helpers/killed-restore.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * A restore killed midway leaves its marks in the folders it was writing. A later restore of
 * another archive, one that holds none of a marked folder, took away the killed restore's marks in
 * every folder, its own or not: the state folder, half restored and never written since, was
 * unmarked, and the distributor started on replay windows of two times without a word. A restore
 * takes away the marks of the folders it writes only, and says which folders stay half restored.
 */
describe('a restore of another archive over the marks of a killed one', () => {
  const work = tempDir('restore-killed-marks');
  const full: AdminPaths = { certsDir: join(work.dir, 'full', 'no-certs'), stateDir: join(work.dir, 'full', 'state'), commandState: join(work.dir, 'full', 'commands.jsonl') };
  const journalOnly: AdminPaths = { certsDir: join(work.dir, 'j', 'no-certs'), stateDir: join(work.dir, 'j', 'no-state'), commandState: join(work.dir, 'j', 'commands.jsonl') };
  const fullArchive = join(work.dir, 'full.tar.gz');
  const journalArchive = join(work.dir, 'journal.tar.gz');
  before(async () => {
    const windows = new ReplayWindows(join(full.stateDir, 'replay'));
    for (let seq = 1; seq <= 10; seq++) windows.record('dev-a', 'epoch-1', seq);
    windows.persist();
    writeFileSync(join(full.stateDir, 'gateways.txt'), 'gw-1\n');
    writeFileSync(full.commandState, '{"commandId":"c-1","deviceId":"dev-a","command":"ping"}\n');
    await createBackup(full, fullArchive);
    mkdirSync(dirname(journalOnly.commandState), { recursive: true });
    writeFileSync(journalOnly.commandState, '{"commandId":"c-2","deviceId":"dev-a","command":"ping"}\n');
    await createBackup(journalOnly, journalArchive);
  });
  after(() => work.cleanup());

  it("keeps the killed restore's mark in the state folder it does not write, and says so; the killed archive run to its end takes it away", { timeout: 60_000 }, async () => {
    const target: AdminPaths = { certsDir: join(work.dir, 't', 'certs'), stateDir: join(work.dir, 't', 'state'), commandState: join(work.dir, 't', 'command-api', 'commands.jsonl') };
    const stateMark = join(target.stateDir, '.restore-running');
    await killedRestore(target, fullArchive, 1);
    assert.ok(existsSync(stateMark), 'the killed restore marked the state folder');

    const r = await restoreBackup(target, journalArchive, { force: true });
    assert.ok(existsSync(stateMark), 'the state folder, half restored, is still marked');
    assert.equal(existsSync(join(dirname(target.commandState), '.restore-running')), false, "the journal's folder, written to its end, is not");
    assert.deepEqual(r.stillHalfRestored, [target.stateDir]);

    // The command line says it, and how to finish.
    let out = '';
    const code = await runAdmin(['restore', journalArchive, '--force', '--certs-dir', target.certsDir, '--state-dir', target.stateDir, '--command-state', target.commandState], {
      out: (s: string) => void (out += s),
      err: (s: string) => void (out += s),
      env: {},
      cwd: work.dir,
    });
    assert.equal(code, EXIT.ok, out);
    assert.ok(out.includes(`still half restored  ${target.stateDir}`), out);
    assert.match(out, /run that restore again to its end/i);

    const done = await restoreBackup(target, fullArchive, { force: true });
    assert.equal(existsSync(stateMark), false);
    assert.deepEqual(done.stillHalfRestored, []);
  });
});
