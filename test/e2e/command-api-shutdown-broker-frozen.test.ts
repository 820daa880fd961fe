import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import type { CommandApi } from '../../internal-network/command-api/command-api.ts';
import { CommandStore } from '../../internal-network/command-api/store.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { issueTestCommand, startTestCommandApi } from '../helpers/command-api.ts';
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

  before(async () => {
    api = await startTestCommandApi({ brokerUrl: fx.broker.tlsUrl, pki, dir: work.dir, token, clientId: 'command-api-shutdown', log: logs.logger });
  });

  it('stops within its grace, the command it took still queued in its journal', async () => {
    const a = api as CommandApi;
    await eventually(() => (a.mqtt.connected ? true : undefined), 10_000, 'the broker connection');
    await fx.broker.process.pause();
    const id = await issueTestCommand(a.port, token, { deviceId: 'pump-1', command: 'reboot' });
    await eventually(() => (Object.keys(a.mqtt.outgoing).length > 0 ? true : undefined), 5_000, 'the command published, unacknowledged');
    const bound = 2 * TIMINGS.closeGraceMs + 5_000;
    await within(a.close(), bound, "the command API's close");
    assert.equal(a.mqtt.connected, false);
    const record = new CommandStore(statePath, logs.logger).get(id);
    assert.equal(record?.state, 'queued', 'sent again at the next start');
  });
});

/**
 * A second SIGINT while the command API's stop waits on its frozen broker: the stop is forced, at
 * once, with status 130 (128 + SIGINT), and a coded log line says so. Before, every signal after the
 * first was ignored: a stop that hung could only be ended with kill -9. The service as its own
 * process (internal-network/command-api/main.ts), on a real Mosquitto over mutual TLS.
 */
describe('the command API, a second SIGINT while it stops', () => {
  const fx = freezableBroker('command-api-forced-stop', ['pump-1'], 'internal/mosquitto');
  const { pki, work } = fx;

  it('stops at once with status 130 and SERVICE_STOP_FORCED', async () => {
    const p = pki.paths;
    const metricsPort = await freePort();
    const child = spawn(process.execPath, ['--import', 'tsx', 'internal-network/command-api/main.ts'], {
      cwd: join(import.meta.dirname, '..', '..'),
      env: {
        PATH: process.env.PATH,
        MQTT_URL: fx.broker.tlsUrl,
        MQTT_CA_FILE: p.publicCa,
        MQTT_CERT_FILE: p.service('internal/command-api').cert,
        MQTT_KEY_FILE: p.service('internal/command-api').key,
        COMMAND_API_HOST: '127.0.0.1',
        COMMAND_API_PORT: '0',
        COMMAND_API_TOKEN: 'forced-stop-test-token-0123456789abcdef',
        COMMAND_API_CLIENT_ID: 'command-api-forced-stop',
        COMMAND_STATE_PATH: join(work.dir, 'commands.jsonl'),
        COMMAND_DEVICE_KEYS_DIR: join(pki.dir, 'internal', 'device-keys'),
        COMMAND_REVOKED_DEVICES_FILE: join(pki.dir, 'internal', 'revoked-devices.txt'),
        COMMAND_API_METRICS_PORT: String(metricsPort),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await eventually(
        async () => ((await fetch(`http://127.0.0.1:${metricsPort}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined),
        20_000,
        'the command API ready',
      );
      await fx.broker.process.pause();
      child.kill('SIGINT');
      await eventually(() => (/command-api: SIGINT, stopping/.test(err) ? true : undefined), 5_000, 'the stop begun');
      // Sooner, it would be taken for a copy of the first (npm and tsx pass on the one Ctrl-C too).
      await new Promise((r) => setTimeout(r, TIMINGS.stopSignalCopyMs + 100));
      const second = Date.now();
      child.kill('SIGINT');
      const code = await within(exited, 2 * TIMINGS.closeGraceMs + 5_000, 'the exit');
      assert.equal(code, 130, `stdout:\n${out}\nstderr:\n${err}`);
      assert.ok(Date.now() - second < TIMINGS.closeGraceMs, `forced ${Date.now() - second} ms after the second SIGINT`);
      assert.match(out, /"code":"SERVICE_STOP_FORCED"/);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
