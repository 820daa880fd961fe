import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect, connectAsync, type MqttClient } from 'mqtt';
import { Consumer } from '../../internal-network/distributor/consumer.ts';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import type { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { createLogger } from '../../shared/logger.ts';
import { tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * The distributor's consumer writes each message before it takes the next (its acknowledgement
 * waits for the write), so under a backlog the broker's answer to a keepalive ping waits behind
 * queued messages. The messages themselves show the connection alive: a slow consumer with a
 * backlog longer than its keepalive keeps its connection, and takes every message once.
 */
describe('a consumer behind a backlog keeps its connection (real Mosquitto)', () => {
  let work: ReturnType<typeof tempDir>;
  let broker: { url: string; process: ManagedProcess };
  let publisher: MqttClient;
  before(async () => {
    work = tempDir('consumer-keepalive');
    broker = await startMosquitto(work.dir);
    publisher = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'publisher' });
  });
  after(async () => {
    await publisher?.endAsync();
    await broker?.process.stop();
    work?.cleanup();
  });

  it('is not dropped for a late PINGRESP while messages keep coming', async () => {
    // Keepalive 1 s: mqtt.js pings after 1 s of silence and gives up 1.5 s after its last sign of life.
    const client = connect(broker.url, { protocolVersion: 5, clientId: 'slow-consumer', keepalive: 1, clean: false, properties: { sessionExpiryInterval: 300 }, reconnectPeriod: 200 });
    const handled: string[] = [];
    let closes = 0;
    client.on('close', () => closes++);
    // Each message takes 300 ms to "write": 16 of them are a backlog of almost 5 s.
    const handler = {
      handle: async (topic: string) => {
        await new Promise((r) => setTimeout(r, 300));
        handled.push(topic);
        return { points: 1, files: 0 };
      },
      deadLetterReceipts: () => [],
    } as unknown as MessageHandler;
    const consumer = new Consumer(client, handler, new DeadLetters(join(work.dir, 'dead-letter')), { initialMs: 10, maxMs: 100 }, undefined, createLogger('test', 'silent'));
    try {
      await new Promise<void>((resolve) => client.once('connect', () => resolve()));
      await client.subscribeAsync('backlog/#', { qos: 1 });
      for (let i = 0; i < 16; i++) await publisher.publishAsync(`backlog/${i}`, String(i), { qos: 1 });
      await eventually(() => (handled.length >= 16 ? true : undefined), 15_000);
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(closes, 0, 'the connection was never dropped');
      assert.deepEqual(handled, Array.from({ length: 16 }, (_, i) => `backlog/${i}`), 'each message once, in order');
    } finally {
      consumer.stop();
      client.end(true);
    }
  });
});
