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
 * backlog longer than its keepalive keeps its connection, and takes every message once. And a
 * message whose write fails without an error code is retried, not left to stall the connection.
 */
describe("the distributor's consumer keeps its connection flowing (real Mosquitto)", () => {
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
  /** The distributor's consumer on `client`, its message handler (not under test here) `write` for each message. */
  const consumerOf = (client: MqttClient, write: (topic: string) => Promise<void>) => {
    const handler = {
      handle: async (topic: string) => {
        await write(topic);
        return { points: 1, files: 0 };
      },
      deadLetterReceipts: () => [],
    } as unknown as MessageHandler;
    return new Consumer(client, handler, new DeadLetters(join(work.dir, 'dead-letter')), { initialMs: 10, maxMs: 100 }, undefined, createLogger('test', 'silent'));
  };

  it('behind a backlog, is not dropped for a late PINGRESP while messages keep coming', async () => {
    // Keepalive 1 s: mqtt.js pings after 1 s of silence and gives up 1.5 s after its last sign of life.
    const client = connect(broker.url, { protocolVersion: 5, clientId: 'slow-consumer', keepalive: 1, clean: false, properties: { sessionExpiryInterval: 300 }, reconnectPeriod: 200 });
    const handled: string[] = [];
    let closes = 0;
    client.on('close', () => closes++);
    // Each message takes 300 ms to "write": 16 of them are a backlog of almost 5 s.
    const consumer = consumerOf(client, async (topic) => {
      await new Promise((r) => setTimeout(r, 300));
      handled.push(topic);
    });
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

  // An error without a code (a bug, a failure nothing foresaw) must not stall the connection: mqtt.js
  // hands the next message only after this one's callback, so a message left without one holds every
  // message behind it until the connection drops. It is retried like a failed write.
  it('retries a message whose write failed with an error that has no code, then takes the messages behind it, each acknowledged', async () => {
    const session = { protocolVersion: 5 as const, clientId: 'consumer', clean: false, properties: { sessionExpiryInterval: 300 }, reconnectPeriod: 200 };
    // Keepalive 60 s: a connection stalled by an unacknowledged message would not drop within the test.
    const client = connect(broker.url, { ...session, keepalive: 60 });
    const handled: string[] = [];
    let failures = 0;
    // The first two attempts at the first message fail as a bug would: a plain Error, no code.
    const consumer = consumerOf(client, async (topic) => {
      if (topic === 'work/0' && failures < 2) {
        failures++;
        throw new TypeError("Cannot read properties of undefined (reading 'x')");
      }
      handled.push(topic);
    });
    try {
      await new Promise<void>((resolve) => client.once('connect', () => resolve()));
      await client.subscribeAsync('work/#', { qos: 1 });
      for (let i = 0; i < 3; i++) await publisher.publishAsync(`work/${i}`, String(i), { qos: 1 });
      await eventually(() => (handled.length >= 3 ? true : undefined), 10_000);
      assert.deepEqual(handled, ['work/0', 'work/1', 'work/2'], 'the failing message retried until written, then the others, in order');
      assert.equal(failures, 2);
      assert.equal(consumer.stats.retries, 2);
      assert.equal(consumer.stats.deadLetters, 0, 'a bug is no verdict on the message: not a dead letter');
    } finally {
      consumer.stop();
      await client.endAsync();
    }
    // Acknowledged: the session, taken up again, has nothing to deliver again.
    const again = await connectAsync(broker.url, { ...session, clientId: 'consumer' });
    const redelivered: string[] = [];
    again.on('message', (topic) => redelivered.push(topic));
    await new Promise((r) => setTimeout(r, 1000));
    await again.endAsync();
    assert.deepEqual(redelivered, []);
  });
});
