import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connectAsync } from 'mqtt';
import { statusTopic } from '../../shared/contract/topics.ts';
import { tlsGatewayOnMosquitto } from '../helpers/tls-gateway.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';

/** connections a device may open at once (scaled down from LIMITS.gatewayDeviceConnectsBurst) */
const BURST = 4;
/** one more allowed this long after each (scaled up from TIMINGS.gatewayDeviceConnectRefillMs: none comes back during the test) */
const REFILL_MS = 60_000;
const ATTEMPTS = 12;

/**
 * A device with a valid certificate (compromised, or a firmware bug) that connects and hangs up in
 * a loop: each connection it opened cost its gateway two log lines and two retained presences
 * published to the broker, bridged inward and stored by the distributor, with no bound but the
 * speed of its TLS handshakes. Past its budget of connections the upgrade is refused before any of
 * that; other devices connect as before. The real gateway terminating TLS, a real Mosquitto.
 */
describe('a device reconnecting in a loop', () => {
  const fx = tlsGatewayOnMosquitto('gateway-reconnect-flood', {}, { deviceConnects: { burst: BURST, refillMs: REFILL_MS } });

  it('is refused past its budget of connections, with no presence published for them, and others still connect', async () => {
    const watcher = await connectAsync(fx.brokerUrl, { protocolVersion: 5, clientId: 'presence-watch' });
    const presences: string[] = [];
    watcher.on('message', (topic, payload) => {
      if (topic === statusTopic('mallory') && payload.length > 0) presences.push(payload.toString());
    });
    await watcher.subscribeAsync(statusTopic('mallory'), { qos: 1, rh: 2 });
    try {
      const statuses: Array<number | 'open'> = [];
      let refusal: { status?: number; body?: string } | undefined;
      for (let i = 0; i < ATTEMPTS; i++) {
        try {
          const d = await RawDevice.connect(`wss://127.0.0.1:${fx.gateway.port}/ws`, fx.tlsOf('mallory'));
          statuses.push('open');
          d.ws.terminate();
        } catch (err) {
          const e = err as { status?: number; body?: string };
          statuses.push(e.status ?? -1);
          refusal ??= e;
        }
      }
      assert.equal(statuses.filter((s) => s === 'open').length, BURST, `connections opened: ${statuses.join(',')}`);
      assert.equal(refusal?.status, 429);
      assert.equal((JSON.parse(refusal?.body ?? '{}') as { code?: string }).code, 'GATEWAY_RECONNECTING_TOO_FAST');

      // Another device is not charged for it.
      const honest = await RawDevice.connect(`wss://127.0.0.1:${fx.gateway.port}/ws`, fx.tlsOf('honest'));
      await eventually(() => honest.welcome, 5_000, 'the other device welcomed');
      honest.close();

      // Each connection opened: its online and its offline; none for the refused ones.
      await eventually(() => (presences.length >= 2 * BURST ? true : undefined), 10_000, 'the presences of the connections opened');
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(presences.length, 2 * BURST, 'presences published');
      const connected = fx.logs.lines.filter((l) => l.msg === 'device connected' && l.deviceId === 'mallory').length;
      assert.equal(connected, BURST);
      const refusedLines = fx.logs.lines.filter((l) => l.code === 'GATEWAY_RECONNECTING_TOO_FAST');
      assert.ok(refusedLines.length >= 1 && refusedLines.length <= ATTEMPTS - BURST);
    } finally {
      await watcher.endAsync(true);
    }
  });
});
