import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { connectAsync } from 'mqtt';
import type { RunningFieldClient } from '../../field-client/src/start.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { freezableBroker } from '../helpers/freezable-broker.ts';
import { within } from '../helpers/ws-device.ts';

const DEVICE = 'plc-gw-007';
const HOST_ID = 'fieldstream-shutdown';

/**
 * The field client's stop (SIGTERM) while its Sparkplug broker is frozen (SIGSTOP). The Sparkplug
 * input published its death STATE (QoS 1) and waited for the PUBACK, then mqtt.js's graceful end
 * waited for the broker to close the connection after DISCONNECT, both without bound: the field
 * client never stopped. Cut, the connection ends without DISCONNECT, so the broker publishes the
 * will, the same offline STATE: once it runs again the host is offline either way. The field
 * client as sparkplug.test.ts starts it, on a real Mosquitto, its gateway nowhere (as
 * sparkplug-restart.test.ts has it).
 */
describe('the field client stops while its Sparkplug broker is frozen', () => {
  const fx = freezableBroker('sparkplug-shutdown', [DEVICE]);
  const { pki } = fx;
  const logs = new LogCapture();
  let field: RunningFieldClient | undefined;

  before(async () => {
    field = await startTestFieldClient(pki.paths, DEVICE, `wss://127.0.0.1:${await freePort()}/ws`, logs.logger, {
      FIELD_SPARKPLUG_URL: fx.broker.url,
      FIELD_SPARKPLUG_GROUPS: 'Plant1',
      FIELD_SPARKPLUG_HOST_ID: HOST_ID,
    });
    await field.sparkplug?.ready;
  });

  it('stops within its grace, and its STATE is offline once the broker runs again', async () => {
    const b = fx.broker;
    await b.process.pause();
    await within((field as RunningFieldClient).close(), 2 * TIMINGS.closeGraceMs + 5_000, "the field client's close");
    await b.process.resume();
    const watcher = await connectAsync(b.url, { clientId: 'state-watcher' });
    const state = new Promise<string>((resolve) => watcher.on('message', (_t, p) => resolve(p.toString())));
    await watcher.subscribeAsync(`spBv1.0/STATE/${HOST_ID}`);
    assert.equal((JSON.parse(await within(state, 10_000, 'the retained STATE')) as { online: boolean }).online, false);
    await watcher.endAsync();
  });
});
