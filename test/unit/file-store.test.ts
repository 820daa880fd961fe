import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs, { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { IPublishPacket, MqttClient } from 'mqtt';
import { Consumer } from '../../internal-network/distributor/consumer.ts';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import { replayLetters } from '../../internal-network/distributor/dead-letter-replay.ts';
import { admittedEventTags } from '../../internal-network/distributor/event-tags.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import type { ReceiptPublisher, ReceiptRequest } from '../../internal-network/distributor/receipts.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { parseUplinkFrame } from '../../shared/contract/uplink.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { createLogger } from '../../shared/logger.ts';
import { signGroup } from '../../shared/security/message-auth.ts';
import { withFileSizeLimit } from '../helpers/file-size-limit.ts';
import { fullDiskSkip, moduleUrl, runOnSmallDisk } from '../helpers/full-disk.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';

const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('file storage', () => {
  const tmp = tempDir('files');
  const root = join(tmp.dir, 'files');
  const store = new FileStore(root);
  after(() => tmp.cleanup());

  it('refuses every name that could leave the folder, whatever the DMZ forwarded', async () => {
    for (const filename of ['../escape.txt', '../../etc/passwd', '/abs.txt', 'sub/dir.txt', '..', '.', 'a\\b', '.bashrc', 'x\u0000y', 'x\u009by']) {
      await assert.rejects(store.store('cam-1', { filename, data: b64('x') }), (e: unknown) => e instanceof FieldStreamError && e.code === 'DISTRIBUTOR_UNSAFE_FILENAME');
    }
    await assert.rejects(store.store('../cam', { filename: 'a.txt', data: b64('x') }), (e: unknown) => e instanceof FieldStreamError && e.code === 'DISTRIBUTOR_UNSAFE_FILENAME');
    assert.ok(readdirSync(tmp.dir).every((f) => f === 'files'), 'nothing written beside the storage folder');
  });

  it('refuses names holding bidi controls or other invisible format characters, which would show an operator listing the folder another name; takes the joiners words and emoji need', async () => {
    // "report\u202efdp.exe" is listed as "reportexe.pdf"; a zero-width space or a tag character
    // makes a name that looks like another one already there.
    const misleading = ['report\u202efdp.exe', 'a\u202ab.txt', 'a\u202bb.txt', 'a\u202cb.txt', 'a\u202db.txt', 'a\u2066b.txt', 'a\u2067b.txt', 'a\u2068b.txt', 'a\u2069b.txt', 'a\u200eb.txt', 'a\u200fb.txt', 'a\u061cb.txt', 'in\u200bvoice.pdf', '\ufeffa.txt', 'a\u2060b.txt', 'soft\u00adhyphen.txt', 'tag\u{e0041}.txt'];
    const refused = (e: unknown) => e instanceof FieldStreamError && e.code === 'DISTRIBUTOR_UNSAFE_FILENAME' && /format character/.test(e.message);
    for (const filename of misleading) {
      await assert.rejects(store.store('cam-bidi', { filename, data: b64('x') }), refused, JSON.stringify(filename));
      const sha256 = createHash('sha256').update('x').digest('hex');
      await assert.rejects(store.storeChunk('cam-bidi', { filename, data: b64('x'), transfer: { id: 'bidi', index: 0, count: 1, size: 1, sha256 } }), refused, JSON.stringify(filename));
      const frame = JSON.stringify({ deviceId: 'cam-bidi', dataType: 'file', payload: { filename, data: b64('x') } });
      assert.throws(() => parseUplinkFrame(frame), (e: unknown) => e instanceof FieldStreamError && e.code === 'CONTRACT_UNSAFE_FILENAME', `the gateway refuses ${JSON.stringify(filename)} too`);
    }
    assert.ok(!existsSync(join(root, 'cam-bidi')) || readdirSync(join(root, 'cam-bidi')).length === 0, 'nothing stored');
    // ZWNJ spells Persian and Indic words; ZWJ joins emoji: names with them are names, stored as they are.
    for (const filename of ['\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.txt', 'family \u{1f468}\u200d\u{1f469}\u200d\u{1f467}.jpg', 'caf\u00e9.txt']) {
      assert.equal((await store.store('cam-bidi', { filename, data: b64(filename) })).filename, filename);
      assert.equal(readFileSync(join(root, 'cam-bidi', filename), 'utf8'), filename);
    }
  });

  it('stores once when the same file arrives again (a redelivery)', async () => {
    const a = await store.store('cam-1', { filename: 'img.jpg', data: b64('first') });
    const again = await store.store('cam-1', { filename: 'img.jpg', data: b64('first') });
    assert.deepEqual(again, a);
    assert.equal(a.path, join('cam-1', 'img.jpg'));
    assert.equal(readFileSync(join(root, 'cam-1', 'img.jpg'), 'utf8'), 'first');
  });

  it('never overwrites: other content under a taken name gets a name of its own', async () => {
    const b = await store.store('cam-1', { filename: 'img.jpg', data: b64('second') });
    assert.match(b.path, /^cam-1\/img\.[0-9a-f]{8}\.jpg$/);
    assert.equal(readFileSync(join(root, 'cam-1', 'img.jpg'), 'utf8'), 'first');
    assert.equal(readFileSync(join(root, b.path), 'utf8'), 'second');
  });

  it('tells a taken name holds other content by its size before reading it: a file of another size is never read', async () => {
    // Each name tried was hashed whole to compare it: a device sending small files under the name of
    // a large one of its own had the distributor read all of that one for each of them.
    const large = randomBytes(4 * 1024 * 1024);
    await store.store('cam-6', { filename: 'video.bin', data: large.toString('base64') });
    const taken = join(root, 'cam-6', 'video.bin');
    const fsp = fs.promises as unknown as { open: (...a: unknown[]) => Promise<unknown> };
    const original = fsp.open;
    let reads = 0;
    fsp.open = (...a) => {
      if (a[0] === taken) reads++;
      return original(...a);
    };
    syncBuiltinESMExports();
    try {
      const small = await store.store('cam-6', { filename: 'video.bin', data: b64('small') });
      assert.match(small.path, /^cam-6\/video\.[0-9a-f]{8}\.bin$/, 'a name of its own');
      assert.equal(reads, 0, 'the large file was read');
    } finally {
      fsp.open = original;
      syncBuiltinESMExports();
    }
    // Of the same size, the content tells: hashed as before.
    const same = Buffer.from(large);
    same[0] = same[0]! ^ 1;
    const other = await store.store('cam-6', { filename: 'video.bin', data: same.toString('base64') });
    assert.notEqual(other.path, join('cam-6', 'video.bin'));
    assert.ok(readFileSync(taken).equals(large), 'never overwritten');
    assert.equal((await store.store('cam-6', { filename: 'video.bin', data: large.toString('base64') })).path, join('cam-6', 'video.bin'), 'the same file again: found');
  });

  describe('files in chunks', () => {
    const file = Buffer.from(Array.from({ length: 2500 }, (_, i) => (i * 31) % 256));
    const sha = createHash('sha256').update(file).digest('hex');
    const chunk = (i: number, over: Partial<{ sha256: string; size: number; id: string }> = {}) => ({
      filename: 'big.bin',
      data: file.subarray(i * 1000, (i + 1) * 1000).toString('base64'),
      transfer: { id: over.id ?? 't1', index: i, count: 3, size: over.size ?? file.length, sha256: over.sha256 ?? sha },
    });

    it('joins chunks arriving in any order, once, and checks the SHA-256 of the whole', async () => {
      assert.equal(await store.storeChunk('cam-3', chunk(2)), undefined);
      assert.equal(await store.storeChunk('cam-3', chunk(0)), undefined);
      assert.equal(await store.storeChunk('cam-3', chunk(0)), undefined, 'a chunk delivered twice is harmless');
      const info = await store.storeChunk('cam-3', chunk(1));
      assert.equal(info?.sha256, sha);
      assert.equal(info?.size, 2500);
      assert.ok(readFileSync(join(root, 'cam-3', 'big.bin')).equals(file));
      assert.equal((await store.storeChunk('cam-3', chunk(1)))?.path, info?.path, 'a chunk after completion finds the record');
      assert.deepEqual(readdirSync(join(root, '.partial', 'cam-3')), ['t1.done.json']);
    });

    it('refuses a file whose checksum fails, and stores nothing', async () => {
      const wrong = { sha256: 'a'.repeat(64), id: 't2' };
      await store.storeChunk('cam-4', chunk(0, wrong));
      await store.storeChunk('cam-4', chunk(1, wrong));
      await assert.rejects(store.storeChunk('cam-4', chunk(2, wrong)), (e: unknown) => e instanceof FieldStreamError && e.code === 'DISTRIBUTOR_FILE_CHECKSUM');
      assert.deepEqual(readdirSync(join(root, 'cam-4')), []);
    });
  });

  it("gives each file's record its own message's arrival time, so two files joined into one envelope are two points in InfluxDB", async () => {
    // InfluxDB keeps one point per (measurement, tags, time): two records of a device at one time
    // are one, the later overwriting the earlier's filename, path and SHA-256.
    const dir = join(tmp.dir, 'two-files');
    const log = createLogger('test', 'silent');
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys'), join(dir, 'revoked.txt')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: false, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    const written: StoredPoint[] = [];
    const sink = { description: 'memory', write: async (points: readonly StoredPoint[]) => void written.push(...points), close: async () => {} };
    const handler = new MessageHandler(sink, new FileStore(join(dir, 'files')), verifier);
    const now = Date.now();
    // As the gateway joins a later frame's messages into an envelope: each with its own arrival (uplink-publisher.ts).
    const envelope = {
      v: 1,
      deviceId: 'cam-2',
      dataType: 'file',
      gatewayId: 'gw',
      receivedAt: now,
      messages: [
        { messageId: 'f.1', payload: { filename: 'a.jpg', data: b64('first') } },
        { messageId: 'f.2', receivedAt: now + 40, payload: { filename: 'b.jpg', data: b64('second') } },
      ],
    };
    await handler.handle(uplinkTopic('cam-2', 'file'), Buffer.from(JSON.stringify(envelope)));
    const files = written.filter((p) => p.measurement === 'files');
    assert.deepEqual(files.map((p) => [p.fields.filename, p.time]), [['a.jpg', now], ['b.jpg', now + 40]]);
  });

  it("records a chunked file without a timestamp at its completing chunk's arrival, also for a chunk that comes again later: one row, not one per arrival", async () => {
    // PostgreSQL's files key is (device, time, t:<transfer id>), InfluxDB's point (tags, time): a
    // chunk the device sent again after the file was whole (its receipt overdue), answered from the
    // done marker, made a second record at its own arrival.
    const dir = join(tmp.dir, 'chunk-again');
    const log = createLogger('test', 'silent');
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys'), join(dir, 'revoked.txt')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: false, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    const written: StoredPoint[] = [];
    const sink = { description: 'memory', write: async (points: readonly StoredPoint[]) => void written.push(...points), close: async () => {} };
    const handler = new MessageHandler(sink, new FileStore(join(dir, 'files')), verifier);
    const data = Buffer.from('0123456789');
    const transfer = (index: number) => ({ id: 'tx1', index, count: 2, size: 10, sha256: createHash('sha256').update(data).digest('hex') });
    const chunk = (index: number) => ({ messageId: `tx1.${index}`, payload: { filename: 'c.bin', data: data.subarray(index * 5, index * 5 + 5).toString('base64'), transfer: transfer(index) } });
    const send = (receivedAt: number, ...indexes: number[]) =>
      handler.handle(uplinkTopic('cam-5', 'file'), Buffer.from(JSON.stringify({ v: 1, deviceId: 'cam-5', dataType: 'file', gatewayId: 'gw', receivedAt, messages: indexes.map(chunk) })));
    const now = Date.now();
    await send(now - 2000, 0);
    await send(now - 1000, 1); // completes the file
    await send(now, 1); // sent again by the device
    const files = written.filter((p) => p.measurement === 'files');
    assert.deepEqual(files.map((p) => p.time), [now - 1000, now - 1000]);
  });

  it("a file refused for good makes its envelope a dead letter, receipted whole: the envelope's other files are stored and recorded all the same", async () => {
    // The gateway joins a device's messages of one kind into one envelope (uplink-publisher.ts): a
    // chunk whose transfer fails its checksum beside a file sent whole, or the last chunk of
    // another transfer. The letter's messages are all receipted and their device deletes them.
    const dir = join(tmp.dir, 'refused-beside');
    const key = randomBytes(32);
    mkdirSync(join(dir, 'keys'), { recursive: true });
    writeFileSync(join(dir, 'keys', 'd2.key'), key.toString('hex'));
    const log = createLogger('test', 'silent');
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys'), join(dir, 'revoked.txt')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    const written: StoredPoint[] = [];
    const sink = { description: 'memory', write: async (points: readonly StoredPoint[]) => void written.push(...points), close: async () => {} };
    const handler = new MessageHandler(sink, new FileStore(join(dir, 'files')), verifier);
    const dead = new DeadLetters(join(dir, 'letters'));
    const receipts: ReceiptRequest[] = [];
    const mqtt = { reschedulePing: () => undefined, on: () => undefined, options: {} } as unknown as MqttClient;
    const consumer = new Consumer(mqtt, handler, dead, { initialMs: 10, maxMs: 20 }, { add: (r: ReceiptRequest) => receipts.push(r) } as unknown as ReceiptPublisher, log);
    const now = Date.now();
    const data = Buffer.from('0123456789');
    const good = (index: number) => ({ filename: 'good.bin', data: data.subarray(index * 5, index * 5 + 5).toString('base64'), transfer: { id: 'good', index, count: 2, size: 10, sha256: createHash('sha256').update(data).digest('hex') } });
    const bad = { filename: 'bad.bin', data: b64('xyz'), transfer: { id: 'bad', index: 0, count: 1, size: 3, sha256: 'a'.repeat(64) } };
    const whole = { filename: 'whole.jpg', data: b64('a photo') };
    // A chunk's epoch is its transfer, its sequence number its index; each message signed on its own.
    const message = (epoch: string, seq: number, payload: unknown) => ({ messageId: `${epoch}.${seq}`, seq, payload, auth: signGroup(key, { deviceId: 'd2', dataType: 'file', epoch, ts: now }, [{ seq, payload }]) });
    const send = (...messages: unknown[]) => {
      const envelope = { v: 1, deviceId: 'd2', dataType: 'file', gatewayId: 'gw', receivedAt: now, messages };
      return new Promise<void>((resolve) => mqtt.handleMessage({ cmd: 'publish', topic: uplinkTopic('d2', 'file'), payload: Buffer.from(JSON.stringify(envelope)), qos: 1, dup: false, retain: false } as IPublishPacket, () => resolve()));
    };
    try {
      await send(message('good', 0, good(0)));
      await send(message('bad', 0, bad), message('good', 1, good(1)), message('w', 1, whole));
      assert.equal(consumer.stats.deadLetters, 1, 'the envelope is kept whole as a dead letter');
      assert.deepEqual(receipts.flatMap((r) => r.ids.map((i) => `${i.epoch}.${i.seq}`)).sort(), ['bad.0', 'good.0', 'good.1', 'w.1'], 'every message of it receipted');
      assert.ok(readFileSync(join(dir, 'files', 'd2', 'good.bin')).equals(data), 'the transfer its last chunk completed is stored');
      assert.equal(readFileSync(join(dir, 'files', 'd2', 'whole.jpg'), 'utf8'), 'a photo', 'the file sent whole is stored');
      assert.deepEqual(written.filter((p) => p.measurement === 'files').map((p) => p.fields.filename).sort(), ['good.bin', 'whole.jpg'], 'and both recorded');
      assert.ok(!existsSync(join(dir, 'files', 'd2', 'bad.bin')));
    } finally {
      consumer.stop();
      await dead.close();
    }
  });

  it("a chunk whose transfer's done marker is damaged is a dead letter, kept whole and receipted: its consumer connection moves on", async () => {
    // Answered DISTRIBUTOR_WRITE_FAILED, the chunk was retried unacknowledged for ever: the
    // connection, handed its next message only after this one, stalled for good.
    const dir = join(tmp.dir, 'damaged-marker');
    const key = randomBytes(32);
    mkdirSync(join(dir, 'keys'), { recursive: true });
    writeFileSync(join(dir, 'keys', 'd4.key'), key.toString('hex'));
    const log = createLogger('test', 'silent');
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys'), join(dir, 'revoked.txt')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    const sink = { description: 'memory', write: async () => {}, close: async () => {} };
    const files = new FileStore(join(dir, 'files'));
    const handler = new MessageHandler(sink, files, verifier);
    const dead = new DeadLetters(join(dir, 'letters'));
    const receipts: ReceiptRequest[] = [];
    const mqtt = { reschedulePing: () => undefined, on: () => undefined, options: {} } as unknown as MqttClient;
    const consumer = new Consumer(mqtt, handler, dead, { initialMs: 10, maxMs: 20 }, { add: (r: ReceiptRequest) => receipts.push(r) } as unknown as ReceiptPublisher, log);
    const now = Date.now();
    const data = Buffer.from('0123456789');
    const chunk = (index: number) => ({ filename: 'c.bin', data: data.subarray(index * 5, index * 5 + 5).toString('base64'), transfer: { id: 'tm', index, count: 2, size: 10, sha256: createHash('sha256').update(data).digest('hex') } });
    const message = (seq: number, payload: unknown) => ({ messageId: `tm.${seq}`, seq, payload, auth: signGroup(key, { deviceId: 'd4', dataType: 'file', epoch: 'tm', ts: now }, [{ seq, payload }]) });
    const send = (...messages: unknown[]) => {
      const envelope = { v: 1, deviceId: 'd4', dataType: 'file', gatewayId: 'gw', receivedAt: now, messages };
      return new Promise<void>((resolve) => mqtt.handleMessage({ cmd: 'publish', topic: uplinkTopic('d4', 'file'), payload: Buffer.from(JSON.stringify(envelope)), qos: 1, dup: false, retain: false } as IPublishPacket, () => resolve()));
    };
    try {
      await send(message(0, chunk(0)));
      // The last chunk stored by a distributor killed before its message was acknowledged; its
      // transfer's marker then damaged (edited by hand); the broker delivers the chunk again.
      assert.equal((await files.storeChunk('d4', chunk(1)))?.path, join('d4', 'c.bin'));
      const marker = join(dir, 'files', '.partial', 'd4', 'tm.done.json');
      const record = readFileSync(marker, 'utf8');
      writeFileSync(marker, '{"filename":"c.bin","pa');
      const acked = await Promise.race([send(message(1, chunk(1))).then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 3_000))]);
      assert.ok(acked, `acknowledged (after ${consumer.stats.retries} retries)`);
      assert.equal(consumer.stats.deadLetters, 1, 'kept whole as a dead letter');
      assert.deepEqual(receipts.flatMap((r) => r.ids.map((i) => `${i.epoch}.${i.seq}`)).sort(), ['tm.0', 'tm.1'], 'receipted');
      assert.ok(readFileSync(join(dir, 'files', 'd4', 'c.bin')).equals(data), 'the stored file untouched');
      // The replay leaves the letter until the marker is put right, and goes on with the others.
      const written: StoredPoint[] = [];
      const replay = () =>
        replayLetters({ dir: join(dir, 'letters'), sink: { description: 'memory', write: async (p: readonly StoredPoint[]) => void written.push(...p), close: async () => {} }, keys: new DeviceKeyRegistry(join(dir, 'keys')), eventTags: admittedEventTags(join(dir, 'state'), log), requireSignatures: true, freshnessMs: 30_000, files });
      await dead.close();
      const refused = await replay();
      assert.equal(refused.stoppedBy, undefined);
      assert.deepEqual(refused.problems.map((p) => [p.code, /DISTRIBUTOR_FILE_MARKER_DAMAGED/.test(p.message)]), [['DEAD_LETTER_NOT_REPLAYABLE', true]]);
      writeFileSync(marker, record);
      assert.equal((await replay()).replayed, 1, 'replayed once the marker is put right');
      assert.deepEqual(written.map((p) => p.fields.path), [join('d4', 'c.bin')]);
    } finally {
      consumer.stop();
      await dead.close();
    }
  });

  it("a letter refused for one of its files (as distributors kept them before that file's neighbours were stored) replays the others: stored and recorded, the letter reported not replayable", async () => {
    const dir = join(tmp.dir, 'replay-beside');
    const key = randomBytes(32);
    mkdirSync(join(dir, 'keys'), { recursive: true });
    writeFileSync(join(dir, 'keys', 'd3.key'), key.toString('hex'));
    const now = Date.now();
    const message = (epoch: string, seq: number, payload: unknown) => ({ messageId: `${epoch}.${seq}`, seq, payload, auth: signGroup(key, { deviceId: 'd3', dataType: 'file', epoch, ts: now }, [{ seq, payload }]) });
    const bad = { filename: 'bad.bin', data: b64('xyz'), transfer: { id: 'bad', index: 0, count: 1, size: 3, sha256: 'a'.repeat(64) } };
    const whole = { filename: 'whole.jpg', data: b64('a photo') };
    const envelope = { v: 1, deviceId: 'd3', dataType: 'file', gatewayId: 'gw', receivedAt: now, messages: [message('bad', 0, bad), message('w', 1, whole)] };
    const dead = new DeadLetters(join(dir, 'letters'));
    await dead.put(uplinkTopic('d3', 'file'), Buffer.from(JSON.stringify(envelope)), new FieldStreamError('DISTRIBUTOR_FILE_CHECKSUM', 'the checksum of bad.bin'));
    await dead.close();
    const written: StoredPoint[] = [];
    const sink = { description: 'memory', write: async (points: readonly StoredPoint[]) => void written.push(...points), close: async () => {} };
    const log = createLogger('test', 'silent');
    const replay = () =>
      replayLetters({ dir: join(dir, 'letters'), sink, keys: new DeviceKeyRegistry(join(dir, 'keys')), eventTags: admittedEventTags(join(dir, 'state'), log), requireSignatures: true, freshnessMs: 30_000, files: new FileStore(join(dir, 'files')) });
    const report = await replay();
    assert.ok(existsSync(join(dir, 'files', 'd3', 'whole.jpg')), 'the file beside it stored');
    assert.equal(readFileSync(join(dir, 'files', 'd3', 'whole.jpg'), 'utf8'), 'a photo');
    assert.deepEqual(written.filter((p) => p.measurement === 'files').map((p) => p.fields.filename), ['whole.jpg'], 'and recorded');
    assert.deepEqual(report.problems.map((p) => [p.code, p.message.replace(/:.*/, '')]), [['DEAD_LETTER_NOT_REPLAYABLE', 'the file storage refuses one of its files (DISTRIBUTOR_FILE_CHECKSUM)']]);
    assert.equal(report.replayed, 0, 'not recorded as replayed');
    await replay(); // a run again: the same record, one point
    assert.deepEqual(new Set(written.map((p) => JSON.stringify(p))).size, 1);
  });

  it('keeps devices apart and leaves no temporary files behind', async () => {
    await store.store('cam-2', { filename: 'img.jpg', data: b64('other device') });
    assert.equal(readFileSync(join(root, 'cam-1', 'img.jpg'), 'utf8'), 'first');
    for (const dev of ['cam-1', 'cam-2']) assert.ok(readdirSync(join(root, dev)).every((f) => !f.startsWith('.incoming-')));
  });
});

