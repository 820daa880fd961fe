import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs, { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { IPublishPacket, MqttClient } from 'mqtt';
import { loadDistributorConfig } from '../../internal-network/distributor/config.ts';
import { Consumer } from '../../internal-network/distributor/consumer.ts';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import { DistributorMetrics } from '../../internal-network/distributor/metrics.ts';
import { MEASUREMENTS, type StoredPoint } from '../../internal-network/distributor/points.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { gatewayUplinkTopic, statusTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import { toLines } from '../../internal-network/distributor/sinks/line-protocol.ts';
import type { ReceiptPublisher, ReceiptRequest } from '../../internal-network/distributor/receipts.ts';
import { signGroup } from '../../shared/security/message-auth.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { eventually } from '../helpers/ws-device.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * A compromised DMZ publishes what it likes, as large as the broker takes (16 MiB): the dead-letter
 * folder must not fill the disk, and a letter holding acknowledged data must never be dropped to
 * keep within its bound.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const held = (dir: string) => readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
const invalid = new FieldStreamError('CONTRACT_INVALID_ENVELOPE', 'not an envelope');
const rejected = new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'refused by the database');

describe('the dead-letter folder under a flood', () => {
  const tmp = tempDir('dead-letter-bound');
  after(() => tmp.cleanup());

  it('keeps of an invalid payload only its head, its size and its SHA-256', async () => {
    const dir = join(tmp.dir, 'excerpt');
    const dead = new DeadLetters(dir, 1, { maxBytes: 64 * 1024 * 1024 });
    const junk = Buffer.alloc(4 * 1024 * 1024, 0x41);
    assert.equal(await dead.put('t/junk', junk, invalid), 'excerpt');
    const [line] = readFileSync(join(dir, readdirSync(dir)[0]!), 'utf8').trim().split('\n');
    const letter = JSON.parse(line!) as Record<string, unknown>;
    assert.ok(line!.length < 8 * 1024, `a letter of ${line!.length} bytes`);
    assert.equal(letter.payloadBytes, junk.length);
    assert.equal(letter.sha256, createHash('sha256').update(junk).digest('hex'));
    assert.ok(Buffer.from(letter.payloadHeadBase64 as string, 'base64').equals(junk.subarray(0, 4096)));
    // A letter with data is kept whole, however large.
    const data = Buffer.alloc(2 * 1024 * 1024, 0x42);
    assert.equal(await dead.put('t/data', data, rejected), 'whole');
    await dead.close();
  });

  it('stays within its bound: invalid payloads within half of it, letters with data refused past it until there is room', async () => {
    const dir = join(tmp.dir, 'bound');
    const maxBytes = 256 * 1024;
    const dead = new DeadLetters(dir, 1, { maxBytes });
    const outcomes: string[] = [];
    for (let i = 0; i < 200; i++) outcomes.push(await dead.put('t/junk', Buffer.alloc(1024 * 1024, i), invalid));
    assert.ok(outcomes.includes('over-bound'), 'past its share, an invalid payload is not kept');
    assert.ok(held(dir) <= maxBytes / 2, `${held(dir)} bytes held by invalid payloads`);

    let full: unknown;
    for (let i = 0; i < 20 && !full; i++) await dead.put(`t/data-${i}`, Buffer.alloc(30 * 1024, i), rejected).catch((err: unknown) => (full = err));
    assert.ok(full instanceof FieldStreamError && full.code === 'DISTRIBUTOR_DEAD_LETTERS_FULL', String(full));
    assert.ok(held(dir) <= maxBytes, `${held(dir)} bytes held`);

    // An operator moves the letters away: seen at the next measure (at most a second later).
    for (const f of readdirSync(dir)) rmSync(join(dir, f));
    await sleep(1_100);
    assert.equal(await dead.put('t/data-after', Buffer.alloc(30 * 1024, 1), rejected), 'whole');

    // Or moves the folder itself away: made again, not every letter refused until a restart.
    renameSync(dir, `${dir}.moved`);
    await sleep(1_100);
    assert.equal(await dead.put('t/data-after-move', Buffer.alloc(30 * 1024, 2), rejected), 'whole');
    assert.equal(readdirSync(dir).length, 1);
    await dead.close();
  });

  it('counts a letter another consumer writes while the folder is measured: the folder never holds more than it counts', async () => {
    // The measure set the count to what it had read, dropping a letter appended meanwhile (after its
    // file was looked at): counted short, the folder took that much more past its bound.
    const dir = join(tmp.dir, 'measured');
    const maxBytes = 64 * 1024;
    const dead = new DeadLetters(dir, 1, { maxBytes });
    assert.equal(await dead.put('t/first', Buffer.alloc(8 * 1024, 1), rejected), 'whole');
    await sleep(1_100); // a letter that would pass the bound has the folder measured again
    const fsp = fs.promises as unknown as { stat: (...a: unknown[]) => Promise<unknown> };
    const original = fsp.stat;
    let reached!: () => void;
    const measuring = new Promise<void>((r) => (reached = r));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let armed = true;
    fsp.stat = async (...a) => {
      if (!armed || !String(a[0]).startsWith(dir)) return original(...a);
      armed = false; // the measure's look at the day's file, answered as it was then, once the gate opens
      const seen = await original(...a);
      reached();
      await gate;
      return seen;
    };
    syncBuiltinESMExports();
    try {
      const large = dead.put('t/large', Buffer.alloc(42 * 1024, 2), rejected).catch((err: unknown) => err);
      await measuring;
      assert.equal(await dead.put('t/meanwhile', Buffer.alloc(1024, 3), rejected), 'whole', 'another consumer\'s letter, kept while the folder is read');
      release();
      const outcome = await large;
      assert.ok(outcome instanceof FieldStreamError && outcome.code === 'DISTRIBUTOR_DEAD_LETTERS_FULL', String(outcome));
    } finally {
      release();
      fsp.stat = original;
      syncBuiltinESMExports();
    }
    assert.ok((dead.heldBytes ?? 0) >= held(dir), `${dead.heldBytes} bytes counted, ${held(dir)} held`);
    await dead.close();
  });

  it('distributor_dead_letter_bytes follows the folder: letters an operator moved away are no longer counted at the next scrape', async () => {
    // Measured only at the start and when a letter would pass the bound, the gauge stayed at what the
    // folder held before it was cleared (FieldStreamDeadLetters kept firing) until the next letter.
    const dir = join(tmp.dir, 'cleared');
    const dead = new DeadLetters(dir, 1, { maxBytes: 1024 * 1024 });
    const metrics = new DistributorMetrics();
    metrics.bindDeadLetters(() => dead.measuredBytes(), dead.maxBytes);
    const gauge = async () => Number(/^fieldstream_distributor_dead_letter_bytes\{[^}]*\} (\S+)$/m.exec(await metrics.metrics.registry.metrics())?.[1]);
    assert.equal(await dead.put('t/a', Buffer.alloc(8 * 1024, 1), rejected), 'whole');
    assert.equal(await gauge(), held(dir));
    assert.ok(held(dir) > 8 * 1024);
    await dead.close();
    for (const f of readdirSync(dir)) rmSync(join(dir, f));
    await sleep(1_100);
    assert.equal(await gauge(), 0, 'the folder is empty');
    // A letter another replica (slot 2) writes is seen too.
    const other = new DeadLetters(dir, 2, { maxBytes: 1024 * 1024 });
    assert.equal(await other.put('t/b', Buffer.alloc(1024, 2), rejected), 'whole');
    await other.close();
    await sleep(1_100);
    assert.equal(await gauge(), held(dir));
  });

  it('does not acknowledge a valid envelope the database refused while the folder is full, and acknowledges junk past the bound', async () => {
    const dir = join(tmp.dir, 'consumer');
    const dead = new DeadLetters(join(dir, 'letters'), 1, { maxBytes: 64 * 1024 });
    const log = createLogger('test', 'silent');
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: false, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    const refusing = { description: 'refusing', write: async () => Promise.reject(new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'field type conflict')), close: async () => {} };
    const metrics = new DistributorMetrics();
    const handler = new MessageHandler(refusing, new FileStore(join(dir, 'files')), verifier, metrics);
    const mqtt = { reschedulePing: () => undefined, on: () => undefined, options: {} } as unknown as MqttClient;
    // The consumer's lines: the one saying a message waits for room in the folder.
    let fullLines = 0;
    const consumerLog = createLogger('test', 'error', new Writable({ write: (chunk: Buffer, _e, cb) => ((fullLines += chunk.toString().split('"code":"DISTRIBUTOR_DEAD_LETTERS_FULL"').length - 1), cb()) }));
    const consumer = new Consumer(mqtt, handler, dead, { initialMs: 10, maxMs: 50 }, undefined, consumerLog, metrics.deadLetters, metrics.deadLettersNotKept);
    const deliver = (topic: string, payload: Buffer) => {
      const acked = { done: false };
      mqtt.handleMessage({ cmd: 'publish', topic, payload, qos: 1, dup: false, retain: false } as IPublishPacket, () => (acked.done = true));
      return acked;
    };
    try {
      const topic = uplinkTopic('sensor-1', 'timeseries');
      const envelope = (i: number) => Buffer.from(JSON.stringify({ v: 1, deviceId: 'sensor-1', dataType: 'timeseries', gatewayId: 'gw', receivedAt: Date.now(), messages: [{ messageId: `m${i}`, payload: { t: i, pad: 'x'.repeat(20_000) } }] }));
      // Letters with data fill the folder; the one that finds no room stays unacknowledged.
      let waiting: { done: boolean } | undefined;
      for (let i = 0; i < 10 && !waiting; i++) {
        const said = fullLines;
        const acked = deliver(topic, envelope(i));
        await eventually(() => (acked.done || fullLines > said ? true : undefined), 5_000, `message ${i} kept, or waiting for room`);
        if (!acked.done) waiting = acked;
      }
      assert.ok(waiting, 'a letter with data past the bound is not acknowledged');
      await sleep(300);
      assert.equal(waiting.done, false, 'still waiting for room');
      assert.ok(held(join(dir, 'letters')) <= 64 * 1024);

      // Room is made: it is kept, and acknowledged.
      for (const f of readdirSync(join(dir, 'letters'))) rmSync(join(dir, 'letters', f));
      await eventually(() => (waiting!.done ? true : undefined), 5_000);

      // Junk beyond its share is acknowledged all the same (it holds nothing to keep), and counted.
      const before = held(join(dir, 'letters'));
      const junk = Array.from({ length: 20 }, () => deliver(topic, Buffer.alloc(256 * 1024, 0x41)));
      await eventually(() => (junk.every((a) => a.done) ? true : undefined), 5_000);
      assert.ok(held(join(dir, 'letters')) <= Math.max(before, 32 * 1024) + 8 * 1024, `${held(join(dir, 'letters'))} bytes held`);
      assert.match(await metrics.metrics.registry.metrics(), /^fieldstream_distributor_dead_letters_not_kept_total\{?[^}\n]*\}? [1-9]\d*$/m);
    } finally {
      consumer.stop();
      await dead.close();
    }
  });

  // Presences are the DMZ's word (unsigned, no receipt names them): a compromised DMZ publishes as
  // many as it likes. One the database refuses was kept whole, as a letter with data: a flood of them
  // filled DEAD_LETTER_MAX_BYTES, then the next stayed unacknowledged and its consumer connection
  // (mqtt.js hands it one message at a time) took nothing more, from any gateway, until an operator
  // made room.
  for (const [what, forged, sink] of [
    [
      'a gateway id that line protocol cannot carry (a line break)',
      (i: number) => ({ v: 1, state: 'online', gatewayId: `gw\n${'x'.repeat(100)}${i}`, at: Date.now() }),
      // The real encoder, as the InfluxDB sinks run it before sending.
      async (points: readonly StoredPoint[]) => void toLines(points),
    ],
    [
      'a date older than the retention policy (at: 0)',
      (i: number) => ({ v: 1, state: 'online', gatewayId: 'gw-1', at: i }),
      // InfluxDB 1.x under a retention policy of 30 days: test/e2e/influx-sinks.test.ts shows its answer.
      async (points: readonly StoredPoint[]) => {
        if (points.some((p) => p.time < Date.now() - 30 * 86_400_000)) throw new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'InfluxDB answered 400: partial write: points beyond retention policy dropped=1');
      },
    ],
  ] as const) {
    it(`forged presences with ${what} fill no room meant for data, and never stall the consumer`, async () => {
      const dir = join(tmp.dir, `presence-${what.length}`);
      const maxBytes = 16 * 1024;
      const dead = new DeadLetters(join(dir, 'letters'), 1, { maxBytes });
      const log = createLogger('test', 'silent');
      mkdirSync(join(dir, 'keys'), { recursive: true });
      writeFileSync(join(dir, 'keys', 'pump-1.key'), `${'ab'.repeat(32)}\n`);
      const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
      const written: StoredPoint[] = [];
      const store = { description: 'encoding', write: async (points: StoredPoint[]) => (await sink(points), void written.push(...points)), close: async () => {} };
      const metrics = new DistributorMetrics();
      const handler = new MessageHandler(store, new FileStore(join(dir, 'files')), verifier, metrics);
      const mqtt = { reschedulePing: () => undefined, on: () => undefined, options: {} } as unknown as MqttClient;
      // What the consumer says of those it does not keep.
      const said: string[] = [];
      const consumerLog = createLogger('test', 'warn', new Writable({ write: (chunk: Buffer, _e, cb) => (said.push(chunk.toString()), cb()) }));
      const consumer = new Consumer(mqtt, handler, dead, { initialMs: 10, maxMs: 50 }, undefined, consumerLog, metrics.deadLetters, metrics.deadLettersNotKept);
      // Resolves at the acknowledgement, rejects past 2 s (awaited, not polled: 200 polls of 50 ms were most of the test's time).
      const deliver = (topic: string, payload: Buffer, what: string) =>
        new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`${what} not acknowledged within 2 s`)), 2_000);
          mqtt.handleMessage({ cmd: 'publish', topic, payload, qos: 1, dup: false, retain: true } as IPublishPacket, () => {
            clearTimeout(timer);
            resolve();
          });
        });
      try {
        // Each is handled before the next is handed over, as mqtt.js does on one connection.
        for (let i = 0; i < 200; i++) {
          // Of a registered device: those of invented ids are counted, never written.
          await deliver(statusTopic('pump-1'), Buffer.from(JSON.stringify(forged(i))), `forged presence ${i}`);
        }
        assert.ok(held(join(dir, 'letters')) <= maxBytes * LIMITS.deadLetterUnparsableShare + 8 * 1024, `${held(join(dir, 'letters'))} bytes held`);
        // A genuine presence after the flood is written.
        await deliver(statusTopic('pump-1'), Buffer.from(JSON.stringify({ v: 1, state: 'online', gatewayId: 'gw-1', at: Date.now() })), 'the genuine presence');
        assert.ok(written.some((p) => p.tags.device === 'pump-1' && p.tags.gateway === 'gw-1' && p.time > 1e12), 'the genuine presence written');
        // Counted as not kept, and said to be what they are: valid presences, not invalid payloads
        // (the metric's HELP and the log called every one of them "an invalid payload").
        const text = await metrics.metrics.registry.metrics();
        assert.match(text, /^fieldstream_distributor_dead_letters_not_kept_total\{?[^}\n]*\}? [1-9]\d*$/m);
        assert.match(text, /^# HELP fieldstream_distributor_dead_letters_not_kept_total .*presence/m);
        const notKept = said.filter((l) => l.includes('not kept'));
        assert.ok(notKept.length > 0, said.join(''));
        for (const line of notKept) assert.doesNotMatch(line, /invalid payload/, line);
      } finally {
        consumer.stop();
        await dead.close();
      }
    });
  }

  it('the smallest bound the configuration takes holds the largest letter whole: a whole packet, and a section written out larger than it came', async () => {
    const min = LIMITS.deadLetterLetterMaxBytes;
    assert.throws(() => loadDistributorConfig({ DEAD_LETTER_MAX_BYTES: String(min - 1) }), (e: unknown) => e instanceof FieldStreamError && e.code === 'CONFIG_INVALID' && e.message.includes('DEAD_LETTER_MAX_BYTES'));
    assert.equal(loadDistributorConfig({ DEAD_LETTER_MAX_BYTES: String(min) }).DEAD_LETTER_MAX_BYTES, min);

    // A payload as large as the broker takes (with its topic), an error message of any length.
    const dir = join(tmp.dir, 'largest');
    const dead = new DeadLetters(dir, 1, { maxBytes: min });
    const topic = uplinkTopic('sensor-1', 'file');
    const packet = Buffer.alloc(LIMITS.brokerPacketMaxBytes - Buffer.byteLength(topic), 0x7b);
    const failed = new FieldStreamError('DISTRIBUTOR_MESSAGE_FAILED', '\u0001'.repeat(1024 * 1024));
    assert.equal(await dead.put(topic, packet, failed), 'whole');
    const line = JSON.parse(readFileSync(join(dir, readdirSync(dir)[0]!), 'utf8')) as { payloadBase64: string; message: string };
    assert.ok(Buffer.from(line.payloadBase64, 'base64').equals(packet), 'the payload kept whole');
    assert.equal(line.message.length, LIMITS.deadLetterMessageMaxChars, 'the message cut to its bound');
    await dead.close();

    // A gateway's envelope the database refuses is kept one section at a time, each written out
    // again: numbers come out in full ("1e20": 21 digits). One section of every message, every field
    // such a number, the rest of the packet a padding string.
    const fields = Object.fromEntries(Array.from({ length: LIMITS.readingMaxFields - 2 }, (_, i) => [`f${i}`, 1e20]));
    const message = (i: number, pad: string) => `{"messageId":"m${String(i).padStart(4, "0")}","seq":1e0,"receivedAt":1.75e12,"payload":{"timestamp":1.75e12,${Object.keys(fields).map((k) => `"${k}":1e20`).join(',')},"pad":"${pad}"}}`;
    const bare = message(0, '').length;
    const head = '{"v":1,"gatewayId":"gw-1","receivedAt":1.75e12,"dataType":"timeseries","devices":[{"deviceId":"sensor-1","messages":[';
    const pad = 'x'.repeat(Math.floor((LIMITS.brokerPacketMaxBytes - head.length - 4) / LIMITS.batchMaxMessages) - bare - 1);
    const envelope = Buffer.from(`${head}${Array.from({ length: LIMITS.batchMaxMessages }, (_, i) => message(i, pad)).join(',')}]}]}`);
    assert.ok(envelope.length <= LIMITS.brokerPacketMaxBytes && envelope.length > LIMITS.brokerPacketMaxBytes - 64 * 1024, `${envelope.length} bytes`);
    const log = createLogger('test', 'silent');
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(tmp.dir, 'largest-keys')), new ReplayWindows(join(tmp.dir, 'largest-replay')), { requireSignatures: false, freshnessMs: 30_000, maxDelayMs: 86_400_000 * 1000 }, log);
    const refusing = { description: 'refusing', write: async () => Promise.reject(new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'field type conflict')), close: async () => {} };
    const handled = await new MessageHandler(refusing, new FileStore(join(tmp.dir, 'largest-files')), verifier).handle(gatewayUplinkTopic('gw-1'), envelope);
    const [section] = handled.deadLetters ?? [];
    assert.ok(section && section.payload.length > envelope.length + 4 * 1024 * 1024, `written out larger than it came: ${section?.payload.length} bytes for ${envelope.length}`);
    const sections = new DeadLetters(join(tmp.dir, 'largest-section'), 1, { maxBytes: min });
    assert.equal(await sections.put(section.topic, section.payload, section.error), 'whole');
    await sections.close();
  });

  // A device's genuine message the database refuses for good is kept whole and receipted; a
  // compromised DMZ holding a copy publishes it again and again, within its freshness. Each copy was
  // checked as new (nothing recorded it), refused again and kept again, whole: the folder filled
  // with one message, and then every consumer meeting a refused message stalled.
  it('a copy of a message kept as a dead letter is not kept again: answered as a duplicate, with its receipt', async () => {
    const dir = join(tmp.dir, 'replayed-copies');
    const key = Buffer.alloc(32, 7);
    mkdirSync(join(dir, 'keys'), { recursive: true });
    writeFileSync(join(dir, 'keys', 'pump-1.key'), `${key.toString('hex')}\n`);
    const log = createLogger('test', 'silent');
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: true, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    // Refuses the reading (a field that changed type), takes the security events (a duplicate's).
    let writes = 0;
    const refusing = {
      description: 'refusing readings',
      write: async (points: readonly StoredPoint[]) => {
        if (!points.some((p) => p.measurement === MEASUREMENTS.readings)) return;
        writes++;
        throw new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'field type conflict');
      },
      close: async () => {},
    };
    const dead = new DeadLetters(join(dir, 'letters'), 1, { maxBytes: 1024 * 1024 });
    const receipts: ReceiptRequest[] = [];
    const publisher = { add: (r: ReceiptRequest) => void receipts.push(r) } as unknown as ReceiptPublisher;
    const mqtt = { reschedulePing: () => undefined, on: () => undefined, options: {} } as unknown as MqttClient;
    const consumer = new Consumer(mqtt, new MessageHandler(refusing, new FileStore(join(dir, 'files')), verifier), dead, { initialMs: 10, maxMs: 50 }, publisher, log);
    const now = Date.now();
    const payload = { level: 'high', timestamp: now };
    const auth = signGroup(key, { deviceId: 'pump-1', dataType: 'timeseries', epoch: 'e1', ts: now }, [{ seq: 1, payload }]);
    const envelope = Buffer.from(JSON.stringify({ v: 1, deviceId: 'pump-1', dataType: 'timeseries', gatewayId: 'gw-1', receivedAt: now, messages: [{ messageId: 'e1.1', payload, auth }] }));
    const deliver = () =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('not acknowledged within 2 s')), 2_000);
        mqtt.handleMessage({ cmd: 'publish', topic: uplinkTopic('pump-1', 'timeseries'), payload: envelope, qos: 1, dup: false, retain: false } as IPublishPacket, () => {
          clearTimeout(timer);
          resolve();
        });
      });
    const letters = () => readdirSync(join(dir, 'letters')).reduce((n, f) => n + readFileSync(join(dir, 'letters', f), 'utf8').split('\n').filter(Boolean).length, 0);
    try {
      await deliver();
      assert.equal(letters(), 1, 'kept whole');
      assert.deepEqual(receipts.flatMap((r) => r.ids), [{ epoch: 'e1', seq: 1 }], 'and receipted');
      for (let i = 0; i < 5; i++) await deliver();
      assert.equal(letters(), 1, 'its copies are not kept again');
      assert.equal(writes, 1, 'nor written again');
      assert.equal(receipts.flatMap((r) => r.ids).length, 6, 'each copy answered with its receipt');
    } finally {
      consumer.stop();
      await dead.close();
    }
  });

  it('a letter larger than the whole bound is its own final error, never "full": its message stays unacknowledged, nothing is dropped', async () => {
    const dir = join(tmp.dir, 'too-large');
    const dead = new DeadLetters(join(dir, 'letters'), 1, { maxBytes: 1024 * 1024 });
    const file = Buffer.alloc(LIMITS.fileMaxBytes, 0x41);
    await assert.rejects(dead.put(uplinkTopic('cam-1', 'file'), file, rejected), (e: unknown) => e instanceof FieldStreamError && e.code === 'DISTRIBUTOR_DEAD_LETTER_TOO_LARGE' && e.details?.maxBytes === 1024 * 1024);
    assert.deepEqual(readdirSync(join(dir, 'letters')), [], 'an empty folder: no room an operator makes would hold it');
    assert.equal(await dead.put('t/junk', file, invalid), 'excerpt', 'an invalid payload is kept as its excerpt as before');

    await dead.close();

    // Through the consumer: not acknowledged, logged with its code, retried.
    const lines: Record<string, unknown>[] = [];
    const log = createLogger('test', 'info', new Writable({ write: (chunk: Buffer, _e, cb) => (lines.push(...chunk.toString().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)), cb()) }));
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: false, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    const refusing = { description: 'refusing', write: async () => Promise.reject(new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'field type conflict')), close: async () => {} };
    const small = new DeadLetters(join(dir, 'letters'), 1, { maxBytes: 32 * 1024 });
    const mqtt = { reschedulePing: () => undefined, on: () => undefined, options: {} } as unknown as MqttClient;
    const consumer = new Consumer(mqtt, new MessageHandler(refusing, new FileStore(join(dir, 'files')), verifier), small, { initialMs: 10, maxMs: 50 }, undefined, log);
    const acked = { done: false };
    try {
      const big = Buffer.from(JSON.stringify({ v: 1, deviceId: 'sensor-1', dataType: 'timeseries', gatewayId: 'gw', receivedAt: Date.now(), messages: [{ messageId: 'm1', payload: { t: 1, pad: 'x'.repeat(60_000) } }] }));
      mqtt.handleMessage({ cmd: 'publish', topic: uplinkTopic('sensor-1', 'timeseries'), payload: big, qos: 1, dup: false, retain: false } as IPublishPacket, () => (acked.done = true));
      await eventually(() => (lines.some((l) => l.code === 'DISTRIBUTOR_DEAD_LETTER_TOO_LARGE') ? true : undefined), 5_000);
      await sleep(300);
      assert.equal(acked.done, false, 'not acknowledged: it stays in the broker');
      assert.ok(!lines.some((l) => l.code === 'DISTRIBUTOR_DEAD_LETTERS_FULL'), 'never said to wait for room');
      assert.ok(readdirSync(join(dir, 'letters')).every((f) => !readFileSync(join(dir, 'letters', f), 'utf8').includes('"pad"')), 'no letter of it');
    } finally {
      consumer.stop();
      await small.close();
    }
  });
});
