import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { CommandFrame } from '../../shared/contract/downlink.ts';
import type { ResponsePayload } from '../../shared/contract/payloads.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { signCommand } from '../../shared/security/command-auth.ts';
import { createLogger } from '../../shared/logger.ts';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import { captureLogs } from '../helpers/gateway-fixture.ts';
import { tempDir } from '../helpers/pki.ts';
import { until } from '../helpers/processes.ts';

// A device back online after a day away is delivered every command queued for it at once, and each
// started its exec program at the same time: dozens of processes on a Raspberry Pi. Now at most
// FIELD_COMMANDS_CONCURRENCY run at once, the others wait in order of arrival, before anything of
// them is journaled, in a line that is bounded too.
const guard = { deviceId: 'valve-1', key: undefined, allowUnsigned: true, maxAgeMs: 1e12, skewMs: 5_000 };
const quiet = createLogger('field-client', 'silent');
const frameOf = (id: string, issuedAt = Date.now()): CommandFrame => ({ type: 'command', commandId: id, command: 'job', issuedAt });
const ids = (n: number) => Array.from({ length: n }, (_, i) => `cmd-${String(i).padStart(2, '0')}`);

/**
 * Handlers whose `job` runs a shell script appending "start ID NANOS" and "end ID NANOS" lines to a
 * log (one write each, O_APPEND: the file's order is the order they happened in), and in between
 * runs `body` (`GO` in it: a file the test creates to let the programs end).
 */
function device(name: string, slots: { concurrency: number; waitingMax: number }, body: string) {
  const tmp = tempDir(name);
  const log = join(tmp.dir, 'programs.log');
  const go = join(tmp.dir, 'go');
  const journal = join(tmp.dir, 'commands.journal');
  const script = `echo "start $FIELDSTREAM_COMMAND_ID $(date +%s%N)" >> ${log}; ${body.replaceAll('GO', go)}; echo "end $FIELDSTREAM_COMMAND_ID $(date +%s%N)" >> ${log}`;
  const make = () => new CommandHandlers(guard, journal, undefined, slots).configure({ job: { type: 'exec', program: '/bin/sh', args: ['-c', script], timeoutMs: 60_000 } }, undefined);
  const events = () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').map((l) => l.split(' ') as [string, string, string]) : []);
  const journaled = (state: string) => (existsSync(journal) ? readFileSync(journal, 'utf8').split('\n').filter((l) => l.split(' ')[1] === state).map((l) => l.split(' ')[0]) : []);
  return { tmp, make, events, journaled, letGo: (suffix = '') => writeFileSync(go + suffix, ''), starts: () => events().filter((e) => e[0] === 'start').map((e) => e[1]) };
}

/** The most programs running at once, by the order of their lines. */
function mostAtOnce(events: ReadonlyArray<[string, string, string]>): number {
  let now = 0;
  let most = 0;
  for (const [what] of events) most = Math.max(most, (now += what === 'start' ? 1 : -1));
  return most;
}

