import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { eventually } from '../helpers/ws-device.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { gatewayUplinkTopic, uplinkTopic } from '../../shared/contract/topics.ts';

/**
 * What reaches the internal side has crossed the DMZ: the distributor treats it as hostile. Here a
 * compromised gateway (its real certificate) publishes garbage straight to the broker.
 */
describe('the distributor facing a compromised DMZ', () => {
  let fx: EmbeddedFixture;
  let gw: MqttClient;
  before(async () => {
    fx = await startEmbeddedFixture([]);
    const svc = fx.pki.paths.service('dmz/gateway');
    gw = await connectAsync(`mqtts://127.0.0.1:${fx.pipeline.broker.port}`, {
      ca: readFileSync(fx.pki.paths.publicCa),
      cert: readFileSync(svc.cert),
      key: readFileSync(svc.key),
      protocolVersion: 4,
      clientId: 'compromised-gateway',
    });
  });
  after(async () => {
    await gw.endAsync();
    await fx.stop();
  });

  const envelope = (deviceId: string, dataType: string, payload: unknown) =>
    JSON.stringify({ v: 1, deviceId, dataType, gatewayId: 'gw', receivedAt: Date.now(), messages: [{ messageId: 'm1', payload }] });

  it('keeps invalid payloads as dead letters, writes none of them, and carries on', async () => {
    const hostile: Array<[string, string]> = [
      [uplinkTopic('cam-1', 'file'), envelope('cam-1', 'file', { filename: '../../../../tmp/owned', data: 'aGk=' })],
      [uplinkTopic('cam-1', 'timeseries'), 'this is not json'],
      [uplinkTopic('cam-1', 'timeseries'), envelope('cam-2', 'timeseries', { t: 1 })], // envelope disagrees with its topic
      [uplinkTopic('cam-1', 'timeseries'), envelope('cam-1', 'timeseries', { t: { $gt: 1 } })],
      // nested deep enough (200 KB of brackets) to overflow any recursive walk of it
      [uplinkTopic('cam-1', 'response'), envelope('cam-1', 'response', { commandId: 'c-1', status: 'completed', result: 0 }).replace('"result":0', `"result":${'['.repeat(100_000)}${']'.repeat(100_000)}`)],
      // 15 MiB of empty objects: 5 million of them, refused before they are parsed (LIMITS.envelopeMaxValues)
      [uplinkTopic('cam-1', 'timeseries'), `{"a":[${'{},'.repeat(5 * 1024 * 1024)}{}]}`],
    ];
    for (const [topic, payload] of hostile) await gw.publishAsync(topic, payload, { qos: 1 });
    await gw.publishAsync(uplinkTopic('cam-1', 'timeseries'), envelope('cam-1', 'timeseries', { good: 1, timestamp: 1700000000000 }), { qos: 1 });

    await eventually(() => (fx.points({ measurement: 'readings', device: 'cam-1' }).length === 1 ? true : undefined));
    const letters = await eventually(() => {
      const files = existsSync(fx.data.deadLetters) ? readdirSync(fx.data.deadLetters) : [];
      const lines = files.flatMap((f) => readFileSync(join(fx.data.deadLetters, f), 'utf8').trim().split('\n').filter(Boolean));
      return lines.length >= 6 ? lines.map((l) => JSON.parse(l) as { code: string; topic: string; payloadBase64: string }) : undefined;
    });
    assert.deepEqual(letters.map((l) => l.code), Array(6).fill('CONTRACT_INVALID_ENVELOPE'));
    assert.equal(Buffer.from(letters[1]!.payloadBase64, 'base64').toString(), 'this is not json', 'kept whole');
    assert.ok(!existsSync('/tmp/owned'));
    assert.ok(!existsSync(fx.data.files) || readdirSync(fx.data.files).length === 0);
    assert.deepEqual(fx.points({ device: 'cam-1' }).map((p) => p.fields), [{ good: 1 }]);
  });

  it("keeps a gateway's envelope that names another gateway, or a device twice, as a dead letter; writes a valid one's every section", async () => {
    const shared = (gatewayId: string, devices: Array<[string, unknown]>) =>
      JSON.stringify({ v: 1, gatewayId, dataType: 'timeseries', receivedAt: Date.now(), devices: devices.map(([deviceId, payload], i) => ({ deviceId, messages: [{ messageId: `s${i}`, payload }] })) });
    const letters = () => {
      const files = existsSync(fx.data.deadLetters) ? readdirSync(fx.data.deadLetters) : [];
      return files.flatMap((f) => readFileSync(join(fx.data.deadLetters, f), 'utf8').trim().split('\n').filter(Boolean)).map((l) => JSON.parse(l) as { code: string; topic: string });
    };
    const before = letters().length;
    await gw.publishAsync(gatewayUplinkTopic('gw-a'), shared('gw-b', [['cam-5', { t: 1 }]]), { qos: 1 }); // not its topic
    await gw.publishAsync(gatewayUplinkTopic('gw-a'), shared('gw-a', [['cam-5', { t: 2 }], ['cam-5', { t: 3 }]]), { qos: 1 }); // one device twice
    await gw.publishAsync(gatewayUplinkTopic('gw-a'), shared('gw-a', [['cam-5', { t: 4, timestamp: 1700000000001 }], ['cam-6', { t: 5, timestamp: 1700000000002 }]]), { qos: 1 });
    await eventually(() => (fx.points({ measurement: 'readings', device: 'cam-6' }).length === 1 ? true : undefined));
    const added = await eventually(() => (letters().length >= before + 2 ? letters().slice(before) : undefined));
    assert.deepEqual(added.map((l) => [l.code, l.topic]), Array(2).fill(['CONTRACT_INVALID_ENVELOPE', gatewayUplinkTopic('gw-a')]));
    assert.deepEqual(fx.points({ device: 'cam-5' }).map((p) => p.fields), [{ t: 4 }], 'only the valid envelope was written');
    assert.deepEqual(fx.points({ device: 'cam-6' }).map((p) => p.fields), [{ t: 5 }]);
  });
});
