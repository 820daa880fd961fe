import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { CommandFrame } from '../../shared/contract/downlink.ts';
import type { ResponsePayload } from '../../shared/contract/payloads.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import { tempDir } from '../helpers/pki.ts';
import { alive, until } from '../helpers/processes.ts';

// An exec command's program kept running after the field client stopped: its own process group
// (so that a timeout kills its children too) is not the client's, and nothing ended it. After the
// restart the command was answered "failed: interrupted" though its action may have completed.
const guard = { deviceId: 'valve-1', key: undefined, allowUnsigned: true, maxAgeMs: 1e12, skewMs: 5_000 };
const quiet = createLogger('field-client', 'silent');
const frameOf = (id: string): CommandFrame => ({ type: 'command', commandId: id, command: 'job', issuedAt: Date.now() });

/** Runs `script` (sh) as the exec command `job`; its pids are written to `pids` by the script. */
async function running(name: string, script: string) {
  const tmp = tempDir(name);
  const pidFile = join(tmp.dir, 'pids');
  const h = new CommandHandlers(guard, join(tmp.dir, 'commands.journal'));
  h.configure({ job: { type: 'exec', program: '/bin/sh', args: ['-c', script.replaceAll('PIDS', pidFile)], timeoutMs: 600_000 } }, undefined);
  const sent: ResponsePayload[] = [];
  const answered = h.answer(frameOf('cmd-job'), async (r) => void sent.push(r), quiet);
  await until('the program started', () => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim().split('\n').length >= 2);
  const pids = readFileSync(pidFile, 'utf8').trim().split('\n').map(Number);
  assert.ok(pids.every(alive));
  return { h, sent, answered, pids, cleanup: () => tmp.cleanup() };
}

describe('an exec command when the field client stops (commands.ts, commands-file.ts)', () => {
  it('ends the program\'s whole process group at an orderly stop, and answers that its outcome is unknown', async () => {
    const r = await running('stop-group', 'sleep 600 & echo $! > PIDS; echo $$ >> PIDS; wait');
    try {
      const started = Date.now();
      await r.h.stop();
      assert.ok(Date.now() - started < TIMINGS.fieldCommandStopGraceMs, 'SIGTERM was enough');
      await until('the program and its child are gone', () => !r.pids.some(alive), 2_000);
      await r.answered;
      assert.equal(r.sent.length, 1, 'answered before the stop returned');
      assert.equal(r.sent[0]?.status, 'failed');
      assert.match(String(r.sent[0]?.result), /^FIELD_COMMAND_OUTCOME_UNKNOWN: /);
    } finally {
      for (const pid of r.pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
      r.cleanup();
    }
  });

  it('kills a program that ignores SIGTERM after TIMINGS.fieldCommandStopGraceMs', async () => {
    // An ignored signal stays ignored across exec: the sleep ignores it too.
    const r = await running('stop-kill', "trap '' TERM; sleep 600 & echo $! > PIDS; echo $$ >> PIDS; wait");
    try {
      const started = Date.now();
      await r.h.stop();
      const took = Date.now() - started;
      assert.ok(took >= TIMINGS.fieldCommandStopGraceMs - 50 && took < TIMINGS.fieldCommandStopGraceMs + 2_000, `took ${took} ms`);
      await until('the program and its child are gone', () => !r.pids.some(alive), 2_000);
      assert.match(String(r.sent[0]?.result), /^FIELD_COMMAND_OUTCOME_UNKNOWN: /);
    } finally {
      for (const pid of r.pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
      r.cleanup();
    }
  });

  it('answers a program that finishes on SIGTERM with its own word', async () => {
    const r = await running('stop-clean', "trap 'echo rolled back; exit 0' TERM; echo $$ > PIDS; echo $$ >> PIDS; while :; do sleep 0.05; done");
    try {
      await r.h.stop();
      assert.deepEqual([r.sent[0]?.status, r.sent[0]?.result], ['completed', 'rolled back']);
    } finally {
      for (const pid of r.pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
      r.cleanup();
    }
  });

  it('runs no new command once stopping: its next delivery runs it', async () => {
    const tmp = tempDir('stop-new');
    try {
      let runs = 0;
      const h = new CommandHandlers(guard, join(tmp.dir, 'commands.journal')).register('job', () => (runs++, { status: 'completed' }));
      await h.stop();
      const sent: ResponsePayload[] = [];
      await h.answer(frameOf('cmd-late'), async (r) => void sent.push(r), quiet);
      assert.deepEqual([runs, sent.length], [0, 0]);
      const after = new CommandHandlers(guard, join(tmp.dir, 'commands.journal')).register('job', () => (runs++, { status: 'completed' }));
      await after.answer(frameOf('cmd-late'), async (r) => void sent.push(r), quiet);
      assert.deepEqual([runs, sent[0]?.status], [1, 'completed']);
    } finally {
      tmp.cleanup();
    }
  });

  it('after a restart, answers a command that was running with its outcome unknown, not a failure, and does not run it', async () => {
    const tmp = tempDir('stop-restart');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      let runs = 0;
      const before = new CommandHandlers(guard, journal).register('job', () => new Promise(() => (runs++, undefined))); // killed while it runs
      void before.answer(frameOf('cmd-cut'), async () => undefined, quiet);
      await until('journaled as started', () => existsSync(journal) && readFileSync(journal, 'utf8').includes('cmd-cut started'));
      const after = new CommandHandlers(guard, journal).register('job', () => (runs++, { status: 'completed' }));
      const sent: ResponsePayload[] = [];
      await after.answer(frameOf('cmd-cut'), async (r) => void sent.push(r), quiet);
      assert.equal(runs, 1);
      assert.equal(sent[0]?.status, 'failed', 'the contract\'s only final status for a command not known to have completed');
      assert.match(String(sent[0]?.result), /^FIELD_COMMAND_OUTCOME_UNKNOWN: /);
    } finally {
      tmp.cleanup();
    }
  });
});