/**
 * One write(2) may take only part of what it is given and report success: a disk filling up, the
 * file size limit (RLIMIT_FSIZE, lowered with prlimit: the kernel writes up to it, then answers
 * EFBIG). A file or chunk cut short must never be stored under its name with the size and SHA-256
 * of the whole: its message would be receipted and the device would delete the only whole copy.
 */
describe('file storage on a disk that takes only part of a write', () => {
  const tmp = tempDir('files-short-write');
  after(() => tmp.cleanup());
  const writeFailed = (e: unknown) => e instanceof FieldStreamError && e.code === 'DISTRIBUTOR_WRITE_FAILED';
  const incoming = (dir: string) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.startsWith('.incoming-')) : []);

  it('refuses a file cut short as a transient failure (retried), stores nothing, and stores it whole once the disk takes it', async () => {
    const root = join(tmp.dir, 'inline');
    const store = new FileStore(root);
    const data = randomBytes(200_000);
    const message = { filename: 'img.bin', data: data.toString('base64') };
    await withFileSizeLimit(64 * 1024, () => assert.rejects(store.store('cam-1', message), writeFailed));
    assert.ok(!existsSync(join(root, 'cam-1', 'img.bin')), 'nothing under its name');
    assert.deepEqual(incoming(join(root, 'cam-1')), [], 'no temporary file left');
    const info = await store.store('cam-1', message); // the message again
    assert.equal(info.path, join('cam-1', 'img.bin'));
    assert.ok(readFileSync(join(root, info.path)).equals(data));
  });

  it('refuses a chunk cut short (not receipted), and the transfer completes whole when it comes again', async () => {
    const root = join(tmp.dir, 'chunks');
    const store = new FileStore(root);
    const file = randomBytes(300_000);
    const sha256 = createHash('sha256').update(file).digest('hex');
    const chunk = (i: number) => ({ filename: 'big.bin', data: file.subarray(i * 150_000, (i + 1) * 150_000).toString('base64'), transfer: { id: 't1', index: i, count: 2, size: file.length, sha256 } });
    await withFileSizeLimit(64 * 1024, () => assert.rejects(store.storeChunk('cam-2', chunk(0)), writeFailed));
    const partial = join(root, '.partial', 'cam-2', 't1');
    assert.deepEqual(readdirSync(partial), [], 'no chunk kept, not even a short one');
    assert.equal(await store.storeChunk('cam-2', chunk(0)), undefined);
    const info = await store.storeChunk('cam-2', chunk(1));
    assert.equal(info?.sha256, sha256);
    assert.ok(readFileSync(join(root, 'cam-2', 'big.bin')).equals(file));
  });

  it('refuses a file on a real full disk (a small tmpfs), and leaves nothing under its name', { skip: fullDiskSkip }, () => {
    const mnt = join(tmp.dir, 'mnt');
    mkdirSync(mnt);
    const script = `
      import { existsSync, readdirSync } from 'node:fs';
      import { join } from 'node:path';
      import { FileStore } from ${moduleUrl('internal-network/distributor/file-store.ts')};
      const root = join(process.env.MNT, 'files');
      const data = Buffer.alloc(400_000, 7);
      const outcome = await new FileStore(root).store('cam-1', { filename: 'img.bin', data: data.toString('base64') }).then((info) => 'stored ' + info.size, (e) => e.code);
      console.log(JSON.stringify({ outcome, named: existsSync(join(root, 'cam-1', 'img.bin')), left: readdirSync(join(root, 'cam-1')) }));
    `;
    const r = runOnSmallDisk(mnt, script, 256);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.trim().split('\n').at(-1)!), { outcome: 'DISTRIBUTOR_WRITE_FAILED', named: false, left: [] });
  });

  it('a signed file the disk cuts short is retried by the consumer, not receipted, not a dead letter; once the disk takes it, stored whole and receipted', async () => {
    const dir = join(tmp.dir, 'consumer');
    const key = randomBytes(32);
    mkdirSync(join(dir, 'keys'), { recursive: true });
    writeFileSync(join(dir, 'keys', 'd1.key'), key.toString('hex'));
    const log = createLogger('test', 'silent');
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys'), join(dir, 'revoked.txt')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    const sink = { description: 'memory', write: async () => {}, close: async () => {} };
    const handler = new MessageHandler(sink, new FileStore(join(dir, 'files')), verifier);
    const dead = new DeadLetters(join(dir, 'letters'));
    const receipts: ReceiptRequest[] = [];
    const mqtt = { reschedulePing: () => undefined, on: () => undefined, options: {} } as unknown as MqttClient;
    const consumer = new Consumer(mqtt, handler, dead, { initialMs: 10, maxMs: 20 }, { add: (r: ReceiptRequest) => receipts.push(r) } as unknown as ReceiptPublisher, log);
    const now = Date.now();
    const data = randomBytes(300_000);
    const payload = { filename: 'photo.jpg', contentType: 'image/jpeg', data: data.toString('base64'), metadata: { size: data.length, timestamp: now } };
    const auth = signGroup(key, { deviceId: 'd1', dataType: 'file', epoch: 'e1', ts: now }, [{ seq: 1, payload }]);
    const envelope = { v: 1, deviceId: 'd1', dataType: 'file', gatewayId: 'gw', receivedAt: now, messages: [{ messageId: 'e1.1', seq: 1, payload, auth }] };
    const acked = { done: false };
    try {
      await withFileSizeLimit(128 * 1024, async () => {
        mqtt.handleMessage({ cmd: 'publish', topic: uplinkTopic('d1', 'file'), payload: Buffer.from(JSON.stringify(envelope)), qos: 1, dup: false, retain: false } as IPublishPacket, () => (acked.done = true));
        await eventually(() => (consumer.stats.retries >= 3 ? true : undefined), 5_000, 'retries');
        assert.equal(acked.done, false, 'not acknowledged');
        assert.deepEqual(receipts, [], 'no receipt: the device keeps its copy');
        assert.equal(consumer.stats.deadLetters, 0, 'not a dead letter: good data, a failing disk');
        assert.ok(!existsSync(join(dir, 'files', 'd1', 'photo.jpg')));
      });
      await eventually(() => (acked.done ? true : undefined), 5_000, 'acknowledged once the disk takes it');
      assert.ok(readFileSync(join(dir, 'files', 'd1', 'photo.jpg')).equals(data));
      assert.deepEqual(receipts.flatMap((r) => r.ids.map((i) => i.seq)), [1]);
      assert.equal(consumer.stats.deadLetters, 0);
    } finally {
      consumer.stop();
      await dead.close();
    }
  });
});
