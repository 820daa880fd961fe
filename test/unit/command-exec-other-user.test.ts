import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { tempDir } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';

// An exec command's program that runs as another user than the field client (sudo, a setuid
// program: the client runs unprivileged, the action needs root) cannot be signalled by the client
// (EPERM). Node reported that refusal as the child's 'error', which was taken for a failure to
// start it: at the timeout, or at the client's stop, the command was answered
// "failed: cannot run …: kill EPERM" while the program ran on. Told it never ran, an operator sends
// it again, and it runs twice. It is answered of unknown outcome now, at once, saying it may still run.
//
// Real processes: the field client's command handling runs as `nobody` (setpriv), and its program is
// a setuid-root copy of setpriv that becomes root wholly (real uid 0), as sudo does. Needs root to
// make that copy; skipped otherwise.
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
const skip = process.getuid?.() !== 0 ? 'needs root (a setuid-root program for the client to run)' : SETPRIV === undefined ? 'no setpriv' : false;

describe('an exec program running as another user (commands-file.ts)', { skip }, () => {
  it('is answered of unknown outcome at its timeout and at the client\'s stop, never as not run', (t) => {
    const tmp = tempDir('exec-other-user');
    const pids = [join(tmp.dir, 'timeout.pid'), join(tmp.dir, 'stop.pid')];
    try {
      chmodSync(tmp.dir, 0o755);
      const rootpriv = join(tmp.dir, 'rootpriv');
      copyFileSync(SETPRIV as string, rootpriv);
      chmodSync(rootpriv, 0o4755);
      // What the machine must allow, checked rather than assumed: a setuid program taking effect in
      // this folder (not on a nosuid mount), and `nobody` reaching the checkout and its tsx (not under
      // a home folder of mode 0700).
      const asNobody = (args: string[]) => spawnSync(SETPRIV as string, ['--reuid=65534', '--regid=65534', '--clear-groups', ...args], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 30_000 });
      if (asNobody([rootpriv, '--reuid=0', '--regid=0', '--clear-groups', 'id', '-u']).stdout.trim() !== '0') return t.skip(`a setuid program does not take effect in ${tmp.dir} (nosuid)`);
      if (asNobody([process.execPath, '--import', 'tsx', '-e', 'process.exit(0)']).status !== 0) return t.skip(`nobody cannot run tsx from ${REPO_ROOT}`);
      const asRoot = (pidFile: string) => [rootpriv, '--reuid=0', '--regid=0', '--clear-groups', '/bin/sh', '-c', `echo $$ > '${pidFile}'; exec sleep 30`];
      const [timeoutProgram, ...timeoutArgs] = asRoot(pids[0] as string);
      const [stopProgram, ...stopArgs] = asRoot(pids[1] as string);
      const script = join(tmp.dir, 'client.mts');
      writeFileSync(
        script,
        `import { CommandHandlers } from ${JSON.stringify(join(REPO_ROOT, 'field-client/src/commands.ts'))};
const h = new CommandHandlers({ deviceId: 'valve-1', key: undefined, allowUnsigned: true, maxAgeMs: 1e12, skewMs: 5000 });
h.configure({
  timeout: { type: 'exec', program: ${JSON.stringify(timeoutProgram)}, args: ${JSON.stringify(timeoutArgs)}, timeoutMs: 500 },
  stop: { type: 'exec', program: ${JSON.stringify(stopProgram)}, args: ${JSON.stringify(stopArgs)}, timeoutMs: 600000 },
}, undefined);
const out = {};
let t = Date.now();
out.timeout = { answer: await h.run({ type: 'command', commandId: 'cmd-timeout', command: 'timeout', issuedAt: Date.now() }), ms: Date.now() - t };
const running = h.run({ type: 'command', commandId: 'cmd-stop', command: 'stop', issuedAt: Date.now() });
for (let i = 0; i < 100 && !(await import('node:fs')).existsSync(${JSON.stringify(pids[1])}); i++) await new Promise((r) => setTimeout(r, 50));
t = Date.now();
void h.stop();
out.stop = { answer: await running, ms: Date.now() - t };
process.stdout.write(JSON.stringify(out));
process.exit(0);
`,
      );
      chmodSync(script, 0o644);
      const run = spawnSync(SETPRIV as string, ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--import', 'tsx', script], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000 });
      assert.equal(run.status, 0, run.stderr);
      const out = JSON.parse(run.stdout) as Record<'timeout' | 'stop', { answer: { status: string; result: string }; ms: number }>;
      for (const [what, { answer, ms }] of Object.entries(out)) {
        assert.equal(answer.status, 'failed', what);
        assert.match(answer.result, /^FIELD_COMMAND_OUTCOME_UNKNOWN: .*could not be ended/, `${what}: ${answer.result}`);
        assert.doesNotMatch(answer.result, /cannot run/, what);
        assert.ok(ms < 10_000, `${what}: answered after ${ms} ms`);
      }
      for (const file of pids) {
        const pid = Number(readFileSync(file, 'utf8'));
        assert.doesNotThrow(() => process.kill(pid, 0), 'the program runs on, as the answer says');
      }
    } finally {
      for (const file of pids) {
        try {
          process.kill(Number(readFileSync(file, 'utf8')), 'SIGKILL');
        } catch {
          /* not started, or gone */
        }
      }
      tmp.cleanup();
    }
  });
});
