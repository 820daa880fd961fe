import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { IPublishPacket, MqttClient } from 'mqtt';
import { Consumer } from '../../internal-network/distributor/consumer.ts';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import { DistributorMetrics } from '../../internal-network/distributor/metrics.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { FieldStreamError } from '../../shared/errors.ts';
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
    await dead.close();
  });

  it('does not acknowledge a valid envelope the database refused while the folder is full, and acknowledges junk past the bound', async () => {
    const dir = join(tmp.dir, 'consumer');
    const dead = new DeadLetters(join(dir, 'letters'), 1, { maxBytes: 64 * 1024 });
    const log = createLogger('test', 'silent');
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys')), new ReplayWindows(join(dir, 'replay')), { requireSignatures: false, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    const refusing = { description: 'refusing', write: async () => Promise.reject(new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'field type conflict')), close: async () => {} };
    const metrics = new DistributorMetrics();
    const handler = new MessageHandler(refusing, new FileStore(join(dir, 'files')), verifier, metrics);
    const mqtt = { reschedulePing: () => undefined } as unknown as MqttClient;
    const consumer = new Consumer(mqtt, handler, dead, { initialMs: 10, maxMs: 50 }, undefined, log, metrics.deadLetters, metrics.deadLettersNotKept);
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
        const acked = deliver(topic, envelope(i));
        await sleep(100);
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
});
