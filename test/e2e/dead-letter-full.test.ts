import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect, connectAsync, type MqttClient } from 'mqtt';
import { Consumer } from '../../internal-network/distributor/consumer.ts';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import { DistributorMetrics } from '../../internal-network/distributor/metrics.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { InfluxV1Sink } from '../../internal-network/distributor/sinks/influx-v1.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { TOPIC_FILTERS, uplinkTopic } from '../../shared/contract/topics.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * A message holding a device's data that the database refuses (a field that changed type) is kept
 * as a dead letter before it is acknowledged. When the dead-letter folder is at its bound
 * (DEAD_LETTER_MAX_BYTES), it is not acknowledged at all: the broker keeps it, and gives it again
 * to the distributor's persistent session after a restart, by which time an operator may have made
 * room. Real Mosquitto, real InfluxDB, the distributor's own consumer, handler and dead-letter store.
 */
const DB = 'deadletters';
const DEVICE = 'sensor-1';
const BOUND = 64 * 1024;
const T0 = 1_700_000_000_000;

describe('a refused message while the dead-letter folder is full (real Mosquitto and InfluxDB)', () => {
  const work = tempDir('dead-letter-full');
  let broker: { url: string; process: ManagedProcess };
  let influx: InfluxV1;
  let publisher: MqttClient;
  before(async () => {
    broker = await startMosquitto(work.dir);
    influx = await InfluxV1.start(join(work.dir, 'influx'), DB);
    publisher = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'dmz-bridge' });
  });
  after(async () => {
    await publisher?.endAsync();
    await broker?.process.stop();
    await influx?.process.stop();
    work.cleanup();
  });

  const letters = join(work.dir, 'letters');
  /** The distributor's consumer on a persistent session of its own, as distributor.ts runs it. */
  async function distributor(logs: LogCapture) {
    const client = connect(broker.url, { protocolVersion: 5, clientId: 'distributor-1', clean: false, properties: { sessionExpiryInterval: 300 }, reconnectPeriod: 200 });
    const sink = new InfluxV1Sink({ url: influx.url, database: DB, username: influx.user, password: influx.password, timeoutMs: 5000 });
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(work.dir, 'keys')), new ReplayWindows(join(work.dir, 'replay')), { requireSignatures: false, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, logs.logger);
    const metrics = new DistributorMetrics();
    const handler = new MessageHandler(sink, new FileStore(join(work.dir, 'files')), verifier, metrics);
    const dead = new DeadLetters(letters, 1, { maxBytes: BOUND });
    const consumer = new Consumer(client, handler, dead, { initialMs: 20, maxMs: 200 }, undefined, logs.logger, metrics.deadLetters, metrics.deadLettersNotKept);
    await new Promise<void>((resolve) => client.once('connect', () => resolve()));
    await client.subscribeAsync(TOPIC_FILTERS.uplink, { qos: 1 });
    return {
      /** A kill: no clean disconnect, whatever waits is left unacknowledged. */
      async kill() {
        consumer.stop();
        client.end(true);
        await dead.close();
      },
    };
  }
  /** The message ids kept in the dead-letter folder, in the order kept. */
  const kept = (): string[] =>
    (existsSync(letters) ? readdirSync(letters) : [])
      .flatMap((f) => readFileSync(join(letters, f), 'utf8').trim().split('\n').filter(Boolean))
      .map((l) => JSON.parse(l) as { payloadBase64: string })
      .flatMap((l) => (JSON.parse(Buffer.from(l.payloadBase64, 'base64').toString()) as { messages: Array<{ messageId: string }> }).messages.map((m) => m.messageId));

  it('is not acknowledged: the broker gives it again after a restart, and it is kept once there is room; none is kept twice', async () => {
    // The field "t" is a string in this shard: every numeric "t" is refused (400, field type conflict).
    await new InfluxV1Sink({ url: influx.url, database: DB, username: influx.user, password: influx.password, timeoutMs: 5000 }).write([
      { measurement: 'readings', tags: { device: DEVICE }, fields: { t: 'text' }, time: T0 },
    ]);
    const logs = new LogCapture();
    const first = await distributor(logs);
    const ids = Array.from({ length: 6 }, (_, i) => `m${i}`);
    for (const [i, id] of ids.entries()) {
      // About 20 KB each: two or three fill the 64 KiB folder.
      const envelope = { v: 1, deviceId: DEVICE, dataType: 'timeseries', gatewayId: 'gw', receivedAt: Date.now(), messages: [{ messageId: id, payload: { t: i, timestamp: T0 + 1 + i, pad: 'x'.repeat(15_000) } }] };
      await publisher.publishAsync(uplinkTopic(DEVICE, 'timeseries'), JSON.stringify(envelope), { qos: 1 });
    }
    await eventually(() => (logs.codes().includes('DISTRIBUTOR_DEAD_LETTERS_FULL') ? true : undefined), 15_000, 'the folder full');
    const before = kept();
    assert.ok(before.length > 0 && before.length < ids.length, `${before.length} kept before the folder was full`);
    assert.deepEqual(before, ids.slice(0, before.length), 'in order');
    await first.kill();

    // The operator moves the letters away (they keep them elsewhere), and the distributor restarts.
    const moved = before;
    rmSync(letters, { recursive: true, force: true });
    const second = await distributor(new LogCapture());
    try {
      await eventually(() => (moved.length + kept().length >= ids.length ? true : undefined), 15_000, 'the rest given again by the broker, and kept');
      assert.deepEqual([...moved, ...kept()], ids, 'every refused message kept once: none lost, none twice');
      const rows = await influx.rows(DB, `SELECT count(*) FROM readings WHERE device = '${DEVICE}'`);
      assert.equal(rows[0]?.count_t, 1, 'none of them written (only the string that made them conflict)');
    } finally {
      await second.kill();
    }
  });
});
