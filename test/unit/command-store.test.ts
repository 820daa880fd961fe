import assert from 'node:assert/strict';
import { appendFileSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import mqtt, { type IPublishPacket, type MqttClient } from 'mqtt';
import { CommandDispatcher } from '../../internal-network/command-api/dispatcher.ts';
import type { CommandRecord } from '../../internal-network/command-api/schemas.ts';
import { CommandStore } from '../../internal-network/command-api/store.ts';
import { PostgresResponses, storedResult, type ResponseLedger } from '../../internal-network/command-api/stored-responses.ts';
import { resultFields } from '../../internal-network/distributor/points.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { statusTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { signMessage } from '../../shared/security/message-auth.ts';
import { createLogger } from '../../shared/logger.ts';
import { withFileSizeLimit } from '../helpers/file-size-limit.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * The command API's state (internal-network/command-api/store.ts): a journal that keeps what was
 * taken through torn lines and full disks, never forgets a command still to be answered, and a
 * dispatcher that expires every unfinished command at its TTL and takes no more than
 * LIMITS.commandMaxLive waiting.
 */
const temp = tempDir('command-store');
const tmp = temp.dir;
after(() => temp.cleanup());
const lines: Record<string, unknown>[] = [];
const log = createLogger(
  'command-api',
  'debug',
  new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  }),
);

let n = 0;
function record(state: CommandRecord['state'], over: Partial<CommandRecord> = {}): CommandRecord {
  const now = Date.now();
  n++;
  return { commandId: `cmd-${n}`, deviceId: 'pump-1', command: 'reboot', issuedAt: now, expiresAt: now + 60_000, state, attempts: 0, updatedAt: now, ...over };
}
const settle = () => new Promise((r) => setImmediate(r));
const eventuallyTrue = async (check: () => boolean, ms = 5_000) => {
  for (const end = Date.now() + ms; !check(); await new Promise((r) => setTimeout(r, 20))) if (Date.now() > end) assert.fail('timed out');
};

