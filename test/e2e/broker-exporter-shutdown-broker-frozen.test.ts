import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { loadBrokerExporterConfig } from '../../internal-network/broker-exporter/config.ts';
import { startBrokerExporter, type BrokerExporter } from '../../internal-network/broker-exporter/exporter.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { freezableBroker } from '../helpers/freezable-broker.ts';
import { eventually, within } from '../helpers/ws-device.ts';
import { parseExposition } from '../helpers/exposition.ts';

/** The broker exporter on the test's broker (internal only), as the `monitor` identity, its metrics on a port of its own. */
function exporterOf(fx: ReturnType<typeof freezableBroker>, clientId: string, env: Record<string, string> = {}): Promise<BrokerExporter> {
  const p = fx.pki.paths;
  const m = p.service('internal/monitor');
  return startBrokerExporter(
    loadBrokerExporterConfig({
      MQTT_URL: fx.broker.tlsUrl,
      MQTT_CA_FILE: p.publicCa,
      MQTT_CERT_FILE: m.cert,
      MQTT_KEY_FILE: m.key,
      DMZ_MQTT_URL: 'off',
      BROKER_EXPORTER_CLIENT_ID: clientId,
      BROKER_EXPORTER_METRICS_PORT: '0',
      ...env,
    }),
    createLogger('broker-exporter', 'silent'),
  );
}

/**
 * The broker exporter's stop (SIGTERM) while the broker it reads is frozen (SIGSTOP). mqtt.js's
 * graceful end sends DISCONNECT and waits for the broker to close the connection, without bound:
 * the exporter never stopped. The exporter as broker-exporter.test.ts starts it, on a real
 * Mosquitto over mutual TLS as `monitor`.
 */
describe('the broker exporter stops while its broker is frozen', () => {
  const fx = freezableBroker('exporter-shutdown', [], 'internal/mosquitto');
  let exporter: BrokerExporter | undefined;

  before(async () => {
    exporter = await exporterOf(fx, 'exporter-shutdown-test');
  });

  it('stops within its grace although the broker never answers', async () => {
    const e = exporter as BrokerExporter;
    // Ready once connected to the internal broker.
    await eventually(async () => ((await fetch(`${e.metricsUrl}/readyz`)).status === 200 ? true : undefined), 10_000, 'the exporter connected');
    await fx.broker.process.pause();
    await within(e.close(), 2 * TIMINGS.closeGraceMs + 5_000, "the exporter's close");
    assert.equal((await fetch(`${e.metricsUrl}/metrics`).catch(() => undefined))?.status, undefined, 'its server closed');
  });
});

/**
 * What the exporter serves of a broker that hangs (SIGSTOP): its connection stands until the MQTT
 * keepalive gives up on it (up to one and a half keepalives, 45 s), but no $SYS arrives. Once
 * BROKER_EXPORTER_STALE_S has passed it reads as down (mosquitto_up 0); the values it last read are
 * as stale as those of a broker it has lost, and are served no more than those.
 */
describe('the broker exporter serves nothing stale of a frozen broker', () => {
  const fx = freezableBroker('exporter-frozen-values', [], 'internal/mosquitto');
  let exporter: BrokerExporter | undefined;
  // Above Mosquitto's default sys_interval (10 s, the test broker's), below the keepalive's 45 s.
  const staleS = 15;

  before(async () => {
    exporter = await exporterOf(fx, 'exporter-frozen-values-test', { BROKER_EXPORTER_STALE_S: String(staleS) });
  });
  after(async () => {
    await exporter?.close();
  });

  const scrape = async () => parseExposition(await (await fetch(`${(exporter as BrokerExporter).metricsUrl}/metrics`)).text());
  const internal = (m: Map<string, number>, name: string) => m.get(`fieldstream_${name}{broker="internal",service="broker-exporter"}`);

  it('mosquitto_up 0, and none of the values read before the freeze', async () => {
    await eventually(async () => {
      const m = await scrape();
      return internal(m, 'mosquitto_up') === 1 && internal(m, 'mosquitto_clients_connected') !== undefined ? true : undefined;
    }, 15_000, 'the broker read');
    await fx.broker.process.pause();
    const frozenAt = Date.now();
    const down = await eventually(async () => {
      const m = await scrape();
      return internal(m, 'mosquitto_up') === 0 ? m : undefined;
    }, (staleS + 15) * 1000, 'the frozen broker read as down');
    // Still within the keepalive: the connection stands, so what is left out is left out for staleness.
    assert.ok(Date.now() - frozenAt < 1.5 * TIMINGS.mqttKeepaliveS * 1000, 'read as down before the keepalive gave up');
    for (const name of ['mosquitto_clients_connected', 'mosquitto_messages_stored', 'mosquitto_subscriptions', 'mosquitto_messages_received_total', 'mosquitto_messages_sent_total']) {
      assert.equal(internal(down, name), undefined, `${name} served for a broker that reads as down`);
    }
    await fx.broker.process.resume();
    await eventually(async () => {
      const m = await scrape();
      return internal(m, 'mosquitto_up') === 1 && internal(m, 'mosquitto_clients_connected') !== undefined ? true : undefined;
    }, 60_000, 'the broker read again');
  });
});
