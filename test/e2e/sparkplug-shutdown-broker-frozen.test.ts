import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { connectAsync } from 'mqtt';
import type { RunningFieldClient } from '../../field-client/src/start.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';
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
  const pki = makeTestPki([DEVICE]);
  const work = tempDir('sparkplug-shutdown');
  const logs = new LogCapture();
  let broker: { url: string; process: ManagedProcess } | undefined;
  let field: RunningFieldClient | undefined;

  before(async () => {
    broker = await startMosquitto(work.dir);
    field = await startTestFieldClient(pki.paths, DEVICE, `wss://127.0.0.1:${await freePort()}/ws`, logs.logger, {
      FIELD_SPARKPLUG_URL: broker.url,
      FIELD_SPARKPLUG_GROUPS: 'Plant1',
      FIELD_SPARKPLUG_HOST_ID: HOST_ID,
    });
    await field.sparkplug?.ready;
  });
  after(async () => {
    await broker?.process.resume().catch(() => undefined);
    await broker?.process.stop();
    work.cleanup();
    pki.cleanup();
  });

  it('stops within its grace, and its STATE is offline once the broker runs again', async () => {
    const b = broker as { url: string; process: ManagedProcess };
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
