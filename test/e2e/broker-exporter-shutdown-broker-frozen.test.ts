import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { loadBrokerExporterConfig } from '../../internal-network/broker-exporter/config.ts';
import { startBrokerExporter, type BrokerExporter } from '../../internal-network/broker-exporter/exporter.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';
import { eventually, within } from '../helpers/ws-device.ts';

/**
 * The broker exporter's stop (SIGTERM) while the broker it reads is frozen (SIGSTOP). mqtt.js's
 * graceful end sends DISCONNECT and waits for the broker to close the connection, without bound:
 * the exporter never stopped. The exporter as broker-exporter.test.ts starts it, on a real
 * Mosquitto over mutual TLS as `monitor`.
 */
describe('the broker exporter stops while its broker is frozen', () => {
  const pki = makeTestPki([]);
  const work = tempDir('exporter-shutdown');
  const p = pki.paths;
  let broker: { tlsUrl?: string; process: ManagedProcess } | undefined;
  let exporter: BrokerExporter | undefined;

  before(async () => {
    broker = await startMosquitto(work.dir, { ca: p.publicCa, cert: p.service('internal/mosquitto').cert, key: p.service('internal/mosquitto').key });
    const m = p.service('internal/monitor');
    exporter = await startBrokerExporter(
      loadBrokerExporterConfig({
        MQTT_URL: broker.tlsUrl,
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
  after(async () => {
    await broker?.process.resume().catch(() => undefined);
    await broker?.process.stop();
    work.cleanup();
    pki.cleanup();
  });

  it('stops within its grace although the broker never answers', async () => {
    const e = exporter as BrokerExporter;
    // Ready once connected to the internal broker.
    await eventually(async () => ((await fetch(`${e.metricsUrl}/readyz`)).status === 200 ? true : undefined), 10_000, 'the exporter connected');
    await (broker as { process: ManagedProcess }).process.pause();
    await within(e.close(), 2 * TIMINGS.closeGraceMs + 5_000, "the exporter's close");
    assert.equal((await fetch(`${e.metricsUrl}/metrics`).catch(() => undefined))?.status, undefined, 'its server closed');
  });
});
