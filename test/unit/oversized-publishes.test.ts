import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import mqtt from 'mqtt';
import { skipOversizedPublishes, type SkippedPublish } from '../../shared/mqtt/oversized-publishes.ts';
import { createLogger } from '../../shared/logger.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * The framing the Sparkplug input reads its broker's packets with (shared/mqtt/oversized-publishes.ts),
 * fed raw frames by a hand-written broker on a real socket: a PUBLISH over the bound is skipped
 * whatever chunks its bytes come in, one at QoS 1 acknowledged, and the packets around it reach
 * mqtt.js intact; any other packet over the bound closes the connection.
 */
const MAX = 100;
const publish = (topic: string, payload: Buffer, qos: 0 | 1, id = 0): Buffer => {
  const t = Buffer.from(topic);
  const body = Buffer.concat([Buffer.from([t.length >> 8, t.length & 0xff]), t, qos ? Buffer.from([id >> 8, id & 0xff]) : Buffer.alloc(0), payload]);
  const len: number[] = [];
  let n = body.length;
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    len.push(b);
  } while (n > 0);
  return Buffer.concat([Buffer.from([0x30 | (qos << 1), ...len]), body]);
};
const CONNACK = Buffer.from([0x20, 0x02, 0x00, 0x00]);

describe('skipping PUBLISH packets over the bound', () => {
  let sockets: Socket[] = [];
  const received: Buffer[] = [];
  let onConnect: (s: Socket) => void = () => undefined;
  const server = createServer((s) => {
    sockets.push(s);
    let first = true;
    s.on('data', (d) => {
      received.push(d);
      if (first) {
        first = false; // the CONNECT
        s.write(CONNACK);
        onConnect(s);
      }
    });
    s.on('error', () => undefined);
  });
  before(() => new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r())));
  after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });

  const client = () => {
    const skipped: SkippedPublish[] = [];
    const messages: Array<[string, string]> = [];
    const c = mqtt.connect(`mqtt://127.0.0.1:${(server.address() as AddressInfo).port}`, { manualConnect: true, reconnectPeriod: 0, protocolVersion: 4 });
    skipOversizedPublishes(c, MAX, createLogger('test', 'silent'), (p) => skipped.push(p));
    c.on('message', (topic, payload) => messages.push([topic, payload.toString()]));
    c.on('error', () => undefined);
    c.connect();
    return { c, skipped, messages };
  };

  it('skips one at QoS 0 and one at QoS 1 (acknowledged) sent a byte at a time, and reads the packets around them', async () => {
    sockets = [];
    received.length = 0;
    onConnect = (s) => {
      const frames = Buffer.concat([
        publish('a/before', Buffer.from('one'), 0),
        publish('a/big0', Buffer.alloc(MAX * 3, 1), 0),
        publish('a/big1', Buffer.alloc(MAX * 200, 2), 1, 0x1234),
        publish('a/after', Buffer.from('two'), 0),
      ]);
      let i = 0;
      const step = () => {
        if (i >= frames.length || s.destroyed) return;
        s.write(frames.subarray(i, i + 1));
        i++;
        setImmediate(step);
      };
      step();
    };
    const { c, skipped, messages } = client();
    try {
      await eventually(() => (messages.length === 2 ? true : undefined), 20_000, 'both small messages read');
      assert.deepEqual(messages, [['a/before', 'one'], ['a/after', 'two']]);
      assert.deepEqual(skipped.map((p) => p.topic), ['a/big0', 'a/big1']);
      const puback = Buffer.from([0x40, 0x02, 0x12, 0x34]);
      await eventually(() => (Buffer.concat(received).includes(puback) ? true : undefined), 5_000, 'the PUBACK of the one at QoS 1');
      assert.equal(c.connected, true);
    } finally {
      await c.endAsync(true);
    }
  });

  it('closes the connection at any other packet over the bound', async () => {
    sockets = [];
    onConnect = (s) => s.write(Buffer.concat([Buffer.from([0x90, 0x80, 0x02]), Buffer.alloc(256)])); // a SUBACK of 256 bytes
    const { c } = client();
    const codes: unknown[] = [];
    c.on('error', (err) => codes.push((err as Error & { code?: string }).code));
    await new Promise<void>((r) => c.once('close', () => r()));
    await c.endAsync(true);
    assert.deepEqual(codes, ['MQTT_PACKET_TOO_LARGE']);
  });
});
