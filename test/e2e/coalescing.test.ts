import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';

/**
 * The gateway puts a device's messages arriving within GATEWAY_LINGER_MS into one MQTT message;
 * each keeps the moment its own frame arrived, which is the time of a reading without its own, and
 * the device gets one ack for the frames that envelope settled.
 */
describe('messages of several frames in one envelope', () => {
  let fx: EmbeddedFixture;
  let watcher: MqttClient;
  const envelopes: Array<{ receivedAt: number; messages: Array<{ messageId: string; receivedAt?: number }> }> = [];
  before(async () => {
    fx = await startEmbeddedFixture(['slow-1'], { GATEWAY_LINGER_MS: '500' });
    const svc = fx.pki.paths.service('internal/distributor');
    watcher = await connectAsync(`mqtts://127.0.0.1:${fx.pipeline.broker.port}`, {
      ca: readFileSync(fx.pki.paths.publicCa), cert: readFileSync(svc.cert), key: readFileSync(svc.key), protocolVersion: 4, clientId: 'envelope-watcher',
    });
    watcher.on('message', (_topic, payload) => envelopes.push(JSON.parse(payload.toString('utf8'))));
    await watcher.subscribeAsync(uplinkTopic('slow-1', 'timeseries'), { qos: 1 });
  });
  after(async () => {
    await watcher.endAsync();
    await fx.stop();
  });

  it('keeps each message its own receive time, said in the envelope only where it differs', async () => {
    const d = await RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, 'slow-1'));
    try {
      d.send(JSON.stringify({ deviceId: 'slow-1', dataType: 'timeseries', messageId: 'first', payload: { level: 1 } }));
      await new Promise((r) => setTimeout(r, 200));
      d.send(JSON.stringify({ deviceId: 'slow-1', dataType: 'timeseries', messageId: 'second', payload: { level: 2 } }));
      // Settled by the envelope's one PUBACK: one ack frame names both.
      assert.deepEqual(await d.next(), { type: 'ack', messageIds: ['first', 'second'] });
    } finally {
      d.close();
    }
    const [env] = await eventually(() => (envelopes.length > 0 ? envelopes : undefined));
    assert.equal(envelopes.length, 1, 'one MQTT message for both frames');
    assert.deepEqual(env?.messages.map((m) => m.messageId), ['first', 'second']);
    assert.equal(env?.messages[0]?.receivedAt, undefined, "the first frame's time is the envelope's");
    const later = (env?.messages[1]?.receivedAt ?? 0) - (env?.receivedAt ?? 0);
    assert.ok(later >= 150, `the second frame arrived ${later} ms after the first`);
    const points = await eventually(() => {
      const pts = fx.points({ measurement: 'readings', device: 'slow-1' });
      return pts.length === 2 ? pts : undefined;
    });
    const at = (level: number) => points.find((p) => p.fields.level === level)?.time ?? NaN;
    assert.equal(at(1), env?.receivedAt);
    assert.equal(at(2), env?.messages[1]?.receivedAt, 'the second reading is stored at its own arrival');
  });
});
