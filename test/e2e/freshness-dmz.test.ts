import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { eventually } from '../helpers/ws-device.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { parseSigningKey, signMessage } from '../../shared/security/message-auth.ts';
import { DAY_MS } from '../../shared/limits.ts';

/**
 * Freshness against a compromised DMZ: the arrival times on an envelope are the DMZ's word, so the
 * distributor checks the device's signing time against its own clock, and each message's arrival
 * time against its envelope's. Signatures required, default DISTRIBUTOR_FRESHNESS_S (30 s) and
 * DISTRIBUTOR_MAX_DELAY_S (7 days).
 */
describe('freshness when the DMZ writes the arrival times', () => {
  let fx: EmbeddedFixture;
  let dmz: MqttClient;
  before(async () => {
    fx = await startEmbeddedFixture(['fresh-a'], { DISTRIBUTOR_REQUIRE_SIGNATURES: 'true' });
    const gw = fx.pki.paths.service('dmz/gateway');
    dmz = await connectAsync(`mqtts://127.0.0.1:${fx.pipeline.broker.port}`, {
      ca: readFileSync(fx.pki.paths.publicCa), cert: readFileSync(gw.cert), key: readFileSync(gw.key), protocolVersion: 4, clientId: 'compromised-dmz-fresh',
    });
  });
  after(async () => {
    await dmz.endAsync();
    await fx.stop();
  });

  const key = () => parseSigningKey(readFileSync(fx.pki.paths.device('fresh-a').signingKey, 'utf8')) as Buffer;
  /** A message fresh-a really signed at `ts` (a copy the DMZ kept), sequence number never used before. */
  const signed = (epoch: string, seq: number, payload: Record<string, unknown>, ts: number) => ({
    messageId: `${epoch}.${seq}`,
    payload,
    auth: signMessage(key(), { deviceId: 'fresh-a', dataType: 'timeseries', epoch, seq, ts, payload }),
  });
  const publish = (receivedAt: number, messages: Array<Record<string, unknown>>) =>
    dmz.publishAsync(uplinkTopic('fresh-a', 'timeseries'), JSON.stringify({ v: 1, deviceId: 'fresh-a', dataType: 'timeseries', gatewayId: 'gw', receivedAt, messages }), { qos: 1 });
  const stale = () => fx.points({ measurement: 'security_events' }).filter((p) => p.tags.reason === 'SECURITY_STALE');
  const readings = () => fx.points({ measurement: 'readings', device: 'fresh-a' });

  it('refuses a 30-day-old signed copy stamped with its own signing time as its arrival and "now" as its envelope\'s', async () => {
    const now = Date.now();
    const old = now - 30 * DAY_MS;
    await publish(now, [{ ...signed('kept', 1, { replayed: 30 }, old), receivedAt: old }]);
    // A message signed 3 days ago (within the 7-day delay) whose own arrival says 3 days ago and
    // whose envelope's says now: the two arrival times disagree by more than a gateway lingers.
    const days3 = now - 3 * DAY_MS;
    await publish(now, [{ ...signed('kept', 2, { replayed: 3 }, days3), receivedAt: days3 }]);
    // Sent after the two; written, so the two were decided before it.
    const t = Date.now();
    await publish(t, [signed('live', 1, { live: 1 }, t)]);
    await eventually(() => (readings().some((p) => p.fields.live === 1) ? true : undefined), 20_000, 'the live reading');
    await eventually(() => (stale().filter((e) => String(e.fields.message_id).startsWith('kept.')).length >= 2 ? true : undefined), 20_000, 'two SECURITY_STALE events');
    assert.deepEqual(readings().filter((p) => p.fields.replayed !== undefined), [], 'no replayed copy written');
    assert.deepEqual(stale().map((e) => e.fields.message_id).filter((id) => String(id).startsWith('kept.')).sort(), ['kept.1', 'kept.2']);
  });

  it('still accepts a message that waited in the broker within the maximum delay (its envelope and signing two days old)', async () => {
    const twoDaysAgo = Date.now() - 2 * DAY_MS;
    await publish(twoDaysAgo, [signed('queued', 1, { queued: 1 }, twoDaysAgo + 200)]);
    await eventually(() => (readings().some((p) => p.fields.queued === 1) ? true : undefined), 20_000, 'the delayed reading');
  });

  it('refuses a signing time past the year 275760 as stale, an arrival time past it as an invalid envelope, and keeps checking the messages after them', async () => {
    // Safe integers beyond what a Date can show. A signing time is the device's (signed): refused as
    // stale, and the refusal's detail must not throw (it did, and the device's stream stalled behind
    // the envelope). An arrival time is the DMZ's: the contract refuses the envelope (a store could
    // not write it: one status of that kind stalled the local store).
    const far = 9_000_000_000_000_000;
    const t = Date.now();
    await publish(t, [signed('far', 1, { far: 1 }, far)]);
    await publish(far, [{ ...signed('far-arrival', 1, { farArrival: 1 }, t), receivedAt: far }]);
    await publish(t, [signed('after-far', 1, { afterFar: 1 }, t)]);
    await eventually(() => (stale().some((e) => e.fields.message_id === 'far.1') ? true : undefined), 20_000, 'the SECURITY_STALE event');
    await eventually(() => (readings().some((p) => p.fields.afterFar === 1) ? true : undefined), 20_000, 'the reading after them');
    assert.deepEqual(readings().filter((p) => p.fields.far !== undefined || p.fields.farArrival !== undefined), []);
  });
});
