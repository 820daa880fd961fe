import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { AnomalyScorer } from '../../internal-network/console/anomaly/scorer.ts';
import { ANOMALY_STATE_FILE } from '../../internal-network/console/anomaly-state-file.ts';
import { loadConsoleConfig } from '../../internal-network/console/config.ts';
import { startConsole, type OperatorConsole } from '../../internal-network/console/console.ts';
import { StoredFeedPublisher } from '../../internal-network/distributor/stored-feed-publisher.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { freezableBroker } from '../helpers/freezable-broker.ts';
import { feedKeyOf } from '../helpers/stored-feed.ts';
import { eventually, within } from '../helpers/ws-device.ts';

const DEVICE = 'pump-7';

/**
 * The console's stop (SIGTERM) while its broker is frozen (SIGSTOP). mqtt.js's graceful end sends
 * DISCONNECT and waits for the broker to close the connection, without bound: the console never
 * stopped, and the anomaly state (saved after the MQTT client is ended) was never saved. The
 * console as stored-feed-bridge.test.ts starts it, with its anomaly detectors, on a real Mosquitto
 * over mutual TLS; a reading reaches it through the stored feed (the distributor's publisher).
 */
describe('the console stops while its broker is frozen', () => {
  const fx = freezableBroker('console-shutdown', [DEVICE], 'internal/mosquitto');
  const { pki, work } = fx;
  const logs = new LogCapture();
  const stateDir = join(work.dir, 'console-state');
  const p = pki.paths;
  let operatorConsole: OperatorConsole | undefined;
  let distributor: MqttClient | undefined;
  let feed: StoredFeedPublisher | undefined;

  before(async () => {
    const d = p.service('internal/distributor');
    distributor = await connectAsync(fx.broker.tlsUrl, { ca: readFileSync(p.publicCa), cert: readFileSync(d.cert), key: readFileSync(d.key), clientId: 'distributor-1', protocolVersion: 5, reconnectPeriod: 0 });
    feed = new StoredFeedPublisher([distributor], { source: 'distributor-1', key: feedKeyOf(p) }, logs.logger);
    operatorConsole = await startConsole(
      loadConsoleConfig({
        MQTT_URL: fx.broker.tlsUrl,
        MQTT_CA_FILE: p.publicCa,
        MQTT_CERT_FILE: p.service('internal/console').cert,
        MQTT_KEY_FILE: p.service('internal/console').key,
        CONSOLE_CLIENT_ID: 'console-shutdown-test',
        CONSOLE_HOST: '127.0.0.1',
        CONSOLE_PORT: '0',
        CONSOLE_METRICS_PORT: 'off',
        CONSOLE_MANAGE_API: 'off',
        CONSOLE_ANOMALY: 'on',
        CONSOLE_STATE_DIR: stateDir,
        COMMAND_API_TOKEN: 'a'.repeat(32),
        CONSOLE_DEVICE_KEYS_DIR: join(pki.dir, 'internal', 'device-keys'),
        CONSOLE_REVOKED_DEVICES_FILE: join(pki.dir, 'internal', 'revoked-devices.txt'),
        CONSOLE_DEVICE_TOKENS_FILE: join(work.dir, 'no-tokens.json'),
        CONSOLE_STORED_FEED_KEY_FILE: p.storedFeedKey,
        TIMESERIES_LOCAL_PATH: join(work.dir, 'timeseries'),
      }),
      logs.logger,
      { scorer: new AnomalyScorer(), processMetrics: false },
    );
  });
  after(async () => {
    feed?.close();
    await distributor?.endAsync(true);
  });

  it('stops within its grace and saves the anomaly state', async () => {
    const c = operatorConsole as OperatorConsole;
    await eventually(
      () => {
        if (c.fleet.detail(DEVICE)?.latest?.fields.pressure_bar === 1.5) return true;
        feed?.offer([{ measurement: 'readings', tags: { device: DEVICE }, fields: { pressure_bar: 1.5 }, time: Date.now() }]);
        return undefined;
      },
      15_000,
      'a reading shown by the console',
    );
    const path = join(stateDir, ANOMALY_STATE_FILE);
    assert.equal(existsSync(path), false, 'not saved yet: saved every ten minutes and at the stop');
    await fx.broker.process.pause();
    await within(c.close(), 2 * TIMINGS.closeGraceMs + 5_000, "the console's close");
    assert.equal(c.mqtt.connected, false);
    assert.match(readFileSync(path, 'utf8'), new RegExp(`"${DEVICE}"`), "the device's detectors saved");
  });
});