describe('the command journal', () => {
  it('starts each change on a line of its own after a torn last line, so no later change is lost', async () => {
    const path = join(tmp, 'torn.jsonl');
    const s1 = new CommandStore(path, log);
    const a = record('queued');
    s1.add([a]);
    // A crash in the middle of the next write: half a line, no newline.
    const half = JSON.stringify({ ...a, state: 'sent' });
    appendFileSync(path, half.slice(0, half.length / 2));
    const s2 = new CommandStore(path, log);
    assert.equal(s2.get(a.commandId)?.state, 'queued', 'the torn change was never acknowledged; the one before stands');
    const skipped = lines.find((l) => l.path === path && l.skipped === 1);
    assert.equal(skipped?.code, 'API_STATE_LINE_SKIPPED', 'the skipped line is logged with its code');
    const b = record('queued');
    s2.add([b]);
    s2.put({ ...a, state: 'completed' });
    await settle();
    const s3 = new CommandStore(path, log);
    assert.equal(s3.get(b.commandId)?.state, 'queued');
    assert.equal(s3.get(a.commandId)?.state, 'completed');
  });

  it("takes a request's commands all or none after a kill in the middle of their write: a retry with its Idempotency-Key makes them all", () => {
    // A kill (SIGKILL, OOM) in the middle of the one write of a fleet request's lines leaves the
    // first of them whole on disk, and no 202 was answered. Read back, those devices got a command
    // nobody was told of, and the retry with the request's Idempotency-Key was answered with them
    // alone: the other devices never got theirs.
    const request = { by: 'ops', key: 'k-1', sha256: 'a'.repeat(64) };
    for (const cut of ['at a line boundary', 'within a line'] as const) {
      const path = join(tmp, `fleet-killed-${cut.replaceAll(' ', '-')}.jsonl`);
      const before = record('queued');
      new CommandStore(path, log).add([before]);
      const start = statSync(path).size;
      const fleet = Array.from({ length: 3 }, (_, i) => record('queued', { deviceId: `pump-${i}`, params: { pct: 30 }, request }));
      new CommandStore(path, log).add(fleet);
      const text = readFileSync(path);
      const firstTwo = text.indexOf(0x0a, text.indexOf(0x0a, start) + 1) + 1;
      writeFileSync(path, text.subarray(0, cut === 'at a line boundary' ? firstTwo : firstTwo - 10));
      const s = new CommandStore(path, log);
      assert.equal(s.get(before.commandId)?.state, 'queued', `${cut}: the command before stands`);
      for (const r of fleet) assert.equal(s.get(r.commandId), undefined, `${cut}: none of the request's commands is taken`);
      assert.deepEqual(s.byRequest('ops', 'k-1'), [], `${cut}: the retry makes the request's commands anew`);
      // What is appended after the restart is no part of the request cut off.
      const later = record('queued', { deviceId: 'pump-9' });
      s.add([later]);
      const again = new CommandStore(path, log);
      assert.equal(again.get(later.commandId)?.state, 'queued');
      for (const r of fleet) assert.equal(again.get(r.commandId), undefined, `${cut}: still none after the next start`);
      // A request's commands written whole are all taken, and keep nothing of how they were written.
      const whole = Array.from({ length: 3 }, (_, i) => record('queued', { deviceId: `pump-${i}`, request: { ...request, key: 'k-2' } }));
      again.add(whole);
      assert.equal(new CommandStore(path, log).byRequest('ops', 'k-2').length, 3);
      assert.deepEqual(Object.keys(again.get(whole[0]!.commandId)!).sort(), Object.keys(whole[0]!).sort());
    }
  });

  it('removes at its start the file aside a compaction killed midway left, and keeps the journal it was to replace', () => {
    // A compaction writes the journal aside (COMMAND_STATE_PATH.tmp-PID), up to hundreds of MiB,
    // then renames it over the journal; a kill before the rename left it there for good, another
    // at each kill (another process id each start), until the disk was full.
    const dir = join(tmp, 'compaction-killed');
    mkdirSync(dir, { recursive: true });
    const path = join(dir, 'commands.jsonl');
    const a = record('queued');
    new CommandStore(path, log).add([a]);
    const aside = `${path}.tmp-4194301`;
    writeFileSync(aside, JSON.stringify(record('queued')).slice(0, 40)); // cut off by the kill
    const other = join(dir, 'commands.jsonl.bak');
    writeFileSync(other, 'an operator\'s copy\n');
    const s = new CommandStore(path, log);
    assert.equal(s.get(a.commandId)?.state, 'queued', 'the journal stands');
    assert.equal(existsSync(aside), false, 'the file aside is gone');
    assert.equal(existsSync(other), true, 'nothing else is touched');
  });

  it('takes new commands all or none when the disk refuses part of them, and keeps none of them', async () => {
    const path = join(tmp, 'full.jsonl');
    const s = new CommandStore(path, log);
    s.add([record('queued')]);
    const size = statSync(path).size;
    const many = Array.from({ length: 200 }, () => record('queued'));
    await withFileSizeLimit(size + 4096, async () => {
      assert.throws(() => s.add(many), (e) => isFieldStreamError(e) && e.code === 'API_STATE_WRITE_FAILED');
    });
    assert.equal(statSync(path).size, size, 'the lines the disk took are cut off again');
    assert.equal(s.live, 1);
    for (const r of many) assert.equal(s.get(r.commandId), undefined);
    assert.equal(new CommandStore(path, log).live, 1, 'none of them comes back at a restart');
    assert.ok(lines.some((l) => l.code === 'API_STATE_WRITE_FAILED'));
  });

  it('never forgets a command still to be answered; the least recently changed finished ones go first', async () => {
    const path = join(tmp, 'cap.jsonl');
    const s = new CommandStore(path, log);
    const waiting = record('sent');
    s.add([waiting]);
    const finished: CommandRecord[] = [];
    for (let i = 0; i < LIMITS.commandStoreMaxRecords; i++) {
      const r = record('completed');
      finished.push(r);
      s.put(r);
    }
    await settle();
    assert.equal(s.get(waiting.commandId)?.state, 'sent');
    assert.equal(s.get(finished[0]!.commandId), undefined, 'the oldest finished one made room');
    assert.ok(s.get(finished.at(-1)!.commandId));
    // The journal was compacted as it grew past twice the commands it holds, and replays the same.
    const again = new CommandStore(path, log);
    assert.equal(again.get(waiting.commandId)?.state, 'sent');
    assert.equal(again.live, 1);
    assert.ok(readFileSync(path, 'utf8').split('\n').length <= 2 * LIMITS.commandStoreMaxRecords + LIMITS.commandJournalSlackLines + 1);
  });

  it('keeps a noted change (a resend) in memory until the command’s next line, and journals any change of state', async () => {
    const path = join(tmp, 'noted.jsonl');
    const s = new CommandStore(path, log);
    const a = record('sent', { params: { big: 'p'.repeat(500) }, attempts: 1, sentAt: 1 });
    s.add([a]);
    const size = statSync(path).size;
    const live = s.liveBytes;
    for (let i = 2; i <= 1000; i++) s.note({ ...a, attempts: i, sentAt: i });
    await settle();
    assert.equal(statSync(path).size, size, 'a resend is journaled');
    assert.equal(s.get(a.commandId)?.attempts, 1000);
    assert.deepEqual(s.get(a.commandId)?.params, a.params);
    assert.ok(Math.abs(s.liveBytes - live) < 10, 'its bytes are counted once');
    assert.equal(new CommandStore(path, log).get(a.commandId)?.attempts, 1, 'what a crash now leaves: the command as last journaled');
    // A change of state is never left to memory alone; the next line takes the noted count with it.
    s.note({ ...s.get(a.commandId)!, state: 'accepted' });
    await settle();
    const back = new CommandStore(path, log).get(a.commandId);
    assert.equal(back?.state, 'accepted');
    assert.equal(back?.attempts, 1000);
    assert.deepEqual(back?.params, a.params);
  });
});

describe('a full command store', () => {
  it('takes new commands as fast with tens of thousands waiting as with none: finished ones are forgotten without walking the waiting ones', () => {
    // Once LIMITS.commandStoreMaxRecords were kept, each new command forgot the least recently
    // changed finished one, found by walking every command from the oldest: past all those still
    // waiting, which no change moves up. With 44,000 waiting, a fleet command of 1,000 devices held
    // the event loop (every request, every device's answer) about half a second, and a start
    // replaying the journal many times that.
    const path = join(tmp, 'full-store.jsonl');
    const s = new CommandStore(path, log);
    const now = Date.now();
    let i = 0;
    const batch = (state: CommandRecord['state']) =>
      Array.from({ length: 1000 }, () => ({ commandId: `full-${i++}`, deviceId: `pump-${i % 500}`, command: 'reboot', issuedAt: now, expiresAt: now + 3_600_000, state, attempts: 0, updatedAt: now }) satisfies CommandRecord);
    const waiting = 44_000;
    for (let b = 0; b < waiting / 1000; b++) s.add(batch('queued'));
    for (let b = 0; b < (LIMITS.commandStoreMaxRecords - waiting) / 1000; b++) {
      const records = batch('queued');
      s.add(records);
      for (const r of records) s.put({ ...r, state: 'completed' });
    }
    s.flush();
    assert.equal(s.live, waiting);
    const started = performance.now();
    for (let b = 0; b < 5; b++) s.add(batch('queued'));
    const ms = performance.now() - started;
    assert.equal(s.live, waiting + 5000);
    assert.ok([...s.all()].length <= LIMITS.commandStoreMaxRecords);
    assert.ok(ms < 500, `5,000 new commands took ${Math.round(ms)} ms with ${waiting} waiting`);
    rmSync(path, { force: true });
  });
});

