import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { CommandFrame } from '../../shared/contract/downlink.ts';
import type { ResponsePayload } from '../../shared/contract/payloads.ts';
import { createLogger } from '../../shared/logger.ts';
import { bootId, processStart } from '../../shared/process-identity.ts';
import { endProgramGroup } from '../../field-client/src/command-orphans.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';
import { alive, until } from '../helpers/processes.ts';

// An exec program outlived its field client killed with SIGKILL (a process group of its own), and
// the next start knew nothing of it. Its group is now journaled with its leader's identity as it is
// spawned, and the next start ends it, only if it is that same process: a pid reused by an
// unrelated process, or one of an earlier boot, is never signalled.
const guard = { deviceId: 'valve-1', key: undefined, allowUnsigned: true, maxAgeMs: 1e12, skewMs: 5_000 };
const quiet = createLogger('field-client', 'silent');
const T = Date.now();
const frameOf = (id: string, issuedAt = T): CommandFrame => ({ type: 'command', commandId: id, command: 'job', issuedAt });

/** An unrelated process, in a process group of its own (as an exec program is), running `script`. */
function unrelated(script = 'exec sleep 300'): number {
  const child = spawn('/bin/sh', ['-c', script], { detached: true, stdio: 'ignore' });
  child.unref();
  return child.pid as number;
}

/** The answer the journal keeps for `id`, as its next delivery gets it. */
async function answerOf(h: CommandHandlers, id: string): Promise<ResponsePayload> {
  const sent: ResponsePayload[] = [];
  h.queueKept(async (r) => void sent.push(r), quiet);
  await until(`${id} answered`, () => sent.some((r) => r.commandId === id));
  return sent.find((r) => r.commandId === id) as ResponsePayload;
}

