import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, beforeEach, describe, it, mock } from 'node:test';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import { readLetters, REPLAYED_FILE, ReplayLedger, summarizeLetters } from '../../internal-network/distributor/dead-letter-files.ts';
import { replayLetters } from '../../internal-network/distributor/dead-letter-replay.ts';
import { admittedEventTags } from '../../internal-network/distributor/event-tags.ts';
import { LocalPointStore } from '../../internal-network/distributor/sinks/local-store.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { gatewayPresenceTopic, statusTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import { LIMITS } from '../../shared/limits.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { createLogger } from '../../shared/logger.ts';
import { tempDir } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';

/**
 * The dead-letter file holds messages whose receipts let their devices delete them: each must be
 * found again whole, however many consumers write at once, and whatever a crash left in the file.
 */
const err = new FieldStreamError('DISTRIBUTOR_FILE_CHECKSUM', 'kept for the test');
const today = () => `${new Date().toISOString().slice(0, 10)}.jsonl`;
const letters = (dir: string) =>
  readFileSync(join(dir, today()), 'utf8')
    .split('\n')
    .filter((l) => l !== '');

describe('dead letters', () => {
  const tmp = tempDir('dead-letters');
  after(() => tmp.cleanup());
  // Letter files are named by the day of the clock: held at noon, so that a midnight (UTC) between
  // a test's writes, or between them and its today(), does not make two files or name another one.
  beforeEach(() => mock.timers.enable({ apis: ['Date'], now: Date.UTC(2026, 0, 15, 12) }));
  afterEach(() => mock.timers.reset());

  it('keeps letters of several MB written at once whole, one per line', async () => {
    const dir = join(tmp.dir, 'concurrent');
    const dead = new DeadLetters(dir);
    // As a file chunk's envelope is: larger than the pieces Node writes a large buffer in.
    const payloads = Array.from({ length: 6 }, (_, i) => Buffer.alloc(2 * 1024 * 1024, 65 + i));
    await Promise.all(payloads.map((p, i) => dead.put(`fieldstream/v1/devices/cam-${i}/up/file`, p, err)));
    const lines = letters(dir);
    assert.equal(lines.length, payloads.length);
    const kept = lines.map((l) => JSON.parse(l) as { topic: string; payloadBase64: string; code: string });
    for (const [i, p] of payloads.entries()) {
      const letter = kept.find((k) => k.topic === `fieldstream/v1/devices/cam-${i}/up/file`);
      assert.ok(letter && Buffer.from(letter.payloadBase64, 'base64').equals(p), `letter ${i} whole`);
      assert.equal(letter.code, 'DISTRIBUTOR_FILE_CHECKSUM');
    }
  });

  it("builds a letter's base64 text only at its turn to be written: letters waiting hold their payload, not 4/3 of it more", async () => {
    const dir = join(tmp.dir, 'encoded-at-turn');
    const dead = new DeadLetters(dir);
    // How many letters the file held when each payload was encoded: all encoded at once (when put),
    // 32 consumers' letters of 16 MiB each held 32 × 21 MiB of text while they waited their turn.
    const linesAtEncoding: number[] = [];
    const payloads = Array.from({ length: 3 }, (_, i) => {
      const p = Buffer.alloc(256 * 1024, 65 + i);
      const toString = p.toString.bind(p);
      p.toString = ((encoding?: BufferEncoding, start?: number, end?: number) => {
        if (encoding === 'base64') linesAtEncoding.push(readdirSync(dir).includes(today()) ? letters(dir).length : 0);
        return toString(encoding, start, end);
      }) as typeof p.toString;
      return p;
    });
    assert.deepEqual(await Promise.all(payloads.map((p, i) => dead.put(`fieldstream/v1/devices/cam-${i}/up/file`, p, err))), ['whole', 'whole', 'whole']);
    assert.deepEqual(linesAtEncoding, [0, 1, 2]);
    // The same lines as before: each letter whole, its payload in base64.
    const kept = letters(dir).map((l) => JSON.parse(l) as { topic: string; payloadBase64: string });
    assert.deepEqual(
      kept.map((k) => Buffer.from(k.payloadBase64, 'base64').equals(payloads[Number(/cam-(\d)/.exec(k.topic)![1])]!)),
      [true, true, true],
    );
    assert.equal(dead.heldBytes, letters(dir).reduce((n, l) => n + Buffer.byteLength(l) + 1, 0), 'the bytes counted are the bytes written');
    await dead.close();
  });

  it('does not glue a new letter to a line a crash left torn', async () => {
    const dir = join(tmp.dir, 'torn');
    new DeadLetters(dir); // makes the folder
    const whole = JSON.stringify({ at: new Date().toISOString(), code: 'DISTRIBUTOR_WRITE_REJECTED', message: 'x', topic: 't/0', payloadBase64: '' });
    writeFileSync(join(dir, today()), `${whole}\n{"at":"2024-01-01T00:00:00.000Z","code":"DISTRIBUTOR_WRI`);
    // A new process (the distributor restarted after the crash) writes the next letter.
    await new DeadLetters(dir).put('t/1', Buffer.from('after the crash'), err);
    const lines = letters(dir);
    assert.equal(lines.length, 3);
    assert.deepEqual(JSON.parse(lines[0]!), JSON.parse(whole));
    assert.throws(() => JSON.parse(lines[1]!), 'the torn line stays as it was');
    const next = JSON.parse(lines[2]!) as { topic: string; payloadBase64: string };
    assert.equal(next.topic, 't/1');
    assert.equal(Buffer.from(next.payloadBase64, 'base64').toString(), 'after the crash');
    assert.deepEqual(readdirSync(dir), [today()]);
  });

  it("does not glue a replay's record to a line of replayed.jsonl a kill left torn", async () => {
    const dir = join(tmp.dir, 'torn-ledger');
    const dead = new DeadLetters(dir);
    await dead.put('t/0', Buffer.from('first'), err);
    await dead.put('t/1', Buffer.from('second'), err);
    await dead.close();
    const [first, second] = [...readLetters(dir)];
    // A replay killed while it appended the first letter's record.
    writeFileSync(join(dir, REPLAYED_FILE), `{"at":"2026-01-15T12:00:00.000Z","file":"${first!.file}","sha`);
    // The next run records the second letter.
    new ReplayLedger(dir).record(second!);
    const ledger = new ReplayLedger(dir);
    assert.equal(ledger.has(first!), false, 'the torn record is none');
    assert.equal(ledger.has(second!), true, 'the record after it is read back');
  });

  it('reads back every letter it writes, up to the largest (a gateway section written out larger than it came)', async () => {
    const dir = join(tmp.dir, 'largest');
    const dead = new DeadLetters(dir, 1, { maxBytes: LIMITS.deadLetterLetterMaxBytes * 2 });
    // A section of a gateway's envelope is kept as an envelope of its own, written out again: up to
    // LIMITS.deadLetterSectionSlackBytes larger than the broker's largest packet (limits.ts).
    const payload = Buffer.alloc(LIMITS.brokerPacketMaxBytes + Math.floor(LIMITS.deadLetterSectionSlackBytes / 2), 0x61);
    assert.equal(await dead.put('fieldstream/v1/devices/d-1/up/timeseries', payload, new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'refused')), 'whole');
    const read = [...readLetters(dir)];
    assert.equal(read.length, 1);
    assert.ok(read[0]!.letter, 'a letter the distributor kept (and receipted) is read as one, not as a torn line');
    assert.ok(Buffer.from(read[0]!.letter.payloadBase64 ?? '', 'base64').equals(payload));
    assert.deepEqual(summarizeLetters(dir).map((f) => [f.withData, f.unreadable]), [[1, 0]]);
  });

  it('gives replicas sharing the folder files of their own, by their state slot', async () => {
    const dir = join(tmp.dir, 'replicas');
    const first = new DeadLetters(dir, 1);
    const second = new DeadLetters(dir, 2);
    await first.put('t/a', Buffer.from('one'), err);
    await second.put('t/x', Buffer.from('other'), err);
    // Replica 2 is killed in the middle of its next letter...
    const secondsFile = readdirSync(dir).find((f) => readFileSync(join(dir, f), 'utf8').includes('"t/x"'));
    assert.equal(secondsFile, today().replace('.jsonl', '.slot-2.jsonl'));
    appendFileSync(join(dir, secondsFile), '{"at":"2024-01-01T00:00:00.000Z","code":"DISTRIBUTOR_WRI');
    // ...while replica 1, which last saw its file end whole, writes on: its letters stay whole lines.
    await first.put('t/b', Buffer.from('two'), err);
    assert.deepEqual(letters(dir).map((l) => (JSON.parse(l) as { topic: string }).topic), ['t/a', 't/b']);
  });

  it("list counts as letters with data only what a replay writes: not a refused presence or security report kept whole (the DMZ's word); a file's is", async () => {
    const dir = join(tmp.dir, 'with-data');
    const dead = new DeadLetters(dir);
    const refused = new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'InfluxDB answered 400: partial write: points beyond retention policy dropped=1');
    const reading = { v: 1, deviceId: 'dev-1', dataType: 'timeseries', gatewayId: 'gw-1', receivedAt: 1_700_000_000_000, messages: [{ messageId: 'm1', payload: { t: 1 } }] };
    assert.equal(await dead.put(uplinkTopic('dev-1', 'timeseries'), Buffer.from(JSON.stringify(reading)), refused), 'whole');
    // A presence of up to 4 KiB is kept whole: no replay writes it. A file's envelope is kept whole
    // too, and a replay stores the file and writes its record (dead-letter-replay.test.ts).
    assert.equal(await dead.put(statusTopic('dev-1'), Buffer.from(JSON.stringify({ v: 1, deviceId: 'dev-1', gatewayId: 'gw-1', state: 'online', at: 0 })), refused), 'excerpt');
    assert.equal(await dead.put(gatewayPresenceTopic('gw-1'), Buffer.from(JSON.stringify({ v: 1, gatewayId: 'gw-1', state: 'online', since: 0 })), refused), 'excerpt');
    const file = { ...reading, dataType: 'file', messages: [{ messageId: 'f1', payload: { filename: 'a.txt', data: 'aGk=' } }] };
    assert.equal(await dead.put(uplinkTopic('dev-1', 'file'), Buffer.from(JSON.stringify(file)), refused), 'whole');
    await dead.close();
    const [summary] = summarizeLetters(dir);
    assert.deepEqual([summary?.letters, summary?.withData], [4, 2]);
    // What the replay says of each, with no store and no key: the reading and the file are looked at for their signatures.
    const report = await replayLetters({ dir, sink: new LocalPointStore(join(tmp.dir, 'with-data-store')), keys: new DeviceKeyRegistry(join(tmp.dir, 'no-keys')), eventTags: admittedEventTags(join(tmp.dir, 'no-state'), createLogger('test', 'silent')), requireSignatures: true, freshnessMs: 30_000, dryRun: true });
    assert.deepEqual(
      report.problems.map((p) => [p.line, p.code, p.message.replace(/:.*/, '')]),
      [
        [1, 'DEAD_LETTER_NOT_REPLAYABLE', 'none of its 1 messages can be written'],
        [2, 'DEAD_LETTER_NOT_REPLAYABLE', "a presence or a gateway's security report, the DMZ's unsigned word"],
        [3, 'DEAD_LETTER_NOT_REPLAYABLE', "a presence or a gateway's security report, the DMZ's unsigned word"],
        [4, 'DEAD_LETTER_NOT_REPLAYABLE', 'none of its 1 messages can be written'],
      ],
    );
  });

  it("list's legend is plain text for a terminal: no Markdown backticks", async () => {
    const dir = join(tmp.dir, 'legend');
    const dead = new DeadLetters(dir);
    const reading = { v: 1, deviceId: 'dev-1', dataType: 'timeseries', gatewayId: 'gw-1', receivedAt: 1_700_000_000_000, messages: [{ messageId: 'm1', payload: { t: 1 } }] };
    assert.equal(await dead.put(uplinkTopic('dev-1', 'timeseries'), Buffer.from(JSON.stringify(reading)), err), 'whole');
    await dead.close();
    const r = spawnSync(join(REPO_ROOT, 'bin', 'fieldstream-admin'), ['dead-letters', 'list', '--dead-letters', dir], {
      env: { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null' },
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^WITH DATA: whole letters a replay can write \(fieldstream-admin dead-letters replay\)/m);
    assert.doesNotMatch(r.stdout, /`/);
  });

  it('list and replay name a letter file or record they cannot read (a folder, a FIFO, a link in its place) with a code, never hang or crash on it', async () => {
    for (const [name, make] of [
      ['2026-01-02.jsonl', (p: string) => mkdirSync(p)],
      ['2026-01-03.jsonl', (p: string) => execFileSync('mkfifo', [p])],
      ['2026-01-04.jsonl', (p: string) => symlinkSync('/etc/hostname', p)],
      ['replayed.jsonl', (p: string) => mkdirSync(p)],
    ] as const) {
      const dir = join(tmp.dir, `hostile-${name}`);
      mkdirSync(dir);
      writeFileSync(join(dir, '2026-01-01.jsonl'), '{"not":"a letter"}\n');
      make(join(dir, name));
      // In a child process: a FIFO opened for reading would block this one for good.
      const r = spawnSync(join(REPO_ROOT, 'bin', 'fieldstream-admin'), ['dead-letters', 'list', '--dead-letters', dir], {
        env: { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null' },
        encoding: 'utf8',
        timeout: 20_000,
      });
      assert.equal(r.signal, null, `${name}: the list hung`);
      assert.equal(r.status, 1, `${name}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^error DEAD_LETTERS_UNREADABLE: Cannot read ${join(dir, name).replace(/[.]/g, '\\.')} \\(`), name);
      assert.throws(() => [...readLetters(dir)].length + summarizeLetters(dir).length, (e: unknown) => e instanceof FieldStreamError && e.code === 'DEAD_LETTERS_UNREADABLE', name);
    }
  });
});

