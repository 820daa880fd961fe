import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import mqtt, { type MqttClient } from 'mqtt';
import type { CommandApi } from '../../internal-network/command-api/command-api.ts';
import { loadCommandApiConfig } from '../../internal-network/command-api/config.ts';
import { commandTopic, statusTopic } from '../../shared/contract/topics.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { issueTestCommand, startTestCommandApi, testCommandState } from '../helpers/command-api.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'valve-1';
/** a device with more commands waiting than it can hold */
const BUSY = 'valve-2';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A command sent to a device that stays connected, and not answered, was sent again only at the
 * device's next presence, which a gateway publishes once a day: a device that had put it off (too
 * many of its commands waiting, FIELD_COMMANDS_WAITING_FULL; no room in its queue for answers) or a
 * copy the way lost left it to expire unrun. Now it is sent again every COMMAND_RESEND_UNANSWERED_S
 * while its device was last said online. A real Mosquitto over mutual TLS for the API; the DMZ's
 * side (presences, the commands it is handed) on its plain listener.
 */
describe('a command not answered while its device stays online', () => {
  const pki = makeTestPki([DEVICE, BUSY]);
  const work = tempDir('command-resend-unanswered');
  const logs = new LogCapture();
  const token = 'resend-unanswered-test-token-0123456789';
  let broker: { url: string; tlsUrl?: string; process: ManagedProcess } | undefined;
  let api: CommandApi | undefined;
  let dmz: MqttClient | undefined;
  const handed: number[] = [];
  /** the command ids handed to the DMZ for BUSY, in order */
  const busyHanded: string[] = [];

  before(async () => {
    const p = pki.paths;
    broker = await startMosquitto(work.dir, { ca: p.publicCa, cert: p.service('internal/mosquitto').cert, key: p.service('internal/mosquitto').key });
    api = await startTestCommandApi({ brokerUrl: broker.tlsUrl ?? '', pki, dir: work.dir, token, clientId: 'command-api-resend', log: logs.logger, env: { COMMAND_RESEND_UNANSWERED_S: '1' } });
    dmz = await mqtt.connectAsync(broker.url, { clientId: 'dmz-resend', protocolVersion: 5 });
    await dmz.subscribeAsync([commandTopic(DEVICE), commandTopic(BUSY)], { qos: 1 });
    dmz.on('message', (topic, payload) => {
      if (topic === commandTopic(DEVICE)) handed.push(performance.now());
      if (topic === commandTopic(BUSY)) busyHanded.push((JSON.parse(payload.toString()) as { commandId: string }).commandId);
    });
  });
  after(async () => {
    await dmz?.endAsync();
    await api?.close();
    await broker?.process.stop();
    work.cleanup();
    pki.cleanup();
  });

  const presence = (state: 'online' | 'offline') => JSON.stringify({ v: 1, state, gatewayId: 'gw-1', at: Date.now() });
  /** A little over two sweeps: what a resend due would have been given to happen in. */
  const twoSweeps = 2 * TIMINGS.commandExpirySweepMs + 500;

  it('is sent again while its device was last said online, without a presence, and not once the device is said offline', async () => {
    const a = api as CommandApi;
    const d = dmz as MqttClient;
    await eventually(() => (a.mqtt.connected ? true : undefined), 10_000, 'the broker connection');
    const id = await issueTestCommand(a.port, token, { deviceId: DEVICE, command: 'open', ttlSeconds: 3600 });
    await eventually(async () => ((await testCommandState(a.port, token, id)) === 'sent' ? true : undefined), 10_000, 'the command sent');
    await eventually(() => (handed.length === 1 ? true : undefined), 5_000, 'the command handed to the DMZ');
    // Never said online: not sent again.
    await sleep(twoSweeps);
    assert.equal(handed.length, 1, 'sent again to a device never said online');

    // Online (its presence resends at once), then no presence more: sent again all the same.
    await d.publishAsync(statusTopic(DEVICE), presence('online'), { qos: 1 });
    await eventually(() => (handed.length === 2 ? true : undefined), 3_000, 'the resend at the presence');
    await eventually(() => (handed.length >= 3 ? true : undefined), twoSweeps, 'a resend of the unanswered command without a presence');
    assert.equal(await testCommandState(a.port, token, id), 'sent');

    // Offline: sent again no more.
    await d.publishAsync(statusTopic(DEVICE), presence('offline'), { qos: 1 });
    await sleep(300);
    const atOffline = handed.length;
    await sleep(twoSweeps);
    assert.equal(handed.length, atOffline, 'sent again to a device said offline');
  });

  it('is not sent again once its device is said offline after presences close together, the resend they put off included', async () => {
    const d = dmz as MqttClient;
    // The command of the test above, still sent and not answered, its device said offline.
    // Two presences within TIMINGS.commandRedeliverMinIntervalMs: the second puts a resend off until
    // the interval has passed. The device is said offline before that: the resend put off may still
    // go (it serves a presence that came), but the device must not be followed as online from then on.
    await d.publishAsync(statusTopic(DEVICE), presence('online'), { qos: 1 });
    await d.publishAsync(statusTopic(DEVICE), presence('online'), { qos: 1 });
    await d.publishAsync(statusTopic(DEVICE), presence('offline'), { qos: 1 });
    await sleep(300);
    const atOffline = handed.length;
    await sleep(TIMINGS.commandRedeliverMinIntervalMs + twoSweeps);
    assert.ok(handed.length - atOffline <= 1, `sent again ${handed.length - atOffline} times to a device said offline`);
  });

  it('sends again only the oldest LIMITS.commandResendPerDeviceMax of a device that has more waiting, all of them at its presence', async () => {
    const a = api as CommandApi;
    const d = dmz as MqttClient;
    const max = LIMITS.commandResendPerDeviceMax;
    const ids: string[] = [];
    for (let i = 0; i < max + 3; i++) ids.push(await issueTestCommand(a.port, token, { deviceId: BUSY, command: 'open', params: { i }, ttlSeconds: 3600 }));
    await eventually(() => (busyHanded.length === ids.length ? true : undefined), 20_000, 'every command handed to the DMZ once');
    // Its presence: every one sent again, the youngest included.
    await d.publishAsync(statusTopic(BUSY), presence('online'), { qos: 1 });
    await eventually(() => (busyHanded.length === 2 * ids.length ? true : undefined), 10_000, 'every command sent again at the presence');
    // Then, unanswered: the oldest `max` again, never the youngest three.
    await eventually(() => (busyHanded.length >= 2 * ids.length + max ? true : undefined), 2 * twoSweeps, 'the resend of the unanswered');
    await sleep(TIMINGS.commandExpirySweepMs + 500);
    const again = busyHanded.slice(2 * ids.length);
    assert.deepEqual(new Set(again), new Set(ids.slice(0, max)), 'sent again: the oldest, and only them');
    await d.publishAsync(statusTopic(BUSY), presence('offline'), { qos: 1 });
  });

  it('takes "off" (only at a presence) and refuses what is not 1 to 86400 seconds', () => {
    const base = { COMMAND_API_TOKEN: token, MQTT_URL: 'mqtts://127.0.0.1:1' };
    assert.equal(loadCommandApiConfig({ ...base }).COMMAND_RESEND_UNANSWERED_S, 60);
    assert.equal(loadCommandApiConfig({ ...base, COMMAND_RESEND_UNANSWERED_S: 'off' }).COMMAND_RESEND_UNANSWERED_S, 'off');
    for (const bad of ['0', '-1', '86401', '1.5', 'soon']) {
      assert.throws(() => loadCommandApiConfig({ ...base, COMMAND_RESEND_UNANSWERED_S: bad }), /COMMAND_RESEND_UNANSWERED_S/, bad);
    }
  });
});
