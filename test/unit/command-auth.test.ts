import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { CommandFrame } from '../../shared/contract/downlink.ts';
import type { JsonValue, ResponsePayload } from '../../shared/contract/payloads.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { signCommand, verifyCommand, type SignedCommand } from '../../shared/security/command-auth.ts';
import { checkCommand, type CommandGuardOptions } from '../../field-client/src/command-guard.ts';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import { FieldClient } from '../../field-client/src/field-client.ts';
import { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { DurableQueue } from '../../field-client/src/queue/durable-queue.ts';
import { withFileSizeLimit } from '../helpers/file-size-limit.ts';
import { tempDir } from '../helpers/pki.ts';
import { watchDatasync } from '../helpers/datasync-watch.ts';

const key = randomBytes(32);
const now = 1_800_000_000_000;
const cmd: SignedCommand = { commandId: 'cmd-1', deviceId: 'valve-1', command: 'open_valve', params: { percent: 40 }, issuedAt: now - 1000 };
const expiresAt = now + 3_600_000;

describe('command authentication (shared/security/command-auth.ts)', () => {
  it('verifies what it signed, and refuses each field tampered with', () => {
    const auth = signCommand(key, cmd, expiresAt);
    assert.equal(verifyCommand(key, cmd, auth), true);
    const tampered: SignedCommand[] = [
      { ...cmd, commandId: 'cmd-2' },
      { ...cmd, deviceId: 'valve-2' },
      { ...cmd, command: 'close_valve' },
      { ...cmd, params: { percent: 100 } },
      { ...cmd, params: null },
      { ...cmd, params: undefined },
      { ...cmd, issuedAt: cmd.issuedAt + 1 },
    ];
    for (const t of tampered) assert.equal(verifyCommand(key, t, auth), false, JSON.stringify(t));
    assert.equal(verifyCommand(key, cmd, { ...auth, expiresAt: expiresAt + 1 }), false, 'expiry extended');
    assert.equal(verifyCommand(key, cmd, { ...auth, mac: signCommand(key, { ...cmd, command: 'x' }, expiresAt).mac }), false);
  });

  it('refuses a MAC made with another device’s key', () => {
    assert.equal(verifyCommand(key, cmd, signCommand(randomBytes(32), cmd, expiresAt)), false);
  });

  it('tells absent params from null (no JSON text is empty)', () => {
    const none = { ...cmd, params: undefined };
    assert.equal(verifyCommand(key, none, signCommand(key, none, expiresAt)), true);
    assert.equal(verifyCommand(key, { ...cmd, params: null }, signCommand(key, none, expiresAt)), false);
  });
});

const guard: CommandGuardOptions = { deviceId: 'valve-1', key, allowUnsigned: false, maxAgeMs: 60_000, skewMs: 5_000 };
function frame(c: Partial<SignedCommand> = {}, exp = expiresAt, signWith: Buffer | null = key): CommandFrame {
  const s = { ...cmd, ...c };
  return {
    type: 'command',
    commandId: s.commandId,
    command: s.command,
    ...(s.params !== undefined ? { params: s.params as CommandFrame['params'] } : {}),
    issuedAt: s.issuedAt,
    ...(signWith ? { auth: signCommand(signWith, s, exp) } : {}),
  };
}

describe('the field client’s command check (command-guard.ts)', () => {
  it('accepts a fresh command authenticated for this device', () => {
    assert.equal(checkCommand(frame(), guard, now), undefined);
  });
  it('refuses missing, wrong and other-device authentication', () => {
    assert.equal(checkCommand(frame({}, expiresAt, null), guard, now), 'FIELD_COMMAND_UNSIGNED');
    assert.equal(checkCommand(frame({}, expiresAt, null), { ...guard, allowUnsigned: true }, now), 'FIELD_COMMAND_UNSIGNED', 'a device with a key always requires it');
    assert.equal(checkCommand(frame({}, expiresAt, randomBytes(32)), guard, now), 'FIELD_COMMAND_BAD_SIGNATURE');
    assert.equal(checkCommand(frame({ deviceId: 'valve-2' }), guard, now), 'FIELD_COMMAND_BAD_SIGNATURE');
    const altered = { ...frame(), params: { percent: 100 } };
    assert.equal(checkCommand(altered, guard, now), 'FIELD_COMMAND_BAD_SIGNATURE');
  });
  it('refuses stale, expired and future-dated commands, with the clock skew allowed', () => {
    assert.equal(checkCommand(frame({ issuedAt: now - 60_000 - 5_001 }), guard, now), 'FIELD_COMMAND_STALE');
    assert.equal(checkCommand(frame({ issuedAt: now - 60_000 - 4_999 }), guard, now), undefined);
    assert.equal(checkCommand(frame({}, now - 5_001), guard, now), 'FIELD_COMMAND_STALE');
    assert.equal(checkCommand(frame({ issuedAt: now + 5_001 }), guard, now), 'FIELD_COMMAND_FUTURE');
    assert.equal(checkCommand(frame({ issuedAt: now + 4_999 }), guard, now), undefined);
  });
  it('without a key, runs nothing unless unsigned commands are allowed', () => {
    const keyless = { ...guard, key: undefined };
    assert.equal(checkCommand(frame({}, expiresAt, null), keyless, now), 'FIELD_COMMAND_UNSIGNED');
    assert.equal(checkCommand(frame({}, expiresAt, null), { ...keyless, allowUnsigned: true }, now), undefined);
  });
});

describe('the replay journal (commands.ts)', () => {
  // A journal of 100 ids (10,000 in the field client): each state change is synced, as on a device.
  const REMEMBERED = 100;
  const opts = { ...guard, key: undefined, allowUnsigned: true, maxAgeMs: 1e12 };
  const base = Date.now() - 1_000_000;
  const f = (i: number): CommandFrame => ({ type: 'command', commandId: `cmd-${i}`, command: 'open_valve', issuedAt: base + i });

  it('refuses a command id seen before, after a restart too; stays bounded; forgotten ids are refused by the floor', async () => {
    const tmp = tempDir('journal');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      let runs = 0;
      const make = () => new CommandHandlers(opts, journal, REMEMBERED).register('open_valve', () => (runs++, { status: 'completed' }));
      let h = make();
      assert.equal((await h.run(f(0)))?.status, 'completed');
      h.answered('cmd-0');
      assert.equal((await h.run(f(0)))?.code, 'FIELD_COMMAND_REPLAYED');
      h = make(); // restart
      assert.equal((await h.run(f(0)))?.code, 'FIELD_COMMAND_REPLAYED');
      assert.equal(runs, 1);
      for (let i = 1; i <= REMEMBERED + 1; i++) {
        await h.run(f(i));
        h.answered(`cmd-${i}`);
      }
      assert.equal(runs, REMEMBERED + 2);
      const lines = readFileSync(journal, 'utf8').trim().split('\n').length;
      assert.ok(lines <= 2 * REMEMBERED + 1, `the journal holds ${lines} lines`);
      h = make(); // restart: cmd-0 and cmd-1 are forgotten, but the floor still refuses them
      assert.equal((await h.run(f(0)))?.code, 'FIELD_COMMAND_REPLAYED');
      assert.equal((await h.run(f(1)))?.code, 'FIELD_COMMAND_REPLAYED');
      assert.equal((await h.run(f(REMEMBERED + 1)))?.code, 'FIELD_COMMAND_REPLAYED');
      assert.equal((await h.run(f(REMEMBERED + 2)))?.status, 'completed');
      assert.equal(h.stats.refusedByCode.FIELD_COMMAND_REPLAYED, 3);
    } finally {
      tmp.cleanup();
    }
  });

  it('never runs a command twice after a power cut tore the journal\'s last line', async () => {
    const tmp = tempDir('journal-torn');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      let runs = 0;
      const make = () => new CommandHandlers(opts, journal, REMEMBERED).register('open_valve', () => (runs++, { status: 'completed' }));
      const h = make();
      await h.run(f(1));
      h.answered('cmd-1');
      // The power went while the next line was being written: half of it on disk.
      appendFileSync(journal, 'cmd-2 sta');
      const after = make();
      // cmd-3 runs, then the power goes again while it runs (never answered); it is delivered again.
      let release = () => {};
      const slow = new CommandHandlers(opts, journal, REMEMBERED).register('open_valve', () => new Promise((r) => (release = () => r((runs++, { status: 'completed' })))));
      const running = slow.run(f(3));
      await new Promise((r) => setImmediate(r));
      assert.equal((await after.run(f(1)))?.code, 'FIELD_COMMAND_REPLAYED');
      const rebooted = make();
      const again = await rebooted.run(f(3));
      assert.equal(again?.status, 'failed', 'started before the power went: answered, not run again');
      release();
      await running;
      assert.equal(runs, 2, 'cmd-1 and cmd-3 each ran once');
    } finally {
      tmp.cleanup();
    }
  });

  it('removes at its start the file aside a rewrite killed midway left, and keeps the journal it was to replace', async () => {
    // A rewrite writes the journal aside (commands.journal.tmp-PID), up to some 20 MiB with the
    // answers it keeps, then renames it over the journal; a kill before the rename left it on the
    // device's disk for good, another at each such kill (another process id each start).
    const tmp = tempDir('journal-aside');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      const h = new CommandHandlers(opts, journal, REMEMBERED).register('open_valve', () => ({ status: 'completed' }));
      await h.run(f(1));
      h.answered('cmd-1');
      const aside = `${journal}.tmp-4194301`;
      writeFileSync(aside, 'cmd-1 sta'); // cut off by the kill
      const other = join(tmp.dir, 'commands.journal.bak');
      writeFileSync(other, "an operator's copy\n");
      const after = new CommandHandlers(opts, journal, REMEMBERED).register('open_valve', () => ({ status: 'completed' }));
      assert.equal(existsSync(aside), false, 'the file aside is gone');
      assert.equal(existsSync(other), true, 'nothing else is touched');
      assert.equal((await after.run(f(1)))?.code, 'FIELD_COMMAND_REPLAYED', 'the journal stands');
    } finally {
      tmp.cleanup();
    }
  });
});