describe('exec programs left running by a field client killed (command-orphans.ts)', () => {
  it('ends the program group a client left running, from the journal alone, and answers its command; a rewrite of the journal keeps the record', async () => {
    const tmp = tempDir('orphan-end');
    const pidFile = join(tmp.dir, 'pids');
    const journal = join(tmp.dir, 'commands.journal');
    let pids: number[] = [];
    try {
      // The client "killed": it is simply never stopped, and a second reads its journal, as a restart does.
      const killed = new CommandHandlers(guard, journal, 4);
      const script = `trap '' TERM; sleep 300 & echo $! > ${pidFile}; echo $$ >> ${pidFile}; wait`;
      killed.configure({ job: { type: 'exec', program: '/bin/sh', args: ['-c', script], timeoutMs: 600_000 } }, undefined);
      killed.register('quick', () => ({ status: 'completed' }));
      void killed.answer(frameOf('cmd-long'), async () => undefined, quiet);
      await until('the program started', () => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim().split('\n').length >= 2);
      pids = readFileSync(pidFile, 'utf8').trim().split('\n').map(Number);
      assert.match(readFileSync(journal, 'utf8'), /^cmd-long program \d+ \{"pgid":\d+,"start":"\d+","boot":"[^"]+"\}$/m);
      // Many commands after it: the journal is rewritten, and cmd-long would be the first id forgotten.
      for (let i = 0; i < 12; i++) {
        const f = { ...frameOf(`cmd-q${i}`, T + 1 + i), command: 'quick' };
        await killed.answer(f, async () => undefined, quiet);
      }
      const logs = new LogCapture();
      const restarted = new CommandHandlers(guard, journal, 4);
      const started = Date.now();
      await restarted.endOrphans(logs.logger);
      const took = Date.now() - started;
      assert.ok(pids.every((p) => !alive(p)), 'the program and its child, which ignore SIGTERM, are gone');
      assert.ok(took >= 4_900, `SIGKILL only after the grace (${took} ms)`);
      assert.ok(logs.lines.some((l) => l.code === 'FIELD_COMMAND_OUTCOME_UNKNOWN' && l.fate === 'ended' && l.commandId === 'cmd-long'));
      const answer = await answerOf(restarted, 'cmd-long');
      assert.equal(answer.status, 'failed');
      assert.match(String(answer.result), /^FIELD_COMMAND_OUTCOME_UNKNOWN: .*still ran at the restart, and was ended/);
      // Answered: the next start finds nothing to end.
      const again = new LogCapture();
      await new CommandHandlers(guard, journal, 4).endOrphans(again.logger);
      assert.equal(again.lines.length, 0);
    } finally {
      for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
      tmp.cleanup();
    }
  });

  it('never signals a pid the record names that is another process now (another start time), nor one of an earlier boot', async () => {
    const tmp = tempDir('orphan-reused');
    const reused = unrelated();
    const sameStart = unrelated();
    try {
      await until('both run', () => processStart(reused) !== undefined && processStart(sameStart) !== undefined);
      const boot = bootId() as string;
      const journal = join(tmp.dir, 'commands.journal');
      const other = String(Number(processStart(reused)) + 1);
      appendFileSync(journal, `cmd-r started ${T}\ncmd-r program ${T} ${JSON.stringify({ pgid: reused, start: other, boot })}\n`);
      appendFileSync(journal, `cmd-b started ${T}\ncmd-b program ${T} ${JSON.stringify({ pgid: sameStart, start: processStart(sameStart), boot: 'an-earlier-boot' })}\n`);
      const logs = new LogCapture();
      const h = new CommandHandlers(guard, journal);
      await h.endOrphans(logs.logger);
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(alive(reused), 'a reused pid is left alone');
      assert.ok(alive(sameStart), 'a process of another boot is left alone');
      assert.deepEqual(logs.lines.map((l) => [l.commandId, l.fate]).sort(), [['cmd-b', 'rebooted'], ['cmd-r', 'reused']]);
      const sent: ResponsePayload[] = [];
      h.queueKept(async (r) => void sent.push(r), quiet);
      await until('both answered', () => sent.length === 2);
      for (const answer of sent) {
        assert.equal(answer.status, 'failed');
        assert.match(String(answer.result), /^FIELD_COMMAND_OUTCOME_UNKNOWN: .*ended by the restart|^FIELD_COMMAND_OUTCOME_UNKNOWN: .*the machine restarted since/);
      }
    } finally {
      for (const pid of [reused, sameStart]) if (alive(pid)) process.kill(-pid, 'SIGKILL');
      tmp.cleanup();
    }
  });

  it('reports program records damaged on the disk, without crashing, and still answers their commands of unknown outcome', async () => {
    const tmp = tempDir('orphan-damaged');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      appendFileSync(journal, `cmd-d1 started ${T}\ncmd-d1 program ${T} {"pgid":"1; rm -rf /","start":"1","boot":"b"}\n`);
      appendFileSync(journal, `cmd-d2 started ${T}\ncmd-d2 program ${T} {"pgid":12\n`); // torn by a power cut
      appendFileSync(journal, `cmd-d3 started ${T}\ncmd-d3 program ${T} {"pgid":1,"start":"1","boot":"b"}\n`); // init: never a program of ours
      const h = new CommandHandlers(guard, journal).register('job', () => assert.fail('run again'));
      assert.deepEqual([...h.journalDamagedPrograms], ['cmd-d1', 'cmd-d2', 'cmd-d3']);
      assert.equal(h.journalUnreadable, 0, 'lines of ours, their record damaged');
      const logs = new LogCapture();
      await h.endOrphans(logs.logger);
      assert.equal(logs.lines.length, 0, 'nothing to end: no record could be read');
      for (const id of ['cmd-d1', 'cmd-d2', 'cmd-d3']) {
        const answer = await h.run(frameOf(id));
        assert.equal(answer?.status, 'failed');
        assert.match(String(answer?.result), /^FIELD_COMMAND_OUTCOME_UNKNOWN: /);
      }
    } finally {
      tmp.cleanup();
    }
  });

  it('reports a damaged program record only while its command is unanswered: one answered after it names no program that may run on', async () => {
    const tmp = tempDir('orphan-damaged-answered');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      const first = new CommandHandlers(guard, journal).register('quick', () => ({ status: 'completed' }));
      const sent: ResponsePayload[] = [];
      await first.answer({ ...frameOf('cmd-a'), command: 'quick' }, async (r) => void sent.push(r), quiet);
      assert.equal(sent.length, 1);
      // Its program line damaged on the disk, between its "started" and its answer.
      const lines = readFileSync(journal, 'utf8').split('\n');
      lines.splice(lines.findIndex((l) => l.startsWith('cmd-a started')) + 1, 0, `cmd-a program ${T} {"pgid":12`);
      writeFileSync(journal, lines.join('\n'));
      appendFileSync(journal, `cmd-u started ${T}\ncmd-u program ${T} {"pgid":"x"}\n`);
      const h = new CommandHandlers(guard, journal);
      assert.deepEqual([...h.journalDamagedPrograms], ['cmd-u'], 'cmd-a was answered: nothing of it may run on');
    } finally {
      tmp.cleanup();
    }
  });

  it('where this machine says nothing of its processes at the restart (no /proc), says the program may run on, not that the machine rebooted', { skip: spawnSync('unshare', ['-Urm', 'true']).status === 0 ? false : 'needs user and mount namespaces (unshare -Urm)' }, async () => {
    // bootId() reads nothing without /proc: every record was taken for one of an earlier boot, and
    // its command answered "the machine restarted since, which ended its program", the program
    // possibly still at work.
    const tmp = tempDir('orphan-no-proc');
    const pid = unrelated();
    try {
      await until('it runs', () => processStart(pid) !== undefined);
      const journal = join(tmp.dir, 'commands.journal');
      appendFileSync(journal, `cmd-n started ${T}\ncmd-n program ${T} ${JSON.stringify({ pgid: pid, start: processStart(pid), boot: bootId() })}\n`);
      const script = join(tmp.dir, 'restart.mts');
      const repo = join(import.meta.dirname, '..', '..');
      writeFileSync(script, [
        `import { CommandHandlers } from ${JSON.stringify(join(repo, 'field-client/src/commands.ts'))};`,
        `import { LogCapture } from ${JSON.stringify(join(repo, 'test/helpers/embedded.ts'))};`,
        `const h = new CommandHandlers(${JSON.stringify(guard)}, process.argv[2]);`,
        'const logs = new LogCapture();',
        'await h.endOrphans(logs.logger);',
        'const sent: unknown[] = [];',
        'h.queueKept(async (r) => void sent.push(r), logs.logger);',
        'await new Promise((r) => setTimeout(r, 200));',
        'process.stdout.write(JSON.stringify({ fates: logs.lines.filter((l) => l.fate).map((l) => l.fate), sent }));',
      ].join('\n'));
      // A mount namespace of its own whose /proc is an empty folder: a device without /proc.
      const run = spawnSync('unshare', ['-Urm', 'sh', '-c', 'mount -t tmpfs none /proc && exec "$0" --import tsx "$@"', process.execPath, script, journal], { cwd: repo, encoding: 'utf8', timeout: 60_000 });
      assert.equal(run.status, 0, run.stderr);
      const out = JSON.parse(run.stdout) as { fates: string[]; sent: ResponsePayload[] };
      assert.deepEqual(out.fates, ['unseen']);
      assert.equal(out.sent.length, 1);
      assert.equal(out.sent[0]?.status, 'failed');
      assert.match(String(out.sent[0]?.result), /^FIELD_COMMAND_OUTCOME_UNKNOWN: .*whether its program still runs is unknown/);
      assert.doesNotMatch(String(out.sent[0]?.result), /restarted/);
      assert.ok(alive(pid), 'nothing signalled');
    } finally {
      if (alive(pid)) process.kill(-pid, 'SIGKILL');
      tmp.cleanup();
    }
  });

  it('gives many programs left running their grace together, looking at the processes once a poll for all of them, not once for each', async () => {
    // Each program's wait read every /proc/PID/stat of the machine every poll: with tens of
    // programs that ignore SIGTERM the start spent its whole grace reading /proc, and went past it.
    const tmp = tempDir('orphans-many');
    const journal = join(tmp.dir, 'commands.journal');
    const n = 60;
    const pids: number[] = [];
    try {
      // SIGTERM ignored, by the shell and the sleep it becomes (an ignored signal stays so across exec).
      for (let i = 0; i < n; i++) pids.push(unrelated(`trap '' TERM; : > ${join(tmp.dir, `ready-${i}`)}; exec sleep 300`));
      await until('their traps are set', () => pids.every((p, i) => existsSync(join(tmp.dir, `ready-${i}`)) && processStart(p) !== undefined), 20_000);
      const boot = bootId() as string;
      appendFileSync(journal, pids.map((pgid, i) => `cmd-m${i} started ${T}\ncmd-m${i} program ${T} ${JSON.stringify({ pgid, start: processStart(pgid), boot })}\n`).join(''));
      const h = new CommandHandlers(guard, journal);
      const logs = new LogCapture();
      const grace = TIMINGS.fieldCommandStopGraceMs;
      const cpu = process.cpuUsage();
      const started = Date.now();
      await h.endOrphans(logs.logger);
      const took = Date.now() - started;
      const used = process.cpuUsage(cpu);
      const cpuMs = (used.user + used.system) / 1000;
      assert.ok(pids.every((p) => !alive(p)), 'every group ended');
      assert.equal(logs.lines.filter((l) => l.fate === 'ended').length, n);
      assert.ok(took < 2 * grace + 1_000, `within the grace and its SIGKILL's (${took} ms)`);
      assert.ok(cpuMs < took / 4, `the wait mostly idle: ${cpuMs.toFixed(0)} ms of CPU in ${took} ms`);
    } finally {
      for (const pid of pids) if (alive(pid)) process.kill(-pid, 'SIGKILL');
      tmp.cleanup();
    }
  });

  it('kills with SIGKILL, after the grace, a group whose leader ignores SIGTERM', async () => {
    const tmp = tempDir('orphans-ignores-term');
    const ready = join(tmp.dir, 'ready');
    // It says when its trap is set: a SIGTERM sent before that ended it at once.
    const pid = unrelated(`trap '' TERM; : > ${ready}; while :; do sleep 0.05; done`);
    try {
      await until('its trap is set', () => existsSync(ready) && processStart(pid) !== undefined);
      const rec = { pgid: pid, start: processStart(pid) as string, boot: bootId() as string };
      const started = Date.now();
      assert.equal(await endProgramGroup(rec, 300), 'ended');
      assert.ok(Date.now() - started >= 300);
      assert.ok(!alive(pid));
    } finally {
      if (alive(pid)) process.kill(-pid, 'SIGKILL');
      tmp.cleanup();
    }
  });
});
