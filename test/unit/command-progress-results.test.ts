import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import mqtt, { type IPublishPacket } from 'mqtt';
import { CommandDispatcher } from '../../internal-network/command-api/dispatcher.ts';
import { CommandViewSchema, type CommandRecord } from '../../internal-network/command-api/schemas.ts';
import { CommandStore } from '../../internal-network/command-api/store.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { startTestCommandHttp } from '../helpers/command-api.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * The results of devices' progress answers (`accepted`, no final state) held by the command API: a
 * waiting command kept its last one whole, and 50,000 of them (LIMITS.commandMaxLive) of megabytes
 * each took gigabytes, past the bound the docs give the waiting commands. They are held within
 * LIMITS.commandProgressResultsMaxBytes in all, the oldest let go first, and the API says so.
 */
const temp = tempDir('command-progress');
after(() => temp.cleanup());
const log = createLogger('command-api', 'silent');

/** A result as large as a device may send: LIMITS.stringMaxChars as JSON. */
const bigResult = (tag: number) => `${tag}:`.padEnd(LIMITS.stringMaxChars - 2, 'x');
const resultBytes = (result: unknown) => Buffer.byteLength(JSON.stringify(result));

describe("devices' progress results held by the command API", () => {
  it(`holds at most ${LIMITS.commandProgressResultsMaxBytes / 2 ** 20} MiB of them, the oldest let go and shown as not kept, a final answer's kept whole`, async () => {
    const path = join(temp.dir, 'progress.jsonl');
    const s = new CommandStore(path, log);
    const now = Date.now();
    const count = Math.ceil((LIMITS.commandProgressResultsMaxBytes * 1.5) / resultBytes(bigResult(0)));
    const commands: CommandRecord[] = Array.from({ length: count }, (_, i) => ({
      commandId: `cmd-progress-${i}`,
      deviceId: 'pump-3',
      command: 'calibrate',
      issuedAt: now,
      expiresAt: now + 3_600_000,
      state: 'sent',
      attempts: 1,
      updatedAt: now,
    }));
    for (const c of commands) s.add([c]);
    const broker = mqtt.connect('mqtt://127.0.0.1:1', { reconnectPeriod: 0, connectTimeout: 100 });
    broker.on('error', () => undefined);
    const d = new CommandDispatcher(broker, s, log, { keys: new DeviceKeyRegistry(join(temp.dir, 'keys')), allowUnsigned: true });
    const api = await startTestCommandHttp({ dispatcher: d, store: s, logger: log, users: { 'viewer-token': { name: 'watch', role: 'viewer' } } });
    const answer = (commandId: string, status: string, result: unknown) => {
      const env = { v: 1, deviceId: 'pump-3', dataType: 'response', gatewayId: 'gw-1', receivedAt: Date.now(), messages: [{ messageId: `r-${commandId}-${status}`, payload: { commandId, status, result } }] };
      broker.emit('message', uplinkTopic('pump-3', 'response'), Buffer.from(JSON.stringify(env)), {} as IPublishPacket);
    };
    const get = async (id: string) => {
      const res = await fetch(`http://127.0.0.1:${api.port}/v1/commands/${id}`, { headers: { authorization: 'Bearer viewer-token' } });
      assert.equal(res.status, 200);
      const body = (await res.json()) as Record<string, unknown>;
      CommandViewSchema.strict().parse(body);
      return body as { state: string; response?: { status: string; result?: unknown; resultNotKept?: boolean } };
    };
    /** bytes of the results of non-final answers held in memory, counted from what the store holds */
    const held = (store: CommandStore) => {
      let bytes = 0;
      for (const r of store.all()) if (r.state === 'accepted' && r.response?.result !== undefined) bytes += resultBytes(r.response.result);
      return bytes;
    };
    try {
      for (const [i, c] of commands.entries()) {
        answer(c.commandId, 'accepted', bigResult(i));
        assert.ok(held(s) <= LIMITS.commandProgressResultsMaxBytes, `${held(s)} bytes of progress results held after ${i + 1} answers`);
      }
      s.flush();
      assert.ok(held(s) > LIMITS.commandProgressResultsMaxBytes / 2, 'the newest are kept');
      assert.ok(s.liveBytes <= LIMITS.commandMaxLiveBytes + LIMITS.commandProgressResultsMaxBytes, `${s.liveBytes} bytes waiting`);

      const oldest = await get(commands[0]!.commandId);
      assert.equal(oldest.state, 'accepted');
      assert.equal(oldest.response?.status, 'accepted');
      assert.equal(oldest.response?.result, undefined, 'the oldest progress result let go');
      assert.equal(oldest.response?.resultNotKept, true, 'and the API says so');
      const newest = await get(commands.at(-1)!.commandId);
      assert.deepEqual(newest.response?.result, bigResult(count - 1), 'the newest kept whole');
      assert.equal(newest.response?.resultNotKept, undefined);

      // The final answer is what matters: kept whole, its result shown, the mark gone.
      answer(commands[0]!.commandId, 'completed', bigResult(-1));
      const done = await get(commands[0]!.commandId);
      assert.equal(done.state, 'completed');
      assert.deepEqual(done.response?.result, bigResult(-1));
      assert.equal(done.response?.resultNotKept, undefined);
      s.flush();

      // Read back at a start: within the bound too.
      const again = new CommandStore(path, log);
      assert.ok(held(again) <= LIMITS.commandProgressResultsMaxBytes, `${held(again)} bytes of progress results held after a restart`);
      assert.equal(again.get(commands[1]!.commandId)?.response?.resultNotKept, true);
      assert.deepEqual(again.get(commands.at(-1)!.commandId)?.response?.result, bigResult(count - 1));
      assert.deepEqual(again.get(commands[0]!.commandId)?.response?.result, bigResult(-1));
    } finally {
      await api.close();
      d.close();
      broker.end(true);
    }
  });
});
