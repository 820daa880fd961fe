import assert from 'node:assert/strict';
import { once } from 'node:events';
import { appendFileSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { mqttInput } from '../../field-client/src/inputs/mqtt-input.ts';
import { publishDigest } from '../../field-client/src/inputs/mqtt-resends.ts';
import { TAKEN_FILE } from '../../field-client/src/inputs/mqtt-taken-file.ts';
import { isolatedFieldClient } from '../helpers/field.ts';
import { localDevice } from '../helpers/local-device.ts';
import { tempDir } from '../helpers/pki.ts';
import { until } from '../helpers/processes.ts';
import { LIMITS } from '../../shared/limits.ts';

const DEVICE = 'dev-mqtt-restart';
const TOPIC = 'fieldstream/local/timeseries';

/** A sensor as its own bytes: CONNECT, then QoS 1 publishes whose DUP flag and packet identifier it chooses. */
async function sensor(port: number, clientId: string) {
  // The client is ready once its HTTP input listens (ManagedProcess's ready port); its MQTT input
  // opens in the same start, a moment later or sooner: connection refused until then.
  let socket: Socket | undefined;
  for (const deadline = Date.now() + 15_000; socket === undefined; ) {
    const s = connect(port, '127.0.0.1');
    try {
      await once(s, 'connect');
      socket = s;
    } catch (err) {
      s.destroy();
      if ((err as NodeJS.ErrnoException).code !== 'ECONNREFUSED' || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const got: Packet[] = [];
  parser.on('packet', (p: Packet) => got.push(p));
  socket.on('data', (d: Buffer) => parser.parse(d));
  socket.on('error', () => undefined);
  socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive: 0 }));
  await until('CONNACK', () => got.some((p) => p.cmd === 'connack'));
  const pubacks = () => got.filter((p): p is Packet & { messageId: number } => p.cmd === 'puback').map((p) => p.messageId);
  return {
    pubacks,
    send(messageId: number, payload: string, dup: boolean) {
      socket.write(mqttPacket.generate({ cmd: 'publish', topic: TOPIC, payload: Buffer.from(payload), qos: 1, messageId, dup, retain: false }));
    },
    async publish(messageId: number, payload: string, dup: boolean) {
      const before = pubacks().filter((id) => id === messageId).length;
      this.send(messageId, payload, dup);
      await until(`PUBACK ${messageId}`, () => pubacks().filter((id) => id === messageId).length > before, 10_000);
    },
    end: () => socket.destroy(),
  };
}

/**
 * The local MQTT input's record of publishes taken across a SIGKILL of the field client: a sensor
 * whose PUBACK was lost with the process sends the publish again flagged DUP once the client is
 * back (MQTT 3.1.1 §3.3.1.1), and it is acknowledged, not queued again. The field client is its own
 * process, started again on the same data folder; nothing listens at its gateway's address, so what
 * it queued stays in its queue (its depth in /status). Kept in memory only, the copy was a second row.
 */
describe('local MQTT input: a publish sent again (DUP) after a SIGKILL of the field client', () => {
  const f = isolatedFieldClient('mqtt-resends-restart', DEVICE, ({ mqttPort }) => ({ FIELD_MQTT_HOST: '127.0.0.1', FIELD_MQTT_PORT: String(mqttPort) }));

  const depth = async () => ((await (await fetch(`http://127.0.0.1:${f.httpPort}/status`)).json()) as { queue: { depth: number } }).queue.depth;

  it('is acknowledged and queued once; a new publish, or a DUP of other bytes, is taken', async () => {
    // No timestamp: queued again, the copy would be a point of its own, stamped as it was queued.
    const a = await sensor(f.mqttPort, 'sensor-7');
    await a.publish(7, '{"temperature": 21.5}', false);
    await a.publish(8, '[{"temperature": 21.6}, {"humidity": 40}]', false);
    assert.equal(await depth(), 3);
    await f.client.kill();
    a.end();
    await f.client.start();

    const b = await sensor(f.mqttPort, 'sensor-7');
    try {
      await b.publish(7, '{"temperature": 21.5}', true);
      await b.publish(8, '[{"temperature": 21.6}, {"humidity": 40}]', true);
      assert.equal(await depth(), 3, 'the copies sent again acknowledged, not queued');
      // Another client's identifier 7, a DUP of other bytes (its first copy lost on the way), and a
      // new publish reusing the identifier: each taken.
      const other = await sensor(f.mqttPort, 'sensor-8');
      await other.publish(7, '{"temperature": 21.5}', true);
      other.end();
      await b.publish(7, '{"temperature": 30}', true);
      await b.publish(8, '[{"temperature": 21.6}, {"humidity": 40}]', false);
      assert.equal(await depth(), 7);
    } finally {
      b.end();
    }
  });

  it('a damaged record file at the start: its damaged lines skipped and counted, the others kept, the client up', async () => {
    const a = await sensor(f.mqttPort, 'sensor-9');
    await a.publish(9, '{"rain_mm": 0.2}', false);
    const queued = await depth();
    await f.client.kill();
    a.end();
    appendFileSync(join(f.dataDir, TAKEN_FILE), '{"key":"9 =torn","digest":"abc","tak');
    appendFileSync(join(f.dataDir, TAKEN_FILE), '\n{"key":"9 =sensor-9","digest":7,"taken":true}\n');
    appendFileSync(join(f.dataDir, TAKEN_FILE), Buffer.from([0xff, 0xfe, 0x00, 0x0a]));
    await f.client.start();

    const b = await sensor(f.mqttPort, 'sensor-9');
    try {
      await b.publish(9, '{"rain_mm": 0.2}', true);
      assert.equal(await depth(), queued, 'the line before the damage is read: not queued again');
      const said = readFileSync(join(f.work.dir, 'field-client.log'), 'utf8').split('\n').filter((l) => l.includes('FIELD_INPUT_TAKEN_DAMAGED'));
      assert.equal(said.length, 1, 'said once, at the start');
      assert.equal((JSON.parse(said[0] as string) as { lines: number }).lines, 3);
    } finally {
      b.end();
    }
  });
});

/**
 * The instant between the queue's write and the PUBACK: a publish numbered and written by the queue,
 * the kill before it is acknowledged. In this process, so that the kill lands there every time: the
 * first field client's append is never told done, and its queue is left as a kill leaves it,
 * unclosed; a second opens the same folder.
 */
describe('local MQTT input: a publish whose PUBACK a kill cut off after the queue wrote it', () => {
  const tmp = tempDir('mqtt-resends-window');
  after(() => tmp.cleanup());

  it('is recognised at the next start (DUP): acknowledged, queued once; one never written is taken', async () => {
    const dir = join(tmp.dir, 'data');
    const d1 = await localDevice(dir);
    const submitMany = d1.client.submitMany.bind(d1.client);
    d1.client.submitMany = (items) => {
      void submitMany(items);
      return new Promise(() => undefined);
    };
    const in1 = mqttInput(d1.client, '127.0.0.1', 0, 'fieldstream/local', d1.logs.logger, undefined, undefined, dir);
    await in1.start();
    const s1 = await sensor(in1.port as number, 'sensor-w');
    s1.send(3, '{"temperature": 5}', false);
    await until('the reading written', () => d1.queue.find(() => true).length === 1);
    s1.end();
    d1.client.stop();
    // Killed here: never acknowledged. What a kill leaves when it comes after a publish's line and
    // before the queue wrote a byte of it: numbers the queue never had.
    appendFileSync(join(dir, TAKEN_FILE), `${JSON.stringify({ key: '4 =sensor-w', digest: publishDigest(TOPIC, '{"temperature": 6}'), taking: { first: d1.queue.nextNumber, count: 1 } })}\n`);

    const d2 = await localDevice(dir);
    const in2 = mqttInput(d2.client, '127.0.0.1', 0, 'fieldstream/local', d2.logs.logger, undefined, undefined, dir);
    await in2.start();
    const s2 = await sensor(in2.port as number, 'sensor-w');
    try {
      await s2.publish(3, '{"temperature": 5}', true);
      assert.equal(d2.queue.depth, 1, 'acknowledged, queued once');
      await s2.publish(4, '{"temperature": 6}', true);
      assert.equal(d2.queue.depth, 2, 'the one never written is taken');
    } finally {
      s2.end();
      await in2.close();
      await d2.close();
    }
  });

  it('the file is rewritten within LIMITS.localMqttTakenPublishesMax', async () => {
    const dir = join(tmp.dir, 'bound');
    const limits = LIMITS as unknown as Record<string, number>;
    const saved = limits.localMqttTakenPublishesMax as number;
    limits.localMqttTakenPublishesMax = 3;
    try {
      const d = await localDevice(dir);
      const input = mqttInput(d.client, '127.0.0.1', 0, 'fieldstream/local', d.logs.logger, undefined, undefined, dir);
      await input.start();
      const s = await sensor(input.port as number, 'sensor-b');
      for (let i = 1; i <= 40; i++) await s.publish(i, `{"temperature": ${i}}`, false);
      s.end();
      const lines = readFileSync(join(dir, TAKEN_FILE), 'utf8').split('\n').filter((l) => l.length > 0).length;
      assert.ok(lines <= 2 * 3, `${lines} lines`);
      await input.close();
      await d.close();
    } finally {
      limits.localMqttTakenPublishesMax = saved;
    }
  });
});
