import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, RawDevice } from '../helpers/ws-device.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';

describe('limits at the gateway', () => {
  let fx: EmbeddedFixture;
  before(async () => {
    fx = await startEmbeddedFixture(['flood-1', 'calm-1', 'conn-1', 'conn-2', 'conn-3', 'client-1'], {
      GATEWAY_RATE_MESSAGES_PER_S: '200',
      GATEWAY_RATE_BURST_S: '1',
      GATEWAY_MAX_BATCH: '100',
      GATEWAY_MAX_CONNECTIONS: '3',
    });
  });
  after(() => fx.stop());
  const device = (id: string) => RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, id));

  it("answers a flood with GATEWAY_RATE_LIMITED, and a calm device sharing the gateway sees none of it", async () => {
    const flood = await device('flood-1');
    const calm = await device('calm-1');
    try {
      const frame = (k: number) =>
        JSON.stringify({ deviceId: 'flood-1', batch: Array.from({ length: 100 }, (_, i) => ({ dataType: 'timeseries', messageId: `f${k}-${i}`, payload: { x: i, timestamp: 1760000000000 + k * 100 + i } })) });
      for (let k = 0; k < 40; k++) flood.send(frame(k));
      for (let i = 0; i < 20; i++) {
        calm.send(JSON.stringify({ deviceId: 'calm-1', dataType: 'timeseries', messageId: `c${i}`, payload: { y: i, timestamp: 1760000000000 + i } }));
        const answer = await calm.next();
        assert.deepEqual(answer, { type: 'ack', messageIds: [`c${i}`] });
      }
      let limited = 0;
      let acked = 0;
      // Frames of 100 messages; frames that shared an envelope share one ack frame.
      while (limited + acked < 40) {
        const f = await flood.next();
        if (f.type === 'error' && f.code === 'GATEWAY_RATE_LIMITED') limited++;
        else if (f.type === 'ack') acked += f.messageIds.length / 100;
      }
      assert.ok(limited > 0 && acked > 0, `${acked} frames accepted, ${limited} refused`);
      assert.ok(fx.logs.codes().includes('GATEWAY_RATE_LIMITED'));
      await eventually(() => (fx.points({ measurement: 'readings', device: 'calm-1' }).length === 20 ? true : undefined));
    } finally {
      flood.close();
      calm.close();
    }
  });

  it('the field client backs off when limited and still delivers everything', async () => {
    const field = await startTestFieldClient(fx.pki.paths, 'client-1', fx.pipeline.gatewayUrl, fx.logs.logger);
    try {
      await field.client.submitMany(Array.from({ length: 600 }, (_, i) => ({ dataType: 'timeseries' as const, payload: { z: i, timestamp: 1760000001000 + i } })));
      await eventually(() => (fx.points({ measurement: 'readings', device: 'client-1' }).length === 600 ? true : undefined), 30_000);
    } finally {
      await field.close();
    }
  });

  it('refuses connections past GATEWAY_MAX_CONNECTIONS with 503', async () => {
    await eventually(() => (fx.points({ measurement: 'device_status' }).filter((p) => p.fields.state === 'offline').length >= 3 ? true : undefined));
    const held = [await device('conn-1'), await device('conn-2'), await device('conn-3')];
    try {
      const err = await device('flood-1').then(
        () => assert.fail('connected'),
        (e: { status?: number; body?: string }) => e,
      );
      assert.equal(err.status, 503);
      assert.equal(JSON.parse(err.body ?? '{}').code, 'GATEWAY_TOO_MANY_CONNECTIONS');
    } finally {
      for (const d of held) d.close();
    }
  });
});
