import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';
import { TOPIC_FILTERS } from '../../shared/contract/topics.ts';
import { GatewayEnvelopeSchema, type GatewayEnvelope } from '../../shared/contract/envelope.ts';

/**
 * The gateway puts the readings arriving within GATEWAY_LINGER_MS into one MQTT message, whichever
 * device sent them, one section per device; each message keeps the moment its own frame arrived,
 * which is the time of a reading without its own, and each device gets one ack for the frames that
 * envelope settled.
 */
describe('messages of several frames and devices in one envelope', () => {
  let fx: EmbeddedFixture;
  let watcher: MqttClient;
  const envelopes: GatewayEnvelope[] = [];
  before(async () => {
    fx = await startEmbeddedFixture(['slow-1', 'slow-2'], { GATEWAY_LINGER_MS: '500' });
    const svc = fx.pki.paths.service('internal/distributor');
    watcher = await connectAsync(`mqtts://127.0.0.1:${fx.pipeline.broker.port}`, {
      ca: readFileSync(fx.pki.paths.publicCa), cert: readFileSync(svc.cert), key: readFileSync(svc.key), protocolVersion: 4, clientId: 'envelope-watcher',
    });
    watcher.on('message', (_topic, payload) => envelopes.push(GatewayEnvelopeSchema.parse(JSON.parse(payload.toString('utf8')))));
    await watcher.subscribeAsync(TOPIC_FILTERS.gatewayUplink, { qos: 1 });
  });
  after(async () => {
    await watcher.endAsync();
    await fx.stop();
  });

  it('keeps each message its own receive time, said in the envelope only where it differs', async () => {
    const one = await RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, 'slow-1'));
    const two = await RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, 'slow-2'));
    try {
      one.send(JSON.stringify({ deviceId: 'slow-1', dataType: 'timeseries', messageId: 'first', payload: { level: 1 } }));
      await new Promise((r) => setTimeout(r, 200));
      two.send(JSON.stringify({ deviceId: 'slow-2', dataType: 'timeseries', messageId: 'other', payload: { level: 3 } }));
      one.send(JSON.stringify({ deviceId: 'slow-1', dataType: 'timeseries', messageId: 'second', payload: { level: 2 } }));
      // Settled by the envelope's one PUBACK: one ack frame per device names all of its messages.
      assert.deepEqual(await one.next(), { type: 'ack', messageIds: ['first', 'second'] });
      assert.deepEqual(await two.next(), { type: 'ack', messageIds: ['other'] });
    } finally {
      one.close();
      two.close();
    }
    const [env] = await eventually(() => (envelopes.length > 0 ? envelopes : undefined));
    assert.equal(envelopes.length, 1, 'one MQTT message for the frames of both devices');
    assert.deepEqual(
      env?.devices.map((s) => [s.deviceId, s.messages.map((m) => m.messageId)]),
      [['slow-1', ['first', 'second']], ['slow-2', ['other']]],
    );
    const [first, second] = env?.devices[0]?.messages ?? [];
    assert.equal(first?.receivedAt, undefined, "the first frame's time is the envelope's");
    const later = (second?.receivedAt ?? 0) - (env?.receivedAt ?? 0);
    assert.ok(later >= 150, `the second frame arrived ${later} ms after the first`);
    const points = await eventually(() => {
      const pts = [...fx.points({ measurement: 'readings', device: 'slow-1' }), ...fx.points({ measurement: 'readings', device: 'slow-2' })];
      return pts.length === 3 ? pts : undefined;
    });
    const at = (level: number) => points.find((p) => p.fields.level === level)?.time ?? NaN;
    assert.equal(at(1), env?.receivedAt);
    assert.equal(at(2), second?.receivedAt, 'the second reading is stored at its own arrival');
    assert.equal(at(3), env?.devices[1]?.messages[0]?.receivedAt, "the other device's reading at its own arrival");
    assert.equal(points.filter((p) => p.tags.device === 'slow-2').length, 1);
  });
});
