import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import mqtt, { type MqttClient } from 'mqtt';
import { CommandDispatcher } from '../../internal-network/command-api/dispatcher.ts';
import { CommandStore } from '../../internal-network/command-api/store.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { TOPIC_FILTERS } from '../../shared/contract/topics.ts';
import { createLogger } from '../../shared/logger.ts';
import { lossyProxy } from '../helpers/lossy-proxy.ts';
import { tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';

/**
 * A command outlives its TTL nowhere: the bridge's session on the internal broker is persistent
 * (cleansession false), so while the DMZ is away every command published waits there, and reaches
 * the DMZ when it comes back, days later perhaps. A device with a key refuses one past its signed
 * expiry; one running unsigned commands (COMMAND_ALLOW_UNSIGNED, FIELD_ALLOW_UNSIGNED_COMMANDS)
 * carries no expiry and ran it. Each command is published with the rest of its TTL as its Message
 * Expiry Interval (MQTT 5 §3.3.2.3.3): the broker drops it once that has passed. Real Mosquitto.
 */
describe('a command waiting in a broker past its TTL', () => {
  const work = tempDir('command-expiry');
  let broker: { url: string; process: ManagedProcess };
  const log = createLogger('command-api', 'warn');
  before(async () => {
    broker = await startMosquitto(work.dir);
  });
  after(async () => {
    await broker?.process.stop();
    work.cleanup();
  });

  /** The command ids the bridge's session is handed when it comes back, waiting up to a second for `awaited`'s. */
  const deliveredTo = async (bridge: mqtt.IClientOptions, awaited: string): Promise<string[]> => {
    const got: string[] = [];
    const session = mqtt.connect(broker.url, { reconnectPeriod: 0, ...bridge });
    session.on('message', (_t, payload) => got.push((JSON.parse(payload.toString()) as { commandId: string }).commandId));
    await new Promise((r) => session.once('connect', r));
    for (let i = 0; i < 50 && !got.includes(awaited); i++) await new Promise((r) => setTimeout(r, 20));
    await session.endAsync();
    return got;
  };

  const connect = (opts: mqtt.IClientOptions) =>
    new Promise<MqttClient>((resolve, reject) => {
      const c = mqtt.connect(broker.url, { reconnectPeriod: 0, ...opts });
      c.once('connect', () => resolve(c));
      c.once('error', reject);
    });

  it('is dropped by the broker at its expiry, not delivered to a session that comes back later', async () => {
    // The bridge as compose runs it: MQTT 3.1.1, a persistent session, away for now.
    const bridge = { clientId: 'bridge-local', clean: false, protocolVersion: 4 as const };
    const first = await connect(bridge);
    await first.subscribeAsync(TOPIC_FILTERS.downlink, { qos: 1 });
    await first.endAsync();

    const api = await connect({ clientId: 'command-api', protocolVersion: 5 });
    const store = new CommandStore(join(work.dir, 'commands.jsonl'), log);
    const dispatcher = new CommandDispatcher(api, store, log, { keys: new DeviceKeyRegistry(join(work.dir, 'keys')), allowUnsigned: true });
    try {
      const [short] = dispatcher.issue(['valve-1'], 'open_valve', { pct: 30 }, 1);
      const [long] = dispatcher.issue(['valve-1'], 'close_valve', undefined, 3600);
      for (let i = 0; i < 100 && (store.get(short?.commandId ?? '')?.state !== 'sent' || store.get(long?.commandId ?? '')?.state !== 'sent'); i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(store.get(short?.commandId ?? '')?.state, 'sent', 'the broker took it');
      await new Promise((r) => setTimeout(r, 2_500)); // past the short one's TTL

      const got = await deliveredTo(bridge, long?.commandId ?? '');
      assert.ok(got.includes(long?.commandId ?? ''), 'a command within its TTL is delivered');
      assert.ok(!got.includes(short?.commandId ?? ''), 'a command past its TTL was delivered by the broker');
    } finally {
      dispatcher.close();
      await api.endAsync();
    }
  });
  it('is not sent again past its TTL by the API either: a publish cut off before its PUBACK goes again with the rest of its expiry, or not at all', async () => {
    // mqtt.js keeps an unacknowledged publish and sends it again, as it was, at its next connection:
    // with the Message Expiry Interval it had when first sent, counted again from then. A command cut
    // off by a broker away for longer than its TTL reached the broker after it, and was held there
    // for a whole TTL more.
    const bridge = { clientId: 'bridge-local-2', clean: false, protocolVersion: 4 as const };
    const first = await connect(bridge);
    await first.subscribeAsync(TOPIC_FILTERS.downlink, { qos: 1 });
    await first.endAsync();

    const proxy = await lossyProxy(Number(new URL(broker.url).port));
    const api = mqtt.connect(proxy.url, { clientId: 'command-api-2', protocolVersion: 5, clean: false, reconnectPeriod: 2_500 });
    api.on('error', () => undefined);
    await new Promise((r) => api.once('connect', r));
    const store = new CommandStore(join(work.dir, 'commands-2.jsonl'), log);
    const dispatcher = new CommandDispatcher(api, store, log, { keys: new DeviceKeyRegistry(join(work.dir, 'keys')), allowUnsigned: true });
    try {
      proxy.loseRequests(); // the broker never gets them: no PUBACK
      const [short] = dispatcher.issue(['valve-2'], 'open_valve', { pct: 30 }, 2);
      const [long] = dispatcher.issue(['valve-2'], 'close_valve', undefined, 3600);
      await new Promise((r) => setTimeout(r, 200));
      const back = new Promise((r) => api.once('connect', r));
      proxy.cut(); // the client reconnects when the short one's TTL has passed
      await back;
      for (let i = 0; i < 100 && store.get(long?.commandId ?? '')?.state !== 'sent'; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(store.get(long?.commandId ?? '')?.state, 'sent', 'the broker took the one within its TTL');

      const got = await deliveredTo(bridge, long?.commandId ?? '');
      assert.ok(got.includes(long?.commandId ?? ''), 'a command within its TTL is delivered');
      assert.ok(!got.includes(short?.commandId ?? ''), 'a command past its TTL was sent again by the API and delivered');
      assert.equal(Object.keys(api.outgoing).length, 0, 'nothing is left waiting for a PUBACK that cannot come');
    } finally {
      dispatcher.close();
      await api.endAsync(true);
      await proxy.close();
    }
  });
});
