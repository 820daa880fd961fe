import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadCommandApiConfig } from '../../internal-network/command-api/config.ts';
import { startCommandApi, type CommandApi } from '../../internal-network/command-api/command-api.ts';
import { CommandStore } from '../../internal-network/command-api/store.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { freezableBroker } from '../helpers/freezable-broker.ts';
import { eventually, within } from '../helpers/ws-device.ts';

/**
 * The command API's stop (SIGTERM) while its broker is frozen (SIGSTOP) with a command published
 * and not acknowledged. mqtt.js's graceful end waited for that PUBACK, then for the broker to close
 * the connection after DISCONNECT, without bound: the API never stopped. The command was answered
 * (202) once in the journal, before it was sent: cut, it stays there "queued", and the next start
 * sends it again. The API as embedded/pipeline.ts starts it, on a real Mosquitto over mutual TLS.
 */
describe('the command API stops while its broker is frozen', () => {
  const fx = freezableBroker('command-api-shutdown', ['pump-1'], 'internal/mosquitto');
  const { pki, work } = fx;
  const logs = new LogCapture();
  const token = 'shutdown-test-token-0123456789abcdef';
  const statePath = join(work.dir, 'commands.jsonl');
  let api: CommandApi | undefined;
  const p = pki.paths;

  before(async () => {
    api = await startCommandApi(
      loadCommandApiConfig({
        MQTT_URL: fx.broker.tlsUrl,
        MQTT_CA_FILE: p.publicCa,
        MQTT_CERT_FILE: p.service('internal/command-api').cert,
        MQTT_KEY_FILE: p.service('internal/command-api').key,
        COMMAND_API_HOST: '127.0.0.1',
        COMMAND_API_PORT: '0',
        COMMAND_API_TOKEN: token,
        COMMAND_API_CLIENT_ID: 'command-api-shutdown',
        COMMAND_STATE_PATH: statePath,
        COMMAND_DEVICE_KEYS_DIR: join(pki.dir, 'internal', 'device-keys'),
        COMMAND_REVOKED_DEVICES_FILE: join(pki.dir, 'internal', 'revoked-devices.txt'),
        COMMAND_API_METRICS_PORT: 'off',
      }),
      logs.logger,
      { processMetrics: false },
    );
  });

  it('stops within its grace, the command it took still queued in its journal', async () => {
    const a = api as CommandApi;
    await eventually(() => (a.mqtt.connected ? true : undefined), 10_000, 'the broker connection');
    await fx.broker.process.pause();
    const res = await fetch(`http://127.0.0.1:${a.port}/v1/commands`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ deviceId: 'pump-1', command: 'reboot' }),
    });
    assert.equal(res.status, 202);
    const { commands } = (await res.json()) as { commands: { commandId: string }[] };
    await eventually(() => (Object.keys(a.mqtt.outgoing).length > 0 ? true : undefined), 5_000, 'the command published, unacknowledged');
    const bound = 2 * TIMINGS.closeGraceMs + 5_000;
    await within(a.close(), bound, "the command API's close");
    assert.equal(a.mqtt.connected, false);
    const record = new CommandStore(statePath, logs.logger).get(commands[0]?.commandId ?? '');
    assert.equal(record?.state, 'queued', 'sent again at the next start');
  });
});