describe('refusals answered (commands.ts): once per command id', () => {
  it('does not answer again an authentic stale command once more ids were refused than it remembers', async () => {
    // A compromised gateway holds every command ever sent to the device; replaying more stale ones
    // than the ids remembered, in turn, had each answered again and again: an answer in the durable
    // queue each, and a row in the database.
    const remembered = 100;
    const h = new CommandHandlers(guard, undefined, remembered);
    const stale = (i: number) => frame({ commandId: `cmd-stale-${i}`, issuedAt: now - 200_000 + i });
    const n = remembered + 1;
    for (let i = 0; i < n; i++) {
      const a = await h.run(stale(i), now);
      assert.equal(a?.code, 'FIELD_COMMAND_STALE');
      assert.equal(a?.unanswered, undefined, `stale command ${i} is answered once`);
      h.answered(`cmd-stale-${i}`); // its answer is in the queue
    }
    for (let i = 0; i < n; i++) assert.equal((await h.run(stale(i), now))?.unanswered, true, `stale command ${i} answered again`);
    // One never seen, issued after every one forgotten: answered.
    assert.equal((await h.run(stale(n + 5), now))?.unanswered, undefined);
  });
});

/** What the tests of answers share: a device without a key taking unsigned commands, a frame, a queue that takes all. */
const unsigned = { ...guard, key: undefined, allowUnsigned: true, maxAgeMs: 1e12 };
const quiet = createLogger('field-client', 'silent');
const frameOf = (id: string): CommandFrame => ({ type: 'command', commandId: id, command: 'open_valve', issuedAt: Date.now() });
const queueInto = (sent: ResponsePayload[]) => async (r: ResponsePayload) => void sent.push(r);