describe('the command journal in bytes', () => {
  const big = 'A'.repeat(60_000);

  it('reads back a journal larger than the longest string (512 MiB), line by line, and compacts it', () => {
    // Journals written before changes left their params out: every change repeated them whole.
    const path = join(tmp, 'huge.jsonl');
    const a = record('queued', { params: { blob: big } });
    const b = record('queued', { params: { blob: big } });
    const fd = openSync(path, 'w');
    try {
      const pair = Buffer.from(JSON.stringify({ ...a, state: 'sent' }) + '\n' + JSON.stringify({ ...b, state: 'sent' }) + '\n');
      const batch = Buffer.concat(Array.from({ length: 100 }, () => pair));
      for (let written = 0; written <= 540 * 1024 * 1024; written += batch.length) writeSync(fd, batch);
      writeSync(fd, JSON.stringify({ ...a, state: 'completed', response: { status: 'completed', at: Date.now() } }) + '\n');
    } finally {
      closeSync(fd);
    }
    assert.ok(statSync(path).size > 512 * 1024 * 1024);
    const s = new CommandStore(path, log);
    assert.equal(s.get(a.commandId)?.state, 'completed');
    assert.deepEqual(s.get(b.commandId)?.params, { blob: big });
    assert.equal(s.live, 1);
    assert.ok(statSync(path).size < 1024 * 1024, 'compacted to one line per command');
    assert.equal(new CommandStore(path, log).get(b.commandId)?.state, 'sent');
    rmSync(path);
  });

  it("writes a change without the command's params, and reads the command back whole, old whole lines too", async () => {
    const path = join(tmp, 'changes.jsonl');
    const s = new CommandStore(path, log);
    const a = record('queued', { params: { blob: big } });
    s.add([a]);
    const after = statSync(path).size;
    s.put({ ...a, state: 'sent', attempts: 1, sentAt: Date.now() });
    s.put({ ...a, state: 'completed', attempts: 1, response: { status: 'completed', result: { ok: true }, at: Date.now() } });
    await settle();
    assert.ok(statSync(path).size - after < 1024, `two changes took ${statSync(path).size - after} bytes`);
    assert.deepEqual(s.get(a.commandId)?.params, { blob: big });
    // A change of a command whose whole line is not in the journal is not taken without its params.
    const orphan = record('queued', { params: { blob: 'x' } });
    appendFileSync(path, JSON.stringify({ ...orphan, params: undefined, state: 'sent', paramsAsBefore: true }) + '\n');
    const again = new CommandStore(path, log);
    assert.equal(again.get(a.commandId)?.state, 'completed');
    assert.deepEqual(again.get(a.commandId)?.params, { blob: big });
    assert.deepEqual(again.get(a.commandId)?.response?.result, { ok: true });
    assert.equal(again.get(orphan.commandId), undefined);
  });

  it(`refuses commands past ${LIMITS.commandMaxLiveBytes / 2 ** 20} MiB waiting (API_COMMANDS_FULL), forgets finished ones past ${LIMITS.commandStoreMaxBytes / 2 ** 20} MiB, and the journal stays within twice that`, async () => {
    const path = join(tmp, 'bytes.jsonl');
    const s = new CommandStore(path, log);
    const client = mqtt.connect('mqtt://127.0.0.1:1', { reconnectPeriod: 0, connectTimeout: 100 });
    client.on('error', () => undefined);
    const d = new CommandDispatcher(client, s, log, { keys: new DeviceKeyRegistry(join(tmp, 'keys')), allowUnsigned: true });
    const fleet = Array.from({ length: 1000 }, (_, i) => `pump-${i}`);
    try {
      // 1,000 devices with 60 KB of params: about 60 MB a request.
      const first = d.issue(fleet, 'configure', { blob: big }, 60);
      d.issue(fleet, 'configure', { blob: big }, 60);
      assert.throws(
        () => d.issue(fleet, 'configure', { blob: big }, 60),
        (e) => isFieldStreamError(e) && e.code === 'API_COMMANDS_FULL' && e.httpStatus === 503 && typeof e.details?.retryAfterS === 'number',
      );
      assert.ok(s.liveBytes <= LIMITS.commandMaxLiveBytes);
      assert.equal(s.live, 2000, 'nothing of the refused request kept');
      // Answered, they leave room; finished ones past the byte cap are forgotten, the oldest first.
      for (let round = 0; round < 4; round++) {
        for (const r of [...s.all()]) if (r.state === 'queued') s.put({ ...r, state: 'completed', response: { status: 'completed', at: Date.now() } });
        await settle();
        d.issue(fleet, 'configure', { blob: big }, 60);
      }
      assert.equal(s.get(first[0]!.commandId), undefined, 'the oldest finished command was forgotten');
      assert.equal(s.live, 1000);
      let bytes = 0;
      for (const r of s.all()) bytes += Buffer.byteLength(JSON.stringify(r)) + 1;
      assert.ok(bytes <= LIMITS.commandStoreMaxBytes, `${bytes} bytes kept`);
      assert.ok(statSync(path).size <= 2 * LIMITS.commandStoreMaxBytes + LIMITS.commandJournalSlackBytes, `journal of ${statSync(path).size} bytes`);
      const again = new CommandStore(path, log);
      assert.equal(again.live, 1000);
      assert.equal(again.get(first[0]!.commandId), undefined);
    } finally {
      d.close();
      client.end(true);
      rmSync(path, { force: true });
    }
  });
});

