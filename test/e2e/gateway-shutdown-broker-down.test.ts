import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { loadGatewayConfig } from '../../dmz/gateway/config.ts';
import { startGateway, type Gateway } from '../../dmz/gateway/gateway.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { captureLogs } from '../helpers/gateway-fixture.ts';
import { freezableBroker } from '../helpers/freezable-broker.ts';
import { eventually, RawDevice, within } from '../helpers/ws-device.ts';

/**
 * The gateway's stop (SIGTERM) while its DMZ broker holds messages unacknowledged: stalled
 * (SIGSTOP), or gone with the gateway's MQTT client reconnecting. The client's graceful end waits
 * for every PUBACK outstanding, and none comes (a stopped client no longer reconnects): the gateway
 * never stopped, until something killed it. Its devices are disconnected first and were never
 * acked for those messages, so nothing is lost by ending the connection after a grace.
 * The whole gateway (startGateway) on a real Mosquitto over mutual TLS, a device over real TLS.
 */
for (const broken of ['stalled', 'gone'] as const) {
describe(`the gateway stops while its broker (${broken}) holds messages unacknowledged`, () => {
  const fx = freezableBroker(`gateway-shutdown-${broken}`, ['pump-1'], 'dmz/mosquitto');
  const { pki } = fx;
  const logs = captureLogs();
  let gateway: Gateway | undefined;
  const p = pki.paths;

  before(async () => {
    const config = loadGatewayConfig({
      MQTT_URL: fx.broker.tlsUrl,
      MQTT_CA_FILE: p.dmzBrokerCa.dmz,
      MQTT_CERT_FILE: p.service('dmz/gateway-client').cert,
      MQTT_KEY_FILE: p.service('dmz/gateway-client').key,
      GATEWAY_ID: `gw-shutdown-${broken}`,
      GATEWAY_HOST: '127.0.0.1',
      GATEWAY_PORT: '0',
      GATEWAY_TLS_CERT_FILE: p.service('dmz/edge').cert,
      GATEWAY_TLS_KEY_FILE: p.service('dmz/edge').key,
      GATEWAY_CA_FILE: p.publicCa,
      GATEWAY_CRL_FILE: p.crl,
      GATEWAY_REVOKED_SERIALS_FILE: `${pki.dir}/dmz/revocation/revoked-serials.txt`,
      GATEWAY_METRICS_PORT: 'off',
      GATEWAY_LINGER_MS: '0',
    });
    gateway = await startGateway(config, logs.logger, { processMetrics: false });
  });

  it('stops within its graces although the broker never answers', async () => {
    const gw = gateway as Gateway;
    const device = await RawDevice.connect(`wss://127.0.0.1:${gw.port}/ws`, RawDevice.tlsFor(p, 'pump-1'));
    await eventually(() => device.welcome, 5_000, 'the welcome');
    await fx.broker.process.pause();
    device.send(JSON.stringify({ deviceId: 'pump-1', batch: [{ dataType: 'event', messageId: 'held', payload: { eventType: 'x', severity: 'info', message: 'held' } }] }));
    // Handed to the MQTT client, and no PUBACK: the broker is frozen.
    await eventually(() => (Object.keys(gw.mqtt.outgoing).length > 0 ? true : undefined), 5_000, 'a publish outstanding');
    if (broken === 'gone') {
      // The client keeps the message to send again, and reconnects every second meanwhile.
      await fx.broker.process.kill();
      await eventually(() => (gw.mqtt.connected ? undefined : true), 5_000, 'the broker connection lost');
    }
    const started = Date.now();
    await within(gw.close(), 3 * TIMINGS.closeGraceMs + TIMINGS.gatewayClosingGraceMs + 5_000, "the gateway's close");
    assert.ok(Date.now() - started < 3 * TIMINGS.closeGraceMs + TIMINGS.gatewayClosingGraceMs + 5_000);
    assert.equal(gw.mqtt.connected, false);
    device.ws.terminate();
  });
});
}