describe('command answers (commands.ts): one per command id', () => {
  const opts = unsigned;
  const log = quiet;
  const f = frameOf;
  const queueFull = () => Promise.reject(new FieldStreamError('FIELD_QUEUE_FULL', 'full'));
  const into = queueInto;

  it('queues the same answer again when the queue refused it (FIELD_QUEUE_FULL) and the command is delivered again', async () => {
    const tmp = tempDir('answer-refused');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      let runs = 0;
      const h = new CommandHandlers(opts, journal).register('open_valve', () => (runs++, { status: 'completed', result: 'opened' }));
      const refused: ResponsePayload[] = [];
      await h.answer(f('cmd-full'), (r) => (refused.push(r), queueFull()), log);
      assert.equal(runs, 1);
      // The command API sends it again when the device's presence turns online (no restart here).
      const sent: ResponsePayload[] = [];
      await h.answer(f('cmd-full'), into(sent), log);
      assert.equal(runs, 1, 'not run twice');
      assert.deepEqual(sent, refused, 'the answer the queue refused, the same (status, result, timestamp)');
      assert.equal(sent[0]?.status, 'completed');
      // In the queue now: a further copy is a replay, not answered.
      await h.answer(f('cmd-full'), into(sent), log);
      assert.equal(sent.length, 1);
      assert.equal(h.stats.refusedByCode.FIELD_COMMAND_REPLAYED, 1);
    } finally {
      tmp.cleanup();
    }
  });

  it('keeps across a restart an answer whose result holds a line or paragraph separator (U+2028, U+2029)', async () => {
    // JSON leaves U+2028 and U+2029 as they are, and a journal line is split at "\n" only; but the
    // pattern a "done" line was read with took them for the end of a line: the line was read as torn,
    // and the command, its answer kept, was answered "failed: interrupted" after the restart.
    const tmp = tempDir('answer-separators');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      let runs = 0;
      const make = () => new CommandHandlers(opts, journal).register('open_valve', () => (runs++, { status: 'completed', result: 'line 1\u2028line 2\u2029end' }));
      const refused: ResponsePayload[] = [];
      await make().answer(f('cmd-separators'), (r) => (refused.push(r), queueFull()), log);
      const sent: ResponsePayload[] = [];
      await make().answer(f('cmd-separators'), into(sent), log); // after a restart
      assert.deepEqual(sent, refused, 'the answer kept, the same');
      assert.equal(runs, 1);
    } finally {
      tmp.cleanup();
    }
  });

  it('with FIELD_QUEUE_SYNC at an interval, journals a command as answered only once its answer is synced in the queue', async () => {
    // The answer was appended (written, not yet synced) and the command journaled "answered" (synced)
    // at once: a power cut then lost the answer while the journal said it was queued, and the
    // command's next delivery was a replay, unanswered: a command that ran, its result lost.
    const tmp = tempDir('answer-interval-sync');
    const queue = await DurableQueue.open({ dir: join(tmp.dir, 'queue'), maxBytes: 64 * 1024 * 1024, segmentBytes: 256 * 1024, fullPolicy: 'reject', sync: { mode: 'interval', ms: 3_600_000 }, log: quiet });
    const queueDir = realpathSync(join(tmp.dir, 'queue'));
    const events: string[] = [];
    const watch = await watchDatasync(tmp.dir, queueDir, events);
    const h = new CommandHandlers(unsigned, join(tmp.dir, 'commands.journal')).register('open_valve', () => ({ status: 'completed', result: 'opened' }));
    const answered = h.answered.bind(h);
    h.answered = (id: string) => {
      events.push('journaled answered');
      return answered(id);
    };
    const connection = new GatewayConnection({ url: 'wss://127.0.0.1:9/ws', tls: { ca: '', cert: '', key: '' }, reconnectInitialMs: 100, reconnectMaxMs: 100, idleTimeoutMs: 1000 }, quiet);
    const client = new FieldClient({ deviceId: 'valve-1', batchMax: 100, window: 100, fileWindow: 1, maxBytes: 64 * 1024 * 1024, dataDir: tmp.dir }, queue, new FileOutbox(tmp.dir, 64 * 1024), connection, h, quiet);
    try {
      connection.emit('frame', frameOf('cmd-interval'));
      for (let i = 0; i < 100 && !events.includes('journaled answered'); i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(queue.find((m) => m.dataType === 'response').length, 1, 'its answer is queued');
      const at = events.indexOf('journaled answered');
      assert.ok(at >= 0 && events.slice(0, at).includes('queue synced'), `the answer synced before the command was journaled answered: ${events.join(', ')}`);
    } finally {
      watch.restore();
      client.stop();
      await queue.close();
      tmp.cleanup();
    }
  });

  it('gets no second answer for a copy delivered while the first answer is being queued', async () => {
    const tmp = tempDir('answer-copy');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      let runs = 0;
      const h = new CommandHandlers(opts, journal).register('open_valve', () => (runs++, { status: 'completed' }));
      const sent: ResponsePayload[] = [];
      let release!: () => void;
      const slowQueue = (r: ResponsePayload) => new Promise<void>((res) => (release = () => (sent.push(r), res())));
      const first = h.answer(f('cmd-dup'), slowQueue, log);
      await new Promise((r) => setImmediate(r)); // the handler is done; the answer waits for the queue's fsync
      await h.answer(f('cmd-dup'), into(sent), log); // a delivery again (presence republished)
      release();
      await first;
      await h.answer(f('cmd-dup'), into(sent), log); // and once it is in the queue: a replay
      assert.deepEqual(sent.map((r) => [r.status, r.result]), [['completed', undefined]]);
      assert.equal(runs, 1);
    } finally {
      tmp.cleanup();
    }
  });

  it('keeps an answer not yet queued across a restart and the journal\'s rewrites, and never forgets its id', async () => {
    const tmp = tempDir('answer-kept');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      const REMEMBERED = 5;
      let runs = 0;
      const make = () => new CommandHandlers(opts, journal, REMEMBERED).register('open_valve', (params) => (runs++, { status: 'completed', result: { params: (params ?? null) as JsonValue, out: 'x'.repeat(1000) } }));
      let h = make();
      const refused: ResponsePayload[] = [];
      await h.answer({ ...f('cmd-held'), params: { percent: 40 } }, (r) => (refused.push(r), queueFull()), log);
      // More commands than the journal remembers, answered: it is rewritten, cmd-held kept.
      // (The queue keeps refusing cmd-held's answer: each command tries it again first.)
      for (let i = 0; i < 4 * REMEMBERED; i++) await h.answer(f(`cmd-${i}`), (r) => (r.commandId === 'cmd-held' ? queueFull() : Promise.resolve()), log);
      const lines = readFileSync(journal, 'utf8').trim().split('\n');
      assert.ok(lines.length <= 2 * REMEMBERED + 1, `the journal holds ${lines.length} lines`);
      assert.ok(lines.some((l) => l.startsWith('cmd-held done ')), 'the kept answer survives the rewrite');
      h = make(); // restart
      const sent: ResponsePayload[] = [];
      await h.answer({ ...f('cmd-held'), params: { percent: 40 } }, into(sent), log);
      assert.deepEqual(sent, refused);
      assert.equal(runs, 1 + 4 * REMEMBERED, 'each command ran once');
    } finally {
      tmp.cleanup();
    }
  });

  it('a SIGKILL after the answer is journaled: the same answer after the restart; a journaled answer torn by a power cut: "failed", not run again', async () => {
    const tmp = tempDir('answer-sigkill');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      let runs = 0;
      const make = () => new CommandHandlers(opts, journal).register('open_valve', () => (runs++, { status: 'completed', result: 'opened' }));
      // Killed after run() journaled the answer: before it was queued, or before "answered" was.
      const first = await make().run(f('cmd-1'));
      const again = await make().run(f('cmd-1'));
      assert.deepEqual(again, first);
      // Killed while the answer's line was written: half of it on disk.
      await make().run(f('cmd-2'));
      const text = readFileSync(journal, 'utf8');
      assert.match(text, /\ncmd-2 done \d+ \{.*\}\n$/);
      writeFileSync(journal, text.slice(0, -10));
      const torn = await make().run(f('cmd-2'));
      assert.equal(torn?.status, 'failed');
      assert.match(String(torn?.result), /^FIELD_COMMAND_OUTCOME_UNKNOWN: /);
      assert.equal(runs, 2, 'cmd-1 and cmd-2 each ran once');
    } finally {
      tmp.cleanup();
    }
  });

  it(`runs no new command while ${LIMITS.fieldCommandAnswersHeldMax} answers wait for room in the queue (the journal stays bounded); its next delivery runs it`, async () => {
    const tmp = tempDir('answers-held');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      let runs = 0;
      const h = new CommandHandlers(opts, journal).register('open_valve', () => (runs++, { status: 'completed' }));
      for (let i = 0; i < LIMITS.fieldCommandAnswersHeldMax; i++) await h.answer(f(`cmd-${i}`), queueFull, log);
      assert.equal(runs, LIMITS.fieldCommandAnswersHeldMax);
      const sent: ResponsePayload[] = [];
      const refused: ResponsePayload[] = [];
      await h.answer(f('cmd-next'), (r) => (refused.push(r), queueFull()), log);
      assert.equal(runs, LIMITS.fieldCommandAnswersHeldMax, 'not run');
      assert.ok(refused.every((r) => r.commandId !== 'cmd-next'), 'not answered');
      // The queue has room again: the next command to arrive, whichever it is, first queues the
      // answers kept, then runs.
      await h.answer(f('cmd-next'), into(sent), log);
      assert.equal(runs, LIMITS.fieldCommandAnswersHeldMax + 1, 'run now');
      assert.deepEqual(sent.at(-1) && [sent.at(-1)?.commandId, sent.at(-1)?.status], ['cmd-next', 'completed']);
      assert.deepEqual(sent.slice(0, -1).map((r) => r.commandId).sort(), Array.from({ length: LIMITS.fieldCommandAnswersHeldMax }, (_, i) => `cmd-${i}`).sort());
      await h.answer(f('cmd-0'), into(sent), log);
      assert.equal(sent.length, LIMITS.fieldCommandAnswersHeldMax + 1, 'answered once: a copy now is a replay');
    } finally {
      tmp.cleanup();
    }
  });

  it('answers kept for commands never delivered again (past their TTL, or stale now) are queued at the next command: the device is not left refusing every command for ever', async () => {
    // The command API sends a command again only until its TTL: an answer the full queue refused,
    // kept for that delivery, was kept for ever, and 100 of them (a distributor down for a while,
    // a few test events of 300 s) left the device running no command again, across restarts.
    // A delivery that came when the command was stale (FIELD_COMMAND_MAX_AGE_S) got no answer either.
    const tmp = tempDir('answers-expired');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      let runs = 0;
      const register = (x: CommandHandlers) => x.register('open_valve', () => (runs++, { status: 'completed', result: 'opened' }));
      const h = register(new CommandHandlers(opts, journal));
      for (let i = 0; i < LIMITS.fieldCommandAnswersHeldMax; i++) await h.answer(f(`old-${i}`), queueFull, log);
      // A restart: the kept answers are in the journal; none of those commands comes again.
      const again = register(new CommandHandlers(opts, journal));
      const sent: ResponsePayload[] = [];
      await again.answer(f('fresh'), into(sent), log);
      assert.equal(runs, LIMITS.fieldCommandAnswersHeldMax + 1, 'the new command ran');
      assert.equal(sent.length, LIMITS.fieldCommandAnswersHeldMax + 1, 'every kept answer queued, and the new one');
      assert.ok(sent.slice(0, -1).every((r) => r.status === 'completed' && r.result === 'opened'));
      // A stale delivery of a command whose answer is kept: the answer, not silence.
      const stale = new CommandHandlers({ ...opts, maxAgeMs: 300, skewMs: 0 }, join(tmp.dir, 'stale.journal')).register('open_valve', () => ({ status: 'completed', result: 'opened' }));
      const old = f('old-stale');
      await stale.answer(old, queueFull, log);
      await new Promise((r) => setTimeout(r, 400));
      const late: ResponsePayload[] = [];
      await stale.answer(old, into(late), log);
      assert.equal(checkCommand(old, { ...opts, maxAgeMs: 300, skewMs: 0 }), 'FIELD_COMMAND_STALE', 'stale now');
      assert.deepEqual(late.map((r) => [r.commandId, r.status]), [['old-stale', 'completed']]);
    } finally {
      tmp.cleanup();
    }
  });

  it('queues a kept answer once when its command is delivered again while the kept answers before it are queued', async () => {
    // The kept answers are walked from a list taken when the walk began: one its own delivery
    // queued meanwhile (the walk waiting on an earlier one's fsync) was queued a second time.
    const tmp = tempDir('answers-drain-copy');
    try {
      const h = new CommandHandlers(opts, join(tmp.dir, 'commands.journal')).register('open_valve', () => ({ status: 'completed', result: 'opened' }));
      await h.answer(f('held-a'), queueFull, log);
      await h.answer(f('held-b'), queueFull, log);
      const sent: ResponsePayload[] = [];
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      // A new command: the kept answers go first, held-a's waiting for the queue's fsync.
      const fresh = h.answer(f('fresh'), async (r) => {
        if (r.commandId === 'held-a') await held;
        sent.push(r);
      }, log);
      await new Promise((r) => setImmediate(r));
      // Meanwhile held-b is delivered again (its device's presence): its own delivery queues it.
      await h.answer(f('held-b'), into(sent), log);
      release();
      await fresh;
      assert.deepEqual(sent.map((r) => r.commandId).sort(), ['fresh', 'held-a', 'held-b'], 'each answer queued once');
    } finally {
      tmp.cleanup();
    }
  });
});