describe('the dispatcher', () => {
  // A real MQTT client that never connects: commands are kept and would be sent on connect.
  const client = mqtt.connect('mqtt://127.0.0.1:1', { reconnectPeriod: 0, connectTimeout: 100 });
  client.on('error', () => undefined);
  after(() => client.end(true));
  const keys = join(tmp, 'keys');

  it('keeps a command due to expire waiting while the database of stored responses does not answer, up to the grace past its expiry', async () => {
    // PostgreSQL down (nothing listens): its response may be there, so the command is not expired
    // on the command API's word alone; one past the grace is.
    const s = new CommandStore(join(tmp, 'ledger-down.jsonl'), log);
    const due = record('sent', { deviceId: 'pump-1', expiresAt: Date.now() - 1 });
    const long = record('sent', { deviceId: 'pump-1', expiresAt: Date.now() - TIMINGS.commandReconcileGraceMs - 1 });
    s.add([due, long]);
    const down = new PostgresResponses({ host: '127.0.0.1', port: 1, database: 'x', user: 'x', password: 'x', ssl: false, schema: 'fieldstream', poolSize: 1, timeoutMs: 2_000, description: 'PostgreSQL 127.0.0.1:1' });
    const lines: string[] = [];
    const logged = createLogger('test', 'warn', new Writable({ write: (chunk, _e, cb) => (lines.push(String(chunk)), cb()) }));
    const d = new CommandDispatcher(client, s, logged, { keys: new DeviceKeyRegistry(join(tmp, 'keys')), allowUnsigned: true }, down);
    try {
      (d as unknown as { expire(): void }).expire();
      await d.settled();
      await eventuallyTrue(() => s.get(long.commandId)?.state === 'expired');
      assert.equal(s.get(due.commandId)?.state, 'sent', 'waits for the database');
      assert.ok(lines.some((l) => l.includes('"code":"API_RESPONSES_UNREADABLE"')), lines.join(''));
    } finally {
      d.close();
      await down.close();
    }
    // What the column holds, back as the device gave it as far as it can tell.
    assert.deepEqual([storedResult(''), storedResult('{"a":1}'), storedResult('[1]'), storedResult('42'), storedResult('{not json')], [undefined, { a: 1 }, [1], '42', '{not json']);
    // What a row with result_type holds (points.ts resultFields), back exactly as the device gave it.
    for (const result of [42, '42', true, 'true', null, 'null', '', '{"a":1}', { a: 1 }, [1, '2'], undefined]) {
      const f = resultFields(result);
      assert.deepEqual(storedResult(f.result, f.result_type), result, JSON.stringify(result));
    }
  });

  it('takes a stored response only with a result a response may carry: what it records is read back at the next start, and the command is not lost', async () => {
    // A row written before `result_type` holds a device's string result as its text; one that looks
    // like JSON is read back as the value it spells (storedResult), which need not be a result at all
    // (nested deeper than LIMITS.jsonMaxDepth, a "__proto__" key). Recorded unchecked, the journal
    // line holding it failed the journal's own schema at the next start: the answered command was
    // skipped, gone with its Idempotency-Key, and a retry of the request made it, and ran it, again.
    const path = join(tmp, 'ledger-results.jsonl');
    const s = new CommandStore(path, log);
    const deep = `${'['.repeat(LIMITS.jsonMaxDepth + 1)}${']'.repeat(LIMITS.jsonMaxDepth + 1)}`;
    const deepOne = record('sent', { deviceId: 'pump-1' });
    const protoOne = record('sent', { deviceId: 'pump-1' });
    const forged = record('sent', { deviceId: 'pump-1' });
    s.add([deepOne, protoOne, forged]);
    const results: Record<string, unknown> = {
      [deepOne.commandId]: storedResult(deep, null),
      [protoOne.commandId]: storedResult('{"__proto__":{"admin":true}}', null),
      // A value no response carries, whatever the row says of its type.
      [forged.commandId]: JSON.parse(deep) as unknown,
    };
    const ledger: ResponseLedger = {
      description: 'rows of old',
      find: (wanted) => Promise.resolve(wanted.map((w) => ({ commandId: w.commandId, deviceId: w.deviceId, status: 'completed' as const, result: results[w.commandId] }))),
      close: () => Promise.resolve(),
    };
    const d = new CommandDispatcher(client, s, log, { keys: new DeviceKeyRegistry(join(tmp, 'keys')), allowUnsigned: true }, ledger);
    try {
      await d.settled();
    } finally {
      d.close();
    }
    const again = new CommandStore(path, log);
    for (const r of [deepOne, protoOne, forged]) assert.deepEqual(again.get(r.commandId), s.get(r.commandId), `${r.commandId} read back as recorded`);
    // A legacy row's text is the device's string result when the value it spells is none.
    assert.equal(s.get(deepOne.commandId)?.response?.result, deep);
    assert.equal(s.get(protoOne.commandId)?.response?.result, '{"__proto__":{"admin":true}}');
    assert.equal(s.get(forged.commandId)?.state, 'sent', 'a result no response carries is not taken');
  });

  it(`holds the stored responses of at most ${LIMITS.commandReconcileBatch} commands at once, however many wait, and records each batch's before the next is read`, async () => {
    // Each result may be 64 K characters: the responses of every waiting command (up to
    // LIMITS.commandMaxLive) read before any was recorded made gigabytes, at each start.
    const s = new CommandStore(join(tmp, 'ledger-batches.jsonl'), log);
    const waiting = Array.from({ length: 2 * LIMITS.commandReconcileBatch + 500 }, () => record('sent', { deviceId: 'pump-1' }));
    for (let i = 0; i < waiting.length; i += 1000) s.add(waiting.slice(i, i + 1000));
    const asked: number[] = [];
    const answeredBefore: number[] = [];
    const ledger: ResponseLedger = {
      description: 'a large fleet answered',
      find: (wanted) => {
        asked.push(wanted.length);
        answeredBefore.push(waiting.filter((r) => s.get(r.commandId)?.state === 'completed').length);
        return Promise.resolve(wanted.map((w) => ({ commandId: w.commandId, deviceId: w.deviceId, status: 'completed' as const, result: 'r'.repeat(1000) })));
      },
      close: () => Promise.resolve(),
    };
    const d = new CommandDispatcher(client, s, log, { keys: new DeviceKeyRegistry(join(tmp, 'keys')), allowUnsigned: true }, ledger);
    try {
      await d.settled();
    } finally {
      d.close();
    }
    assert.equal(waiting.filter((r) => s.get(r.commandId)?.state === 'completed').length, waiting.length);
    assert.ok(Math.max(...asked) <= LIMITS.commandReconcileBatch, `asked for ${asked.join(', ')} commands at once`);
    assert.deepEqual(answeredBefore, asked.map((_, i) => asked.slice(0, i).reduce((a, b) => a + b, 0)), 'each batch recorded before the next is read');
  });

  it('expires an accepted command its device never finished, keeping the acceptance', () => {
    const path = join(tmp, 'accepted.jsonl');
    const s = new CommandStore(path, log);
    const accepted = record('accepted', { expiresAt: Date.now() - 1, response: { status: 'accepted', at: Date.now() - 5_000 } });
    s.add([accepted]);
    const d = new CommandDispatcher(client, s, log, { keys: new DeviceKeyRegistry(keys), allowUnsigned: true });
    try {
      (d as unknown as { expire(): void }).expire();
      const now = s.get(accepted.commandId);
      assert.equal(now?.state, 'expired');
      assert.equal(now?.response?.status, 'accepted');
      assert.equal(s.live, 0);
    } finally {
      d.close();
    }
  });

  it("records a device's answer that comes after the TTL expired its command: it ran, and `expired` would say it did not", () => {
    // The device runs a command until its signed expiry plus its clock skew (command-guard.ts), and
    // a handler may take minutes: its answer can reach the API after the sweep marked it expired.
    // Left `expired`, the operator is told it never ran, and sends it again: it runs twice.
    const s = new CommandStore(join(tmp, 'late.jsonl'), log);
    const late = record('sent', { deviceId: 'pump-9', expiresAt: Date.now() - 1 });
    const lateAccepted = record('sent', { deviceId: 'pump-9', expiresAt: Date.now() - 1 });
    s.add([late, lateAccepted]);
    const broker = mqtt.connect('mqtt://127.0.0.1:1', { reconnectPeriod: 0, connectTimeout: 100 });
    broker.on('error', () => undefined);
    const d = new CommandDispatcher(broker, s, log, { keys: new DeviceKeyRegistry(keys), allowUnsigned: true });
    const answer = (commandId: string, status: string) => {
      const env = { v: 1, deviceId: 'pump-9', dataType: 'response', gatewayId: 'gw-1', receivedAt: Date.now(), messages: [{ messageId: `r-${commandId}`, payload: { commandId, status, result: 'done' } }] };
      broker.emit('message', uplinkTopic('pump-9', 'response'), Buffer.from(JSON.stringify(env)), {} as IPublishPacket);
    };
    try {
      (d as unknown as { expire(): void }).expire();
      assert.equal(s.get(late.commandId)?.state, 'expired');
      answer(late.commandId, 'completed');
      assert.equal(s.get(late.commandId)?.state, 'completed', 'the device ran it: its answer stands');
      assert.equal(s.get(late.commandId)?.response?.status, 'completed');
      // A late acceptance is recorded, but the command stays final (expired): nothing more is awaited.
      answer(lateAccepted.commandId, 'accepted');
      assert.equal(s.get(lateAccepted.commandId)?.state, 'expired');
      assert.equal(s.get(lateAccepted.commandId)?.response?.status, 'accepted');
      assert.equal(s.live, 0);
      // A final answer of the device's own never changes.
      answer(late.commandId, 'failed');
      assert.equal(s.get(late.commandId)?.state, 'completed');
    } finally {
      d.close();
      broker.end(true);
    }
  });

  it('sends a revoked device nothing, its key file still there or not, and records none of its answers (the revoked list, as the distributor reads it)', () => {
    // The registry and the revoked list are two files (two Kubernetes objects); the distributor and
    // the console refuse a revoked device "even if a key of theirs is still around". The command API
    // read no revoked list: a revoked device whose key file was still there (or came back with a
    // restored backup) got signed commands, and with COMMAND_ALLOW_UNSIGNED one without it unsigned
    // commands, and its unsigned answers, anyone's in the DMZ, were recorded.
    const dir = join(tmp, 'revocation');
    const keyDir = join(dir, 'device-keys');
    mkdirSync(keyDir, { recursive: true });
    writeFileSync(join(keyDir, 'pump-kept.key'), randomBytes(32).toString('hex'));
    const revokedFile = join(dir, 'revoked-devices.txt');
    writeFileSync(revokedFile, 'pump-kept\npump-gone\n');
    const s = new CommandStore(join(dir, 'commands.jsonl'), log);
    for (const allowUnsigned of [false, true]) {
      const d = new CommandDispatcher(client, s, log, { keys: new DeviceKeyRegistry(keyDir, revokedFile), allowUnsigned });
      try {
        for (const target of ['pump-kept', 'pump-gone']) {
          assert.throws(
            () => d.issue([target, 'pump-1'], 'reboot', undefined, 60),
            (e) => isFieldStreamError(e) && e.code === 'API_DEVICE_REVOKED' && e.httpStatus === 409 && JSON.stringify(e.details?.deviceIds) === JSON.stringify([target]),
            `${target}, COMMAND_ALLOW_UNSIGNED=${allowUnsigned}`,
          );
        }
        assert.equal(s.live, 0, 'nothing kept: all or nothing');
      } finally {
        d.close();
      }
    }
    // A command of before the revocation: not sent again, and an unsigned answer is not believed.
    const before = record('sent', { deviceId: 'pump-gone' });
    s.put(before);
    const broker = mqtt.connect('mqtt://127.0.0.1:1', { reconnectPeriod: 0, connectTimeout: 100 });
    broker.on('error', () => undefined);
    const published: string[] = [];
    Object.defineProperty(broker, 'connected', { value: true });
    (broker as unknown as { publish: (topic: string) => void }).publish = (topic) => void published.push(topic);
    const d = new CommandDispatcher(broker, s, log, { keys: new DeviceKeyRegistry(keyDir, revokedFile), allowUnsigned: true });
    try {
      broker.emit('message', statusTopic('pump-gone'), Buffer.from(JSON.stringify({ v: 1, state: 'online', gatewayId: 'gw-1', at: Date.now() })), {} as IPublishPacket);
      assert.deepEqual(published, []);
      const env = { v: 1, deviceId: 'pump-gone', dataType: 'response', gatewayId: 'gw-1', receivedAt: Date.now(), messages: [{ messageId: 'r-gone', payload: { commandId: before.commandId, status: 'completed' } }] };
      broker.emit('message', uplinkTopic('pump-gone', 'response'), Buffer.from(JSON.stringify(env)), {} as IPublishPacket);
      assert.equal(s.get(before.commandId)?.state, 'sent');
      assert.equal(d.refusedResponses.SECURITY_REVOKED, 1);
    } finally {
      d.close();
      broker.end(true);
    }
  });

  it(`takes no more than ${LIMITS.commandMaxLive.toLocaleString('en')} commands waiting, refused with API_COMMANDS_FULL and nothing kept`, async () => {
    const path = join(tmp, 'live.jsonl');
    const s = new CommandStore(path, log);
    for (let i = 0; i < LIMITS.commandMaxLive - 1; i++) s.put(record('sent'));
    await settle();
    const d = new CommandDispatcher(client, s, log, { keys: new DeviceKeyRegistry(keys), allowUnsigned: true });
    try {
      assert.throws(
        () => d.issue(['pump-1', 'pump-2'], 'reboot', undefined, 60),
        (e) => isFieldStreamError(e) && e.code === 'API_COMMANDS_FULL' && e.httpStatus === 503 && typeof e.details?.retryAfterS === 'number',
      );
      assert.equal(s.live, LIMITS.commandMaxLive - 1);
      assert.equal(d.issue(['pump-1'], 'reboot', undefined, 60).length, 1, 'the last place is taken');
      assert.equal(s.room(), 0);
    } finally {
      d.close();
    }
  });
  it('lists the commands a device still waits for, and only those, as their states change', () => {
    const s = new CommandStore(join(tmp, 'waiting.jsonl'), log);
    const a1 = record('sent', { deviceId: 'valve-a' });
    const a2 = record('queued', { deviceId: 'valve-a' });
    const b = record('sent', { deviceId: 'valve-b' });
    s.add([a1, a2, b, record('completed', { deviceId: 'valve-a' })]);
    const ids = (deviceId: string) => [...s.waitingFor(deviceId)].map((r) => r.commandId).sort();
    assert.deepEqual(ids('valve-a'), [a1.commandId, a2.commandId].sort());
    s.put({ ...a1, state: 'completed' });
    assert.deepEqual(ids('valve-a'), [a2.commandId]);
    assert.deepEqual(ids('valve-b'), [b.commandId]);
    assert.deepEqual(ids('valve-c'), []);
    // Read back from the journal: the same.
    s.flush();
    assert.deepEqual([...new CommandStore(join(tmp, 'waiting.jsonl'), log).waitingFor('valve-a')].map((r) => r.commandId), [a2.commandId]);
  });

  /** mqtt.js's own handling of an incoming PUBLISH: 'message', then handleMessage, whose callback sends the PUBACK. */
  const handlePublish = (() => {
    const require = createRequire(import.meta.url);
    const file = join(require.resolve('mqtt').split('/build/')[0] as string, 'build/lib/handlers/publish.js');
    return (require(file) as { default: (client: MqttClient, packet: IPublishPacket) => void }).default;
  })();

  it("acknowledges a device's answer to the broker only once the journal holds it, and holds the PUBACK while the disk refuses it", async () => {
    const path = join(tmp, 'puback.jsonl');
    const s = new CommandStore(path, log);
    const broker = mqtt.connect('mqtt://127.0.0.1:1', { reconnectPeriod: 0, connectTimeout: 100 });
    broker.on('error', () => undefined);
    const d = new CommandDispatcher(broker, s, log, { keys: new DeviceKeyRegistry(keys), allowUnsigned: true });
    const journalAtPuback: string[] = [];
    (broker as unknown as { _sendPacket: (p: { cmd: string }, cb?: () => void) => void })._sendPacket = (p, cb) => {
      if (p.cmd === 'puback') journalAtPuback.push(readFileSync(path, 'utf8'));
      cb?.();
    };
    const answer = (commandId: string, messageId: number) => {
      const env = { v: 1, deviceId: 'pump-1', dataType: 'response', gatewayId: 'gw-1', receivedAt: Date.now(), messages: [{ messageId: `r-${messageId}`, payload: { commandId, status: 'completed', result: 'done' } }] };
      handlePublish(broker, { cmd: 'publish', topic: uplinkTopic('pump-1', 'response'), payload: Buffer.from(JSON.stringify(env)), qos: 1, messageId, dup: false, retain: false } as IPublishPacket);
    };
    const stateOnDisk = (journal: string, commandId: string) =>
      journal.trim().split('\n').map((l) => JSON.parse(l) as { commandId: string; state: string }).filter((l) => l.commandId === commandId).at(-1)?.state;
    try {
      const [first, second] = d.issue(['pump-1', 'pump-1'], 'reboot', undefined, 60) as [CommandRecord, CommandRecord];
      answer(first.commandId, 7);
      assert.equal(journalAtPuback.length, 1, 'acknowledged at once');
      assert.equal(stateOnDisk(journalAtPuback[0] as string, first.commandId), 'completed', 'a kill after the PUBACK finds the answer on disk');

      // The journal cannot be written (its path taken by a folder): the answer is not acknowledged...
      rmSync(path);
      mkdirSync(path);
      answer(second.commandId, 8);
      await new Promise((r) => setTimeout(r, 3 * TIMINGS.commandJournalRetryInitialMs));
      assert.equal(journalAtPuback.length, 1, 'no PUBACK while the journal refuses the answer');
      assert.ok(lines.some((l) => l.code === 'API_STATE_WRITE_FAILED' && String(l.msg).includes('not acknowledged to the broker')));
      // ...until it can be.
      rmSync(path, { recursive: true });
      const until = Date.now() + 10_000;
      while (journalAtPuback.length < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      assert.equal(journalAtPuback.length, 2, 'acknowledged once the journal took it');
      assert.equal(stateOnDisk(journalAtPuback[1] as string, second.commandId), 'completed');
    } finally {
      d.close();
      broker.end(true);
    }
  });

  it("sends a device's waiting commands again when its presence turns online, and no other device's", () => {
    const s = new CommandStore(join(tmp, 'presence.jsonl'), log);
    const mine = record('sent', { deviceId: 'meter-1' });
    s.add([mine, record('sent', { deviceId: 'meter-2' }), record('completed', { deviceId: 'meter-1' })]);
    const broker = mqtt.connect('mqtt://127.0.0.1:1', { reconnectPeriod: 0, connectTimeout: 100 });
    broker.on('error', () => undefined);
    const d = new CommandDispatcher(broker, s, log, { keys: new DeviceKeyRegistry(keys), allowUnsigned: true });
    const published: string[] = [];
    Object.defineProperty(broker, 'connected', { value: true });
    (broker as unknown as { publish: (topic: string, payload: string) => void }).publish = (_topic, payload) => void published.push((JSON.parse(payload) as { commandId: string }).commandId);
    try {
      broker.emit('message', statusTopic('meter-1'), Buffer.from(JSON.stringify({ v: 1, state: 'online', gatewayId: 'gw-1', at: Date.now() })), {} as IPublishPacket);
      assert.deepEqual(published, [mine.commandId]);
    } finally {
      d.close();
      broker.end(true);
    }
  });

  it('logs a flood of forged responses and invalid payloads from the DMZ a few lines a minute, and counts every refusal', () => {
    // Each forged response (or invalid payload) on the bridged topics was a warn line of its own: a
    // compromised DMZ publishing tens of thousands a second filled the command API's log (its disk).
    const s = new CommandStore(join(tmp, 'response-flood.jsonl'), log);
    const broker = mqtt.connect('mqtt://127.0.0.1:1', { reconnectPeriod: 0, connectTimeout: 100 });
    broker.on('error', () => undefined);
    mkdirSync(join(tmp, 'flood-keys'), { recursive: true });
    writeFileSync(join(tmp, 'flood-keys', 'pump-5.key'), `${randomBytes(32).toString('hex')}\n`);
    const d = new CommandDispatcher(broker, s, log, { keys: new DeviceKeyRegistry(join(tmp, 'flood-keys')), allowUnsigned: false });
    const before = lines.length;
    try {
      for (let i = 0; i < 5000; i++) {
        const env = { v: 1, deviceId: 'pump-5', dataType: 'response', gatewayId: 'gw-1', receivedAt: Date.now(), messages: [{ messageId: `f${i}`, payload: { commandId: `c${i}`, status: 'completed' } }] };
        broker.emit('message', uplinkTopic('pump-5', 'response'), Buffer.from(JSON.stringify(env)), {} as IPublishPacket);
        broker.emit('message', uplinkTopic(`ghost-${i}`, 'response'), Buffer.from(JSON.stringify({ ...env, deviceId: `ghost-${i}` })), {} as IPublishPacket);
        broker.emit('message', statusTopic('pump-5'), Buffer.from('not json'), {} as IPublishPacket);
      }
      assert.equal(d.refusedResponses.SECURITY_UNSIGNED, 10_000, 'every forged response counted');
      const logged = lines.length - before;
      assert.ok(logged <= 20, `${logged} log lines for 15,000 hostile messages`);
    } finally {
      d.close();
      broker.end(true);
    }
  });

  it(`refuses a response envelope of millions of values unparsed, and a result of more than ${LIMITS.commandResultMaxValues} values, with a coded error, and records the next answer`, (t) => {
    // A response's result was bounded by its size alone: 16 MiB of `{},` on a response's topic was
    // 5.6 million objects (360 MB of heap) built by JSON.parse in a command API of 512 MiB.
    const s = new CommandStore(join(tmp, 'response-values.jsonl'), log);
    const sent = record('sent', { deviceId: 'pump-8' });
    s.add([sent]);
    const broker = mqtt.connect('mqtt://127.0.0.1:1', { reconnectPeriod: 0, connectTimeout: 100 });
    broker.on('error', () => undefined);
    const d = new CommandDispatcher(broker, s, log, { keys: new DeviceKeyRegistry(keys), allowUnsigned: true });
    const parse = t.mock.method(JSON, 'parse');
    const answer = (result: unknown) => {
      const env = { v: 1, deviceId: 'pump-8', dataType: 'response', gatewayId: 'gw-1', receivedAt: Date.now(), messages: [{ messageId: 'r-8', payload: { commandId: sent.commandId, status: 'completed', result } }] };
      return Buffer.from(JSON.stringify(env));
    };
    const before = lines.length;
    try {
      const hostile = Buffer.from(`{"a":[${'{},'.repeat(5 * 1024 * 1024)}{}]}`);
      broker.emit('message', uplinkTopic('pump-8', 'response'), hostile, {} as IPublishPacket);
      assert.equal(parse.mock.calls.filter((c) => String(c.arguments[0]).length > 1024 * 1024).length, 0, 'the hostile payload was not parsed');
      broker.emit('message', uplinkTopic('pump-8', 'response'), answer(Array.from({ length: LIMITS.commandResultMaxValues + 1 }, () => 0)), {} as IPublishPacket);
      assert.equal(s.get(sent.commandId)?.state, 'sent', 'an answer no device sends is not recorded');
      const refused = lines.slice(before).filter((l) => l.code === 'CONTRACT_INVALID_ENVELOPE');
      assert.equal(refused.length, 2, JSON.stringify(lines.slice(before)));
      broker.emit('message', uplinkTopic('pump-8', 'response'), answer(Array.from({ length: LIMITS.commandResultMaxValues }, () => 0)), {} as IPublishPacket);
      assert.equal(s.get(sent.commandId)?.state, 'completed');
    } finally {
      d.close();
      broker.end(true);
    }
  });

  it("records a device's acceptance once: the DMZ replaying it writes, syncs and logs nothing more", () => {
    // An acceptance is no final state, and each copy of a genuine one (the DMZ can replay it without
    // end: its signature stays valid) was recorded again: a journal line with its result (up to
    // 64 KiB), a sync, and an info line each.
    const path = join(tmp, 'accepted-replay.jsonl');
    const s = new CommandStore(path, log);
    const broker = mqtt.connect('mqtt://127.0.0.1:1', { reconnectPeriod: 0, connectTimeout: 100 });
    broker.on('error', () => undefined);
    const deviceKeys = join(tmp, 'accept-keys');
    mkdirSync(deviceKeys, { recursive: true });
    const key = randomBytes(32);
    writeFileSync(join(deviceKeys, 'pump-7.key'), `${key.toString('hex')}\n`);
    const d = new CommandDispatcher(broker, s, log, { keys: new DeviceKeyRegistry(deviceKeys), allowUnsigned: false });
    const sent = record('sent', { deviceId: 'pump-7' });
    s.add([sent]);
    const respond = (status: string, seq: number) => {
      const payload = { commandId: sent.commandId, status, result: 'x'.repeat(60_000) };
      const auth = signMessage(key, { deviceId: 'pump-7', dataType: 'response', epoch: 'e1', seq, ts: Date.now(), payload });
      return Buffer.from(JSON.stringify({ v: 1, deviceId: 'pump-7', dataType: 'response', gatewayId: 'gw-1', receivedAt: Date.now(), messages: [{ messageId: `r${seq}`, auth, payload }] }));
    };
    const journaled = () => readFileSync(path, 'utf8').trim().split('\n').filter((l) => l.includes(sent.commandId)).length;
    try {
      const acceptance = respond('accepted', 1);
      broker.emit('message', uplinkTopic('pump-7', 'response'), acceptance, {} as IPublishPacket);
      s.flush();
      assert.equal(s.get(sent.commandId)?.state, 'accepted');
      const at = s.get(sent.commandId)?.response?.at;
      const lines0 = journaled();
      const before = lines.length;
      for (let i = 0; i < 200; i++) broker.emit('message', uplinkTopic('pump-7', 'response'), acceptance, {} as IPublishPacket);
      s.flush();
      assert.equal(journaled(), lines0, 'a replayed acceptance is journaled again');
      assert.equal(lines.length, before, 'a replayed acceptance is logged again');
      assert.equal(s.get(sent.commandId)?.response?.at, at, 'the first acceptance stands');
      // The device's final answer still ends it.
      broker.emit('message', uplinkTopic('pump-7', 'response'), respond('completed', 2), {} as IPublishPacket);
      assert.equal(s.get(sent.commandId)?.state, 'completed');
    } finally {
      d.close();
      broker.end(true);
    }
  });

  it('resends them once per interval however many presences the DMZ sends, and the one put off when it has passed', async () => {
    const s = new CommandStore(join(tmp, 'presence-flood.jsonl'), log);
    const mine = record('sent', { deviceId: 'meter-9' });
    s.add([mine]);
    const broker = mqtt.connect('mqtt://127.0.0.1:1', { reconnectPeriod: 0, connectTimeout: 100 });
    broker.on('error', () => undefined);
    const d = new CommandDispatcher(broker, s, log, { keys: new DeviceKeyRegistry(keys), allowUnsigned: true });
    const published: string[] = [];
    Object.defineProperty(broker, 'connected', { get: () => true, set: () => undefined }); // the unreachable broker's close sets it: kept
    (broker as unknown as { publish: (topic: string, payload: string) => void }).publish = (_topic, payload) => void published.push((JSON.parse(payload) as { commandId: string }).commandId);
    const online = (deviceId: string) =>
      broker.emit('message', statusTopic(deviceId), Buffer.from(JSON.stringify({ v: 1, state: 'online', gatewayId: 'gw-1', at: Date.now() })), {} as IPublishPacket);
    try {
      for (let i = 0; i < 1000; i++) online('meter-9');
      for (let i = 0; i < 1000; i++) online(`made-up-${i}`); // nothing waits for them: nothing sent
      assert.deepEqual(published, [mine.commandId], 'a flood of presences resends once');
      await new Promise((r) => setTimeout(r, TIMINGS.commandRedeliverMinIntervalMs + 300));
      assert.deepEqual(published, [mine.commandId, mine.commandId], 'the presence put off is served once the interval has passed, once');
    } finally {
      d.close();
      broker.end(true);
    }
  });
});
