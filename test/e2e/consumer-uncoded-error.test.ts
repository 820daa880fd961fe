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
 * An error without a code (a bug, a failure nothing foresaw) must not stall the consumer's
 * connection: mqtt.js hands it the next message only after this one's callback, so a message left
 * without one holds every message behind it until the connection drops. It is retried like a failed
 * write, and acknowledged once written.
 */
describe('a consumer whose write fails with an uncoded error (real Mosquitto)', () => {
  let work: ReturnType<typeof tempDir>;
  let broker: { url: string; process: ManagedProcess };
  let publisher: MqttClient;
  before(async () => {
    work = tempDir('consumer-uncoded');
    broker = await startMosquitto(work.dir);
    publisher = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'publisher' });
  });
  after(async () => {
    await publisher?.endAsync();
    await broker?.process.stop();
    work?.cleanup();
  });

  it('retries it, then takes the messages behind it, each acknowledged', async () => {
    const session = { protocolVersion: 5 as const, clientId: 'consumer', clean: false, properties: { sessionExpiryInterval: 300 }, reconnectPeriod: 200 };
    // Keepalive 60 s: a connection stalled by an unacknowledged message would not drop within the test.
    const client = connect(broker.url, { ...session, keepalive: 60 });
    const handled: string[] = [];
    let failures = 0;
    // The first two attempts at the first message fail as a bug would: a plain Error, no code.
    const handler = {
      handle: async (topic: string) => {
        if (topic === 'work/0' && failures < 2) {
          failures++;
          throw new TypeError("Cannot read properties of undefined (reading 'x')");
        }
        handled.push(topic);
        return { points: 1, files: 0 };
      },
      deadLetterReceipts: () => [],
    } as unknown as MessageHandler;
    const consumer = new Consumer(client, handler, new DeadLetters(join(work.dir, 'dead-letter')), { initialMs: 10, maxMs: 100 }, undefined, createLogger('test', 'silent'));
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
