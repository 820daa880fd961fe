import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import mqtt, { type MqttClient } from 'mqtt';
import type { CommandApi } from '../../internal-network/command-api/command-api.ts';
import type { CommandView } from '../../internal-network/command-api/schemas.ts';
import { CommandStore } from '../../internal-network/command-api/store.ts';
import { commandTopic, statusTopic } from '../../shared/contract/topics.ts';
import { TIMINGS } from '../../shared/limits.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { issueTestCommand, startTestCommandApi } from '../helpers/command-api.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'pump-1';

/**
 * A device's `online` presence is the DMZ's word, and a compromised DMZ publishes as many as it
 * likes. Each had the command API resend the device's waiting commands (at most once per
 * TIMINGS.commandRedeliverMinIntervalMs) and journal each resend, synced: a line per waiting
 * command and interval, and a compaction of the whole journal each time the lines piled up. A
 * resend of a command sent already changes nothing that must outlive a crash, and is no longer
 * journaled. A real Mosquitto over mutual TLS for the API; the DMZ's side (presences, the commands
 * it is handed) on its plain listener.
 */
describe('a flood of presences for a device with a command waiting', () => {
  const pki = makeTestPki([DEVICE]);
  const work = tempDir('command-presence-flood');
  const logs = new LogCapture();
  const token = 'presence-flood-test-token-0123456789';
  const journal = join(work.dir, 'commands.jsonl');
  let broker: { url: string; tlsUrl?: string; process: ManagedProcess } | undefined;
  let api: CommandApi | undefined;
  let dmz: MqttClient | undefined;

  before(async () => {
    const p = pki.paths;
    broker = await startMosquitto(work.dir, { ca: p.publicCa, cert: p.service('internal/mosquitto').cert, key: p.service('internal/mosquitto').key });
    api = await startTestCommandApi({ brokerUrl: broker.tlsUrl ?? '', pki, dir: work.dir, token, clientId: 'command-api-flood', log: logs.logger });
    dmz = await mqtt.connectAsync(broker.url, { clientId: 'dmz-flood', protocolVersion: 5 });
  });
  after(async () => {
    await dmz?.endAsync();
    await api?.close();
    await broker?.process.stop();
    work.cleanup();
    pki.cleanup();
  });

  it('journals no resend, and the device still gets the command, again once the interval has passed', async () => {
    const a = api as CommandApi;
    const d = dmz as MqttClient;
    await eventually(() => (a.mqtt.connected ? true : undefined), 10_000, 'the broker connection');
    const handed: number[] = []; // when the DMZ's side was handed the command
    await d.subscribeAsync(commandTopic(DEVICE), { qos: 1 });
    d.on('message', (topic) => {
      if (topic === commandTopic(DEVICE)) handed.push(performance.now());
    });
    const auth = { authorization: `Bearer ${token}` };
    const id = await issueTestCommand(a.port, token, { deviceId: DEVICE, command: 'reboot', params: { note: 'x'.repeat(1000) }, ttlSeconds: 3600 });
    const view = async () => (await (await fetch(`http://127.0.0.1:${a.port}/v1/commands/${id}`, { headers: auth })).json()) as CommandView;
    await eventually(async () => ((await view()).state === 'sent' ? true : undefined), 10_000, 'the command sent');
    await eventually(() => (readFileSync(journal, 'utf8').includes('"state":"sent"') ? true : undefined), 5_000, 'its sending journaled');
    await eventually(() => (handed.length === 1 ? true : undefined), 5_000, 'the command handed to the DMZ');
    const first = await view();
    const bytes0 = statSync(journal).size;

    // A presence every 10 ms for a little over an interval: ~650 of them.
    const presence = () => JSON.stringify({ v: 1, state: 'online', gatewayId: 'gw-1', at: Date.now() });
    const floodFor = TIMINGS.commandRedeliverMinIntervalMs + 1_500;
    const start = performance.now();
    let published = 0;
    while (performance.now() - start < floodFor) {
      await d.publishAsync(statusTopic(DEVICE), presence(), { qos: 1 });
      published++;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(published > 300, `only ${published} presences published`);
    // Once at the first presence, once more when the interval had passed: never once a presence.
    await eventually(() => (handed.length >= 3 ? true : undefined), 5_000, 'the resends of the flood');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(handed.length, 3, `handed ${handed.length} times for ${published} presences`);

    assert.equal(statSync(journal).size, bytes0, 'the journal grew with the resends of a command sent already');
    const now = await view();
    assert.equal(now.state, 'sent');
    assert.equal(now.expiresAt, first.expiresAt, 'its expiry kept');
    assert.ok(now.attempts >= first.attempts + 2, 'each resend is counted (in memory)');
    // What a crash at any instant leaves: the command, waiting, with its params and expiry.
    const copy = join(work.dir, 'after-flood.jsonl');
    copyFileSync(journal, copy);
    const back = new CommandStore(copy, logs.logger).get(id);
    assert.equal(back?.state, 'sent');
    assert.equal(back?.expiresAt, Date.parse(first.expiresAt));
    assert.deepEqual(back?.params, { note: 'x'.repeat(1000) });

    // The device really reconnecting once the interval has passed gets the command at once.
    await new Promise((r) => setTimeout(r, Math.max(0, TIMINGS.commandRedeliverMinIntervalMs - (performance.now() - (handed[2] as number)) + 200)));
    const at = performance.now();
    await d.publishAsync(statusTopic(DEVICE), presence(), { qos: 1 });
    await eventually(() => (handed.length === 4 ? true : undefined), 2_000, 'the command sent again at the reconnection');
    assert.ok((handed[3] as number) - at < 1_000, 'sent at once, not put off');
    assert.equal(statSync(journal).size, bytes0);
  });
});
