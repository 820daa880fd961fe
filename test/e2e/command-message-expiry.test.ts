import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import mqtt, { type MqttClient } from 'mqtt';
import { CommandDispatcher } from '../../internal-network/command-api/dispatcher.ts';
import { CommandStore } from '../../internal-network/command-api/store.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { TOPIC_FILTERS } from '../../shared/contract/topics.ts';
import { createLogger } from '../../shared/logger.ts';
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

      const got: string[] = [];
      const back = mqtt.connect(broker.url, { reconnectPeriod: 0, ...bridge });
      back.on('message', (_t, payload) => got.push((JSON.parse(payload.toString()) as { commandId: string }).commandId));
      await new Promise((r) => back.once('connect', r));
      for (let i = 0; i < 50 && !got.includes(long?.commandId ?? ''); i++) await new Promise((r) => setTimeout(r, 20));
      await back.endAsync();
      assert.ok(got.includes(long?.commandId ?? ''), 'a command within its TTL is delivered');
      assert.ok(!got.includes(short?.commandId ?? ''), 'a command past its TTL was delivered by the broker');
    } finally {
      dispatcher.close();
      await api.endAsync();
    }
  });
});
