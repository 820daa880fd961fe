import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import mqtt from 'mqtt';
import type { CommandApi } from '../../internal-network/command-api/command-api.ts';
import { commandTopic } from '../../shared/contract/topics.ts';
import { issueTestCommand, startTestCommandApi, testCommandState } from '../helpers/command-api.ts';
import { freezableBroker } from '../helpers/freezable-broker.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { TcpRelay } from '../helpers/tcp-relay.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * A command whose PUBACK the connection ended before: mqtt.js holds it (the API's session is
 * persistent) and sends it again at the next connection, as MQTT 3.1.1 §4.4 asks. The API's own
 * connect handler sends every command still `queued` again too: it must not send this one a second
 * time. It does not, because mqtt.js emits `connect` only once what it held is acknowledged (the
 * command `sent` by then); this holds that order to account if either side changes. A real Mosquitto
 * over mutual TLS behind a relay that holds the broker's answers and cuts the link.
 */
describe('a command cut off before its PUBACK', () => {
  const fixture = freezableBroker('command-resend-once', ['pump-1'], 'internal/mosquitto');
  const logs = new LogCapture();
  const token = 'resend-once-test-token-0123456789abcdef';
  let relay: TcpRelay | undefined;
  let api: CommandApi | undefined;
  let watcher: mqtt.MqttClient | undefined;
  const copies: string[] = [];

  before(async () => {
    const { pki, broker } = fixture;
    relay = new TcpRelay({ host: '127.0.0.1', port: Number(new URL(broker.tlsUrl).port) });
    await relay.start();
    watcher = await mqtt.connectAsync(broker.url, { clientId: 'resend-once-watcher', reconnectPeriod: 0 });
    await watcher.subscribeAsync(commandTopic('pump-1'), { qos: 1 });
    watcher.on('message', (_topic, payload) => copies.push(payload.toString()));
    api = await startTestCommandApi({ brokerUrl: `mqtts://127.0.0.1:${relay.port}`, pki, dir: fixture.work.dir, token, clientId: 'command-api-resend-once', log: logs.logger });
  });
  after(async () => {
    await api?.close();
    await watcher?.endAsync(true);
    await relay?.close();
  });

  it('is sent again once, by the MQTT client, not a second time by the API', async () => {
    const a = api as CommandApi;
    const r = relay as TcpRelay;
    await eventually(() => (a.mqtt.connected ? true : undefined), 10_000, 'the broker connection');
    r.hold('down');
    const id = await issueTestCommand(a.port, token, { deviceId: 'pump-1', command: 'reboot' });
    await eventually(() => (copies.length === 1 ? true : undefined), 10_000, 'the command at the broker, its PUBACK held');
    await r.cut();
    r.release('down');
    await r.restore();
    await eventually(async () => ((await testCommandState(a.port, token, id)) === 'sent' ? true : undefined), 20_000, 'the command acknowledged after the reconnection');
    // Whatever else was in flight has had time to arrive.
    await sleep(1_000);
    assert.equal(copies.length, 2, `the first copy and the MQTT client's resend, nothing more: ${copies.length} copies`);
    assert.ok(copies.every((c) => c.includes(id)));
  });
});