describe('a command journal the disk refuses (commands.ts)', () => {
  // field-client.ts calls answer() with `void`: a rejection would be an unhandled one, and end the
  // client (and its data upload) at every delivery of the command.
  const opts = unsigned;
  const log = quiet;
  const f = frameOf;
  const into = queueInto;
  /** The journal's name taken by a folder: every append to it fails (EISDIR), as on a read-only disk. */
  const refuse = (journal: string) => {
    const text = readFileSync(journal, 'utf8');
    rmSync(journal);
    mkdirSync(journal);
    return () => {
      rmSync(journal, { recursive: true });
      writeFileSync(journal, text);
    };
  };

  it('runs no command it cannot journal as started, does not reject, and runs it at its next delivery', async () => {
    const tmp = tempDir('journal-full');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      writeFileSync(journal, 'cmd-old answered 1\n');
      let runs = 0;
      const h = new CommandHandlers(opts, journal).register('open_valve', () => (runs++, { status: 'completed' }));
      const sent: ResponsePayload[] = [];
      await withFileSizeLimit(statSync(journal).size, async () => {
        await assert.doesNotReject(h.answer(f('cmd-disk'), into(sent), log));
      });
      assert.equal(runs, 0, 'not run without its "started" on disk');
      assert.equal(sent.length, 0);
      await h.answer(f('cmd-disk'), into(sent), log); // the disk has room again
      assert.equal(runs, 1);
      assert.deepEqual(sent.map((r) => r.status), ['completed']);
    } finally {
      tmp.cleanup();
    }
  });

  it('queues no answer the journal cannot record: kept in memory, answered at the next delivery; after a restart "failed", never both', async () => {
    const tmp = tempDir('journal-done-refused');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      let runs = 0;
      let restore = () => {};
      let onDisk = '';
      const h = new CommandHandlers(opts, journal).register('open_valve', () => {
        runs++;
        onDisk = readFileSync(journal, 'utf8'); // "started"
        restore = refuse(journal); // the disk turns read-only while it runs
        return { status: 'completed', result: 'opened' };
      });
      const sent: ResponsePayload[] = [];
      await assert.doesNotReject(h.answer(f('cmd-1'), into(sent), log));
      assert.equal(sent.length, 0, 'not answered: on disk it is "started", which a restart answers "failed"');
      await assert.doesNotReject(h.answer(f('cmd-1'), into(sent), log));
      assert.equal(sent.length, 0);
      // Killed now: the restart answers what the disk says, and does not run it again.
      const copy = join(tmp.dir, 'copy.journal');
      writeFileSync(copy, onDisk);
      const rebooted = await new CommandHandlers(opts, copy).register('open_valve', () => (runs++, { status: 'completed' })).run(f('cmd-1'));
      assert.equal(rebooted?.status, 'failed');
      // Not killed: the disk takes writes again, and the next delivery answers what it did.
      restore();
      await h.answer(f('cmd-1'), into(sent), log);
      assert.deepEqual(sent.map((r) => [r.status, r.result]), [['completed', 'opened']]);
      assert.match(readFileSync(journal, 'utf8'), /^cmd-1 answered /m);
      assert.equal(runs, 1);
    } finally {
      tmp.cleanup();
    }
  });

  it('an answer queued that the journal cannot record as answered: not rejected, not answered again; after a restart the same answer', async () => {
    const tmp = tempDir('journal-answered-refused');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      let runs = 0;
      const make = () => new CommandHandlers(opts, journal).register('open_valve', () => (runs++, { status: 'completed', result: 'opened' }));
      const h = make();
      const sent: ResponsePayload[] = [];
      let restore = () => {};
      await assert.doesNotReject(h.answer(f('cmd-1'), async (r) => void (sent.push(r), (restore = refuse(journal))), log));
      assert.equal(sent.length, 1);
      await h.answer(f('cmd-1'), into(sent), log);
      assert.equal(sent.length, 1, 'a delivery again is a replay: the answer is in the queue');
      restore();
      await make().answer(f('cmd-1'), into(sent), log); // killed, restarted: the journal says "done"
      assert.deepEqual(sent[1], sent[0], 'the same answer (the command API records it once)');
      assert.equal(runs, 1);
    } finally {
      tmp.cleanup();
    }
  });
});

