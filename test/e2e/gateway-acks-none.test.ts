import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ACKS_HEADER } from '../../shared/contract/downlink.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';

/**
 * A device that keeps nothing it sends says so on its upgrade request (ACKS_HEADER: none) and gets
 * no ack frames; what it sends is stored as any device's, and what is refused is still answered.
 * The embedded pipeline: a real gateway over TLS, the in-process broker and distributor.
 */
describe('a device that reads no acks (X-FieldStream-Acks: none)', () => {
  let fx: EmbeddedFixture;
  let url: string;
  before(async () => {
    fx = await startEmbeddedFixture(['forgetful-1', 'keeping-1', 'odd-1']);
    url = fx.pipeline.gatewayUrl;
  });
  after(() => fx.stop());

  /** A seed-format reading of `device`, with its own timestamp (so each is its own point). */
  const reading = (device: string, k: number) =>
    JSON.stringify({ deviceId: device, dataType: 'timeseries', payload: { temperature: 20 + k, timestamp: new Date(Date.UTC(2024, 0, 1, 12, 0, k)).toISOString() } });

  it('is welcomed with acks: none, sent no ack for what is stored, and still told what was refused', async () => {
    const d = await RawDevice.connect(url, RawDevice.tlsFor(fx.pki.paths, 'forgetful-1'), { [ACKS_HEADER]: 'none' });
    try {
      await eventually(() => d.welcome ?? undefined, 5_000, 'the welcome');
      assert.equal(d.welcome?.acks, 'none');
      for (let k = 0; k < 5; k++) d.send(reading('forgetful-1', k));
      await eventually(() => (fx.points({ measurement: 'readings', device: 'forgetful-1' }).length === 5 ? true : undefined), 15_000, 'the five readings stored');
      // A frame the gateway refuses is answered, acks or not; it comes after anything the five
      // readings could have been answered with, on the same connection.
      d.send('{not json');
      const frame = await d.next();
      assert.equal(frame.type, 'error', `the first frame after the welcome: ${JSON.stringify(frame)}`);
      assert.equal(d.unread, 0, 'nothing else came');
    } finally {
      d.close();
    }
  });

  it('acks every frame of a device that sends no header, or `all` (the default)', async () => {
    for (const headers of [undefined, { [ACKS_HEADER]: 'all' }]) {
      const d = await RawDevice.connect(url, RawDevice.tlsFor(fx.pki.paths, 'keeping-1'), headers);
      try {
        await eventually(() => d.welcome ?? undefined, 5_000, 'the welcome');
        assert.equal(d.welcome?.acks, undefined, 'the welcome of an acked device has no acks field (older field clients parse it strictly)');
        d.send(reading('keeping-1', headers ? 1 : 0));
        assert.equal((await d.next()).type, 'ack');
      } finally {
        d.close();
      }
    }
  });

  it('refuses any other value with 400 GATEWAY_ACKS_HEADER_INVALID, before the WebSocket opens', async () => {
    for (const value of ['None', 'some', '']) {
      const refused = await RawDevice.connect(url, RawDevice.tlsFor(fx.pki.paths, 'odd-1'), { [ACKS_HEADER]: value }).then(
        (d) => (d.close(), undefined),
        (err: { status?: number; body?: string }) => err,
      );
      assert.equal(refused?.status, 400, `value ${JSON.stringify(value)}`);
      assert.equal(JSON.parse(refused?.body ?? '{}').code, 'GATEWAY_ACKS_HEADER_INVALID');
    }
    assert.ok(fx.logs.codes().includes('GATEWAY_ACKS_HEADER_INVALID'), 'the refusal is logged');
  });
});
