import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { loadBrokerExporterConfig } from '../../internal-network/broker-exporter/config.ts';
import { startBrokerExporter, type BrokerExporter } from '../../internal-network/broker-exporter/exporter.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { freezableBroker } from '../helpers/freezable-broker.ts';
import { eventually, within } from '../helpers/ws-device.ts';

/**
 * The broker exporter's stop (SIGTERM) while the broker it reads is frozen (SIGSTOP). mqtt.js's
 * graceful end sends DISCONNECT and waits for the broker to close the connection, without bound:
 * the exporter never stopped. The exporter as broker-exporter.test.ts starts it, on a real
 * Mosquitto over mutual TLS as `monitor`.
 */
describe('the broker exporter stops while its broker is frozen', () => {
  const fx = freezableBroker('exporter-shutdown', [], 'internal/mosquitto');
  const { pki, work } = fx;
  const p = pki.paths;
  let exporter: BrokerExporter | undefined;

  before(async () => {
    const m = p.service('internal/monitor');
    exporter = await startBrokerExporter(
      loadBrokerExporterConfig({
        MQTT_URL: fx.broker.tlsUrl,
        MQTT_CA_FILE: p.publicCa,
        MQTT_CERT_FILE: m.cert,
        MQTT_KEY_FILE: m.key,
        DMZ_MQTT_URL: 'off',
        BROKER_EXPORTER_CLIENT_ID: 'exporter-shutdown-test',
        BROKER_EXPORTER_METRICS_PORT: '0',
      }),
      createLogger('broker-exporter', 'silent'),
    );
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