describe('an exec command (commands-file.ts)', () => {
  it('runs with params of any size the command API takes: on stdin always, in FIELDSTREAM_PARAMS when they fit in one', async () => {
    // 60,002 characters of JSON, within LIMITS.stringMaxChars; 150,002 bytes in UTF-8, past what
    // Linux takes in one environment string (MAX_ARG_STRLEN, 128 KiB): spawn threw E2BIG, and a
    // command the API signed and sent was answered "failed" without its program ever running.
    const big = 'é€'.repeat(30_000);
    assert.ok(JSON.stringify(big).length <= LIMITS.stringMaxChars);
    const script = "let s='';process.stdin.setEncoding('utf8').on('data',(c)=>s+=c).on('end',()=>console.log(JSON.stringify({stdin:JSON.parse(s).length,env:process.env.FIELDSTREAM_PARAMS===undefined?null:JSON.parse(process.env.FIELDSTREAM_PARAMS).length})))";
    const h = new CommandHandlers(unsigned).configure({ echo: { type: 'exec', program: process.execPath, args: ['-e', script], timeoutMs: 30_000 } }, undefined);
    const run = (id: string, params: JsonValue) => h.run({ type: 'command', commandId: id, command: 'echo', params, issuedAt: Date.now() });
    const large = await run('cmd-exec-large', big);
    assert.equal(large?.status, 'completed', JSON.stringify(large?.result));
    assert.deepEqual(large?.result, { stdin: big.length, env: null });
    const small = await run('cmd-exec-small', 'é€');
    assert.deepEqual(small?.result, { stdin: 2, env: 2 });
  });

  it("reports a program's output as it wrote it, a character split between two writes too", async () => {
    // Each chunk was decoded alone: the two halves of "é" written apart became two U+FFFD.
    const script = "const b=Buffer.from('\"café\"');process.stdout.write(b.subarray(0,5));setTimeout(()=>process.stdout.write(b.subarray(5)),100)";
    const h = new CommandHandlers(unsigned).configure({ say: { type: 'exec', program: process.execPath, args: ['-e', script], timeoutMs: 30_000 } }, undefined);
    const answer = await h.run({ type: 'command', commandId: 'cmd-exec-split', command: 'say', issuedAt: Date.now() });
    assert.equal(answer?.status, 'completed');
    assert.equal(answer?.result, 'café');
  });

  it('answers a JSON output of tens of kilobytes whole, not cut into a broken string: as itself, or as its text past the values a result holds', async () => {
    // Only the first 16,384 characters of the output were kept: a program printing 26 KB of JSON (a
    // status dump, a list) was answered "completed" with a string cut mid-JSON, although a response
    // carries up to LIMITS.stringMaxChars.
    const dump = async (rows: string[]) => {
      const h = new CommandHandlers(unsigned).configure({ dump: { type: 'exec', program: process.execPath, args: ['-e', `process.stdout.write(JSON.stringify({rows:${JSON.stringify(rows)}}))`], timeoutMs: 30_000 } }, undefined);
      return h.run({ type: 'command', commandId: `cmd-exec-dump-${rows.length}`, command: 'dump', issuedAt: Date.now() });
    };
    const long = (n: number) => Array.from({ length: n }, (_, i) => `row-${String(i).padStart(6, '0')}-${'x'.repeat(100)}`);
    const few = long(LIMITS.commandResultMaxValues - 1); // `{"rows":[…]}`: one more than its rows
    assert.ok(JSON.stringify({ rows: few }).length > 16 * 1024 && JSON.stringify({ rows: few }).length < LIMITS.fieldCommandOutputMaxChars);
    const answer = await dump(few);
    assert.equal(answer?.status, 'completed');
    assert.deepEqual(answer?.result, { rows: few });
    // Past LIMITS.commandResultMaxValues, JSON no response carries (CONTRACT_RESULT_TOO_MANY_VALUES
    // at the gateway): the output is answered as the text it is, whole, rather than replaced by a note.
    const rows = Array.from({ length: 2000 }, (_, i) => `row-${String(i).padStart(6, '0')}`);
    assert.ok(JSON.stringify({ rows }).length > 16 * 1024 && JSON.stringify({ rows }).length < LIMITS.fieldCommandOutputMaxChars);
    const text = await dump(rows);
    assert.equal(text?.status, 'completed');
    assert.equal(text?.result, JSON.stringify({ rows }));
  });

  it('keeps the status of a program whose output cannot be carried as its result: one that completed is not reported failed', async () => {
    // Valid JSON nested deeper than LIMITS.jsonMaxDepth is no result a response carries. The program ran and exited 0: answered "failed", an operator would send
    // the command again, and it would run twice.
    const deep = '['.repeat(LIMITS.jsonMaxDepth + 1) + ']'.repeat(LIMITS.jsonMaxDepth + 1);
    const h = new CommandHandlers(unsigned).configure(
      {
        deep: { type: 'exec', program: process.execPath, args: ['-e', `process.stdout.write(${JSON.stringify(deep)})`], timeoutMs: 30_000 },
        broke: { type: 'exec', program: process.execPath, args: ['-e', `process.stdout.write(${JSON.stringify(deep)});process.exit(3)`], timeoutMs: 30_000 },
      },
      undefined,
    );
    const deepAnswer = await h.run({ type: 'command', commandId: 'cmd-exec-deep', command: 'deep', issuedAt: Date.now() });
    assert.equal(deepAnswer?.status, 'completed', JSON.stringify(deepAnswer?.result));
    assert.match(String(deepAnswer?.result), /^FIELD_COMMAND_RESULT_INVALID: .*deeper than/);
    // A program that failed: "failed", with its own output (text, which any response carries).
    const failed = await h.run({ type: 'command', commandId: 'cmd-exec-broke', command: 'broke', issuedAt: Date.now() });
    assert.equal(failed?.status, 'failed');
    // A handler of the device's own returning a result no response carries: its status kept too.
    const own = new CommandHandlers(unsigned).register('own', () => ({ status: 'rejected', result: { tooBig: 'x'.repeat(LIMITS.stringMaxChars) } }));
    const answer = await own.run({ type: 'command', commandId: 'cmd-own-big', command: 'own', issuedAt: Date.now() });
    assert.equal(answer?.status, 'rejected');
    assert.match(String(answer?.result), /^FIELD_COMMAND_RESULT_INVALID: /);
    // Nor one of more values and containers than a response carries (LIMITS.commandResultMaxValues).
    const many = new CommandHandlers(unsigned).register('many', () => ({ status: 'completed', result: { list: Array.from({ length: LIMITS.commandResultMaxValues }, (_, i) => i) } }));
    const manyAnswer = await many.run({ type: 'command', commandId: 'cmd-own-many', command: 'many', issuedAt: Date.now() });
    assert.equal(manyAnswer?.status, 'completed');
    assert.match(String(manyAnswer?.result), /^FIELD_COMMAND_RESULT_INVALID: .*more than \d+ JSON values/);
  });

  it('kills a program still running at its timeout with the children it started, and answers at once', async () => {
    // A shell script running a long program: only the shell was killed, the program went on holding
    // the output open, and the answer waited for it (30 s here, where the timeout is 300 ms).
    const tmp = tempDir('exec-timeout');
    try {
      const pidFile = join(tmp.dir, 'child.pid');
      const h = new CommandHandlers(unsigned).configure({ slow: { type: 'exec', program: '/bin/sh', args: ['-c', `echo 'valve 1 closed'; sleep 30 & echo $! > '${pidFile}'; wait`], timeoutMs: 300 } }, undefined);
      const started = Date.now();
      const answer = await h.run({ type: 'command', commandId: 'cmd-exec-timeout', command: 'slow', issuedAt: Date.now() });
      assert.ok(Date.now() - started < 10_000, `answered after ${Date.now() - started} ms`);
      assert.equal(answer?.status, 'failed');
      assert.match(String(answer?.result), /^FIELD_COMMAND_TIMEOUT/);
      // Not taken for "did nothing": it did something, and says how far it got.
      assert.match(String(answer?.result), /what it did until then is unknown.*its output until then: valve 1 closed$/);
      // Gone, or dead and not yet reaped by whoever adopted it (a zombie, state Z).
      const pid = Number(readFileSync(pidFile, 'utf8'));
      const gone = () => {
        try {
          return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').startsWith('Z');
        } catch {
          return true;
        }
      };
      for (let i = 0; i < 50 && !gone(); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(gone(), 'the program the script started is gone too');
    } finally {
      tmp.cleanup();
    }
  });

  it('answers a program that exited before its timeout by its exit code, though a process it left holds its output open', async () => {
    // A program that starts a service and exits 0 at once, the service keeping the output it
    // inherited (an init script, start-stop-daemon --background): killed nothing, the program had
    // completed, and the answer said `failed` (FIELD_COMMAND_TIMEOUT). Told so, an operator sends it
    // again, and it runs twice. Its own exit is the answer: `completed` (or `failed` with its code).
    const tmp = tempDir('exec-exited-held');
    const pidFile = join(tmp.dir, 'daemon.pid');
    const childFile = join(tmp.dir, 'child.pid');
    try {
      const h = new CommandHandlers(unsigned).configure(
        {
          service: { type: 'exec', program: '/bin/sh', args: ['-c', `setsid sh -c 'echo $$ > "${pidFile}"; exec sleep 30' & echo started`], timeoutMs: 300 },
          refused: { type: 'exec', program: '/bin/sh', args: ['-c', `setsid sh -c 'echo $$ > "${pidFile}-3"; exec sleep 30' & echo no >&2; exit 3`], timeoutMs: 300 },
          // A child left in its group, still holding the output at the timeout: ended with the group, as before.
          left: { type: 'exec', program: '/bin/sh', args: ['-c', `sleep 30 & echo $! > '${childFile}'; echo done`], timeoutMs: 300 },
        },
        undefined,
      );
      const service = await h.run({ type: 'command', commandId: 'cmd-exec-exited', command: 'service', issuedAt: Date.now() });
      assert.equal(service?.status, 'completed', String(service?.result));
      assert.equal(service?.result, 'started');
      const refused = await h.run({ type: 'command', commandId: 'cmd-exec-exited-3', command: 'refused', issuedAt: Date.now() });
      assert.equal(refused?.status, 'failed');
      assert.equal(refused?.result, 'exit code 3: no');
      const left = await h.run({ type: 'command', commandId: 'cmd-exec-left', command: 'left', issuedAt: Date.now() });
      assert.equal(left?.status, 'completed', String(left?.result));
      assert.equal(left?.result, 'done');
      const child = Number(readFileSync(childFile, 'utf8'));
      const gone = () => {
        try {
          return readFileSync(`/proc/${child}/stat`, 'utf8').replace(/^.*\) /s, '').startsWith('Z');
        } catch {
          return true;
        }
      };
      for (let i = 0; i < 50 && !gone(); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(gone(), 'the child left in its group is ended at the timeout');
    } finally {
      for (const file of [pidFile, `${pidFile}-3`]) {
        try {
          process.kill(Number(readFileSync(file, 'utf8')), 'SIGKILL');
        } catch {
          /* not started, or gone */
        }
      }
      tmp.cleanup();
    }
  });

  it('answers at its timeout a program whose output a process outside its group holds open', async () => {
    // A program that starts a daemon of its own session (setsid, as daemons do) which keeps the
    // output it inherited: killing the program's group does not reach it, and the answer waited
    // for the output to close, i.e. for the daemon to end (never, for a daemon): the command
    // stayed "running", unanswered, until the field client restarted.
    const tmp = tempDir('exec-escaped');
    const pidFile = join(tmp.dir, 'daemon.pid');
    try {
      const h = new CommandHandlers(unsigned).configure(
        { daemon: { type: 'exec', program: '/bin/sh', args: ['-c', `setsid sh -c 'echo $$ > "${pidFile}"; exec sleep 30' & sleep 30`], timeoutMs: 300 } },
        undefined,
      );
      const started = Date.now();
      const answer = await h.run({ type: 'command', commandId: 'cmd-exec-escaped', command: 'daemon', issuedAt: Date.now() });
      assert.ok(Date.now() - started < 10_000, `answered after ${Date.now() - started} ms`);
      assert.equal(answer?.status, 'failed');
      assert.match(String(answer?.result), /^FIELD_COMMAND_TIMEOUT/);
    } finally {
      try {
        process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
      } catch {
        /* not started, or gone */
      }
      tmp.cleanup();
    }
  });
});