describe('commands delivered together run at most FIELD_COMMANDS_CONCURRENCY at once (commands.ts, command-slots.ts)', () => {
  it('runs a dozen exec programs three at a time, starts them in the order they came, and answers each once', async () => {
    const d = device('command-concurrency', { concurrency: 3, waitingMax: 100 }, 'sleep 0.3');
    try {
      const h = d.make();
      const sent: ResponsePayload[] = [];
      const all = ids(12);
      const answered = all.map((id) => h.answer(frameOf(id), async (r) => void sent.push(r), quiet));
      await until('three run, nine wait', () => h.runningNow === 3 && h.waitingNow === 9);
      await Promise.all(answered);
      const events = d.events();
      assert.equal(events.length, 24, 'each program ran once, to its end');
      assert.equal(mostAtOnce(events), 3, `programs at once, by their log: ${events.map((e) => e.join(' ')).join('; ')}`);
      // By their clocks too: no start before the end that freed its slot (three ends before the fourth start, and so on).
      const at = (what: string) => events.filter((e) => e[0] === what).map((e) => BigInt(e[2])).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      const [startsAt, endsAt] = [at('start'), at('end')];
      for (let i = 3; i < startsAt.length; i++) assert.ok(startsAt[i]! >= endsAt[i - 3]!, `start ${i} before the end ${i - 3} that freed its slot`);
      assert.deepEqual(d.journaled('started'), all, 'journaled as started in the order they came');
      assert.deepEqual(d.starts().slice(3), all.slice(3), 'the waiting started in the order they came');
      assert.deepEqual(sent.map((r) => r.commandId).sort(), all, 'each answered once');
      assert.ok(sent.every((r) => r.status === 'completed'));
      assert.deepEqual([h.runningNow, h.waitingNow], [0, 0]);
    } finally {
      d.tmp.cleanup();
    }
  });

  it('keeps the order of arrival when the first to arrive waits for the answers kept from a full queue to be queued', async () => {
    // The first command's arrival queues the answers the queue refused before (KeptAnswers.drain);
    // the commands arriving meanwhile went on at once, and took the slots before it.
    const d = device('command-concurrency-kept', { concurrency: 1, waitingMax: 100 }, 'true');
    try {
      const h = d.make();
      await h.answer(frameOf('cmd-kept'), () => Promise.reject(new FieldStreamError('FIELD_QUEUE_FULL', 'full')), quiet);
      const sent: ResponsePayload[] = [];
      const slowQueue = async (r: ResponsePayload) => {
        await new Promise((done) => setTimeout(done, 100));
        sent.push(r);
      };
      const all = ids(6);
      await Promise.all(all.map((id) => h.answer(frameOf(id), slowQueue, quiet)));
      assert.deepEqual(d.journaled('started'), ['cmd-kept', ...all], 'journaled as started in the order they came');
      assert.deepEqual(sent.map((r) => r.commandId), ['cmd-kept', ...all], 'the kept answer first, then each once');
    } finally {
      d.tmp.cleanup();
    }
  });

  it('keeps at most waitingMax waiting: one more is not run nor journaled (FIELD_COMMANDS_WAITING_FULL), and runs at its next delivery; a copy of a waiting one takes no second place', async () => {
    const d = device('command-waiting-full', { concurrency: 1, waitingMax: 2 }, 'while [ ! -e GO ]; do sleep 0.02; done');
    try {
      const h = d.make();
      const { lines, logger } = captureLogs();
      const sent: ResponsePayload[] = [];
      const queue = async (r: ResponsePayload) => void sent.push(r);
      const [first, second, third, fourth] = ids(4).map((id) => frameOf(id));
      const answered = [first!, second!, third!].map((f) => h.answer(f, queue, logger));
      await until('one runs, two wait', () => h.runningNow === 1 && h.waitingNow === 2 && d.starts().length === 1);
      await h.answer(fourth!, queue, logger); // answered at once: no place
      assert.equal(lines.find((l) => l.commandId === 'cmd-03')?.code, 'FIELD_COMMANDS_WAITING_FULL');
      // Copies of the waiting ones, of the running one, delivered again meanwhile.
      await Promise.all([second!, third!, first!, second!].map((f) => h.answer(f, queue, logger)));
      assert.equal(h.waitingNow, 2, 'copies take no place');
      assert.deepEqual(d.journaled('started'), ['cmd-00'], 'nothing journaled of those waiting, or refused');
      d.letGo();
      await Promise.all(answered);
      assert.deepEqual(sent.map((r) => r.commandId), ['cmd-00', 'cmd-01', 'cmd-02'], 'each answered once, in order');
      assert.deepEqual(d.starts(), ['cmd-00', 'cmd-01', 'cmd-02']);
      await h.answer(fourth!, queue, logger); // its next delivery
      assert.deepEqual([sent.length, sent[3]?.commandId, sent[3]?.status], [4, 'cmd-03', 'completed']);
      assert.deepEqual(d.starts(), ['cmd-00', 'cmd-01', 'cmd-02', 'cmd-03']);
    } finally {
      d.letGo();
      d.tmp.cleanup();
    }
  });

  it('refuses a command whose signed expiry passed while it waited (FIELD_COMMAND_STALE), and does not run it', async () => {
    const tmp = tempDir('command-waited-stale');
    try {
      const key = Buffer.alloc(32, 7);
      const signed = (id: string, expiresAt: number): CommandFrame => {
        const issuedAt = Date.now();
        return { type: 'command', commandId: id, command: 'job', issuedAt, auth: signCommand(key, { commandId: id, deviceId: 'valve-1', command: 'job', issuedAt }, expiresAt) };
      };
      let release = () => undefined as void;
      const ran: string[] = [];
      const h = new CommandHandlers({ ...guard, key, allowUnsigned: false, skewMs: 0 }, join(tmp.dir, 'commands.journal'), undefined, { concurrency: 1, waitingMax: 10 }).register(
        'job',
        (_p, frame) => (ran.push(frame.commandId), frame.commandId === 'cmd-long' ? new Promise((r) => (release = () => r({ status: 'completed' }))) : { status: 'completed' }),
      );
      const sent: ResponsePayload[] = [];
      const long = h.answer(signed('cmd-long', Date.now() + 60_000), async (r) => void sent.push(r), quiet);
      const expiring = h.answer(signed('cmd-expiring', Date.now() + 200), async (r) => void sent.push(r), quiet);
      await until('one waits', () => h.waitingNow === 1);
      await new Promise((r) => setTimeout(r, 400));
      release();
      await Promise.all([long, expiring]);
      assert.deepEqual(ran, ['cmd-long']);
      const answer = sent.find((r) => r.commandId === 'cmd-expiring');
      assert.equal(answer?.status, 'rejected');
      assert.equal((answer?.result as { code?: string } | undefined)?.code, 'FIELD_COMMAND_STALE');
    } finally {
      tmp.cleanup();
    }
  });

  it('at an orderly stop, lets those waiting go unrun and unjournaled, and the next start runs them at their next delivery', async () => {
    const d = device('command-waiting-stop', { concurrency: 1, waitingMax: 10 }, 'while [ ! -e GO ]; do sleep 0.02; done');
    try {
      const h = d.make();
      const sent: ResponsePayload[] = [];
      const queue = async (r: ResponsePayload) => void sent.push(r);
      const frames = ids(3).map((id) => frameOf(id));
      const answered = frames.map((f) => h.answer(f, queue, quiet));
      await until('one runs, two wait', () => h.waitingNow === 2 && d.starts().length === 1);
      const stopped = Date.now();
      await h.stop(); // the running program ends on SIGTERM
      await Promise.all(answered);
      assert.ok(Date.now() - stopped < 4_000, 'the waiting did not hold the stop');
      assert.deepEqual(sent.map((r) => r.commandId), ['cmd-00'], 'only the one running answered (of unknown outcome)');
      assert.deepEqual(d.starts(), ['cmd-00']);
      assert.deepEqual(d.journaled('started'), ['cmd-00']);
      d.letGo();
      const after = d.make();
      for (const f of frames) await after.answer(f, queue, quiet);
      assert.deepEqual(sent.map((r) => r.commandId), ['cmd-00', 'cmd-01', 'cmd-02'], 'no second answer for the one stopped');
      assert.deepEqual(sent.slice(1).map((r) => r.status), ['completed', 'completed']);
      assert.deepEqual(d.starts(), ['cmd-00', 'cmd-01', 'cmd-02']);
    } finally {
      d.letGo();
      d.tmp.cleanup();
    }
  });

  it('after a kill while commands wait, the next start runs those that waited, and answers the one that ran of unknown outcome', async () => {
    // Each program waits for a file of its own: the one the "killed" client runs never ends by
    // itself (that client takes no further part; its stop at the end only cleans up).
    const d = device('command-waiting-kill', { concurrency: 1, waitingMax: 10 }, 'while [ ! -e GO-$FIELDSTREAM_COMMAND_ID ]; do sleep 0.02; done');
    const killed = d.make(); // never stopped before the restart: its journal is as a SIGKILL left it
    try {
      const frames = ids(3).map((id) => frameOf(id));
      for (const f of frames) void killed.answer(f, async () => undefined, quiet);
      await until('one runs, two wait', () => killed.waitingNow === 2 && d.starts().length === 1);
      assert.deepEqual(d.journaled('started'), ['cmd-00'], 'nothing journaled of those waiting');
      d.letGo('-cmd-01');
      d.letGo('-cmd-02');
      const restarted = d.make();
      const sent: ResponsePayload[] = [];
      for (const f of frames) await restarted.answer(f, async (r) => void sent.push(r), quiet);
      assert.deepEqual(sent.map((r) => [r.commandId, r.status]), [['cmd-00', 'failed'], ['cmd-01', 'completed'], ['cmd-02', 'completed']]);
      assert.match(String(sent[0]?.result), /^FIELD_COMMAND_OUTCOME_UNKNOWN: /, 'the one that ran: not run again');
      assert.deepEqual(d.starts(), ['cmd-00', 'cmd-01', 'cmd-02'], 'each ran once');
    } finally {
      await killed.stop();
      d.tmp.cleanup();
    }
  });
});
