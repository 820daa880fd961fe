import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import type { CommandApi } from '../../internal-network/command-api/command-api.ts';
import { CommandStore } from '../../internal-network/command-api/store.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { startTestCommandApi } from '../helpers/command-api.ts';
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
