import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, it } from 'node:test';
import mqtt from 'mqtt';
import { CommandDispatcher } from '../../internal-network/command-api/dispatcher.ts';
import { CommandStore } from '../../internal-network/command-api/store.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { commandTopic } from '../../shared/contract/topics.ts';
import { startTestCommandHttp } from '../helpers/command-api.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { failing } from '../helpers/failing-fs.ts';
import { tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * The command API (its HTTP server, dispatcher and store, on a real Mosquitto) when a new request's
 * journal append fails, and cutting its lines back off fails too (shared/line-file.ts
 * FILE_APPEND_UNCERTAIN). Answered "refused", the commands were sent all the same after a restart,
 * which reads their lines back (and twice, sent again without an Idempotency-Key).
 */
const temp = tempDir('command-uncertain');
after(() => temp.cleanup());
const logs = new LogCapture('debug');
const TOKEN = 'operator-token';

it('sends the commands and answers API_STATE_UNCERTAIN with their ids, the same to a retry under the key, and 202 once the journal holds them', async () => {
  const broker = await startMosquitto(temp.dir);
  const stateDir = join(temp.dir, 'state');
  const path = join(stateDir, 'commands.jsonl');
  const store = new CommandStore(path, logs.logger);
  const client = await mqtt.connectAsync(broker.url, { clientId: 'command-api-uncertain' });
  const dispatcher = new CommandDispatcher(client, store, logs.logger, { keys: new DeviceKeyRegistry(join(temp.dir, 'keys')), allowUnsigned: true });
  const device = await mqtt.connectAsync(broker.url, { clientId: 'pump-1-uncertain' });
  const received: string[] = [];
  device.on('message', (_topic, payload) => received.push((JSON.parse(payload.toString()) as { commandId: string }).commandId));
  await device.subscribeAsync(commandTopic('pump-1'), { qos: 1 });
  const api = await startTestCommandHttp({ dispatcher, store, logger: logs.logger, users: { [TOKEN]: { name: 'ops', role: 'operator' } }, brokerConnected: true });
  const post = async () => {
    const res = await fetch(`http://127.0.0.1:${api.port}/v1/commands`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', 'idempotency-key': '"reboot-both"' },
      body: JSON.stringify({ deviceIds: ['pump-1', 'pump-2'], command: 'reboot' }),
    });
    return { status: res.status, body: (await res.json()) as { code?: string; details?: { commandIds?: string[] }; commands?: { commandId: string }[] } };
  };
  try {
    // The journal's fsync fails, then its cut, and the rewrite from memory (in the same folder) too.
    const [first, again] = await failing(['fsyncSync', 'ftruncateSync'], stateDir, async () => [await post(), await post()]);
    assert.equal(first?.status, 500, JSON.stringify(first?.body));
    assert.equal(first?.body.code, 'API_STATE_UNCERTAIN');
    const ids = first?.body.details?.commandIds ?? [];
    assert.equal(ids.length, 2);
    assert.equal(again?.status, 500, 'sent again under its key, the disk still failing: not 202');
    assert.deepEqual([...(again?.body.details?.commandIds ?? [])].sort(), [...ids].sort(), 'the same commands, none made again');
    // What a restart does on this journal: it reads them back, and sends them.
    const restarted = new CommandStore(path, logs.logger);
    assert.deepEqual([...restarted.all()].map((r) => r.commandId).sort(), [...ids].sort(), 'a restart takes them');
    // So this API sends them too, never having said they were refused.
    await eventually(() => received.find((id) => ids.includes(id)), 10_000, "pump-1's command at the broker");
    // The disk back: sent again under its key, the journal is rewritten from memory, and answered 202.
    const settled = await post();
    assert.equal(settled.status, 202, JSON.stringify(settled.body));
    assert.deepEqual(settled.body.commands?.map((c) => c.commandId).sort(), [...ids].sort());
    assert.deepEqual([...new CommandStore(path, logs.logger).all()].map((r) => r.commandId).sort(), [...ids].sort());
  } finally {
    await api.close();
    dispatcher.close();
    await client.endAsync(true);
    await device.endAsync(true);
    await broker.process.stop();
  }
});
