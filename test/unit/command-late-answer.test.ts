import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import mqtt, { type IPublishPacket } from 'mqtt';
import { CommandDispatcher } from '../../internal-network/command-api/dispatcher.ts';
import { CommandViewSchema, type CommandRecord } from '../../internal-network/command-api/schemas.ts';
import { CommandStore } from '../../internal-network/command-api/store.ts';
import type { ResponseLedger, Wanted } from '../../internal-network/command-api/stored-responses.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { startTestCommandHttp } from '../helpers/command-api.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * A device's answer that comes after the command API ended its command `expired` (the device runs
 * a command until its expiry plus its clock skew, and a handler may take an hour): recorded, shown
 * with the time the API had said `expired`, kept through a restart, and looked up among the
 * responses the distributor stored when the broker's copy of it may have been lost.
 */
const temp = tempDir('command-late');
after(() => temp.cleanup());
const log = createLogger('command-api', 'silent');
let n = 0;
function record(state: CommandRecord['state'], over: Partial<CommandRecord> = {}): CommandRecord {
  const now = Date.now();
  n++;
  return { commandId: `cmd-late-${n}`, deviceId: 'pump-9', command: 'reboot', issuedAt: now - 120_000, expiresAt: now - 1, state, attempts: 1, updatedAt: now, ...over };
}
/** A broker that never connects: what the dispatcher gets from one is emitted on it by the test. */
function noBroker() {
  const broker = mqtt.connect('mqtt://127.0.0.1:1', { reconnectPeriod: 0, connectTimeout: 100 });
  broker.on('error', () => undefined);
  return broker;
}
const keys = () => new DeviceKeyRegistry(join(temp.dir, 'keys'));

describe("a device's answer after its command expired", () => {
  it('is recorded with the time the command API had said expired, kept through a restart and shown by GET /v1/commands/ID', async () => {
    const path = join(temp.dir, 'shown.jsonl');
    const s = new CommandStore(path, log);
    const late = record('sent');
    s.add([late]);
    const broker = noBroker();
    const d = new CommandDispatcher(broker, s, log, { keys: keys(), allowUnsigned: true });
    const api = await startTestCommandHttp({ dispatcher: d, store: s, logger: log, users: { 'viewer-token': { name: 'watch', role: 'viewer' } } });
    const get = async () => {
      const res = await fetch(`http://127.0.0.1:${api.port}/v1/commands/${late.commandId}`, { headers: { authorization: 'Bearer viewer-token' } });
      assert.equal(res.status, 200);
      const body = (await res.json()) as Record<string, unknown>;
      CommandViewSchema.strict().parse(body);
      return body;
    };
    try {
      const before = Date.now();
      (d as unknown as { expire(): void }).expire();
      const expired = await get();
      assert.equal(expired.state, 'expired');
      assert.equal(typeof expired.expiredAt, 'string', 'an expired command says when the command API ended it');
      const expiredAt = Date.parse(expired.expiredAt as string);
      assert.ok(expiredAt >= before && expiredAt <= Date.now());
      const env = { v: 1, deviceId: 'pump-9', dataType: 'response', gatewayId: 'gw-1', receivedAt: Date.now(), messages: [{ messageId: 'r-late', payload: { commandId: late.commandId, status: 'completed', result: 'done' } }] };
      broker.emit('message', uplinkTopic('pump-9', 'response'), Buffer.from(JSON.stringify(env)), {} as IPublishPacket);
      const answered = await get();
      assert.equal(answered.state, 'completed', 'the device ran it: its answer stands');
      assert.deepEqual((answered.response as { status: string; result: unknown }).status, 'completed');
      assert.equal((answered.response as { result: unknown }).result, 'done');
      assert.equal(answered.expiredAt, expired.expiredAt, 'the answer shows it came after the command API had said expired');
      s.flush();
      const again = new CommandStore(path, log);
      assert.equal(again.get(late.commandId)?.state, 'completed');
      assert.equal(again.get(late.commandId)?.expiredAt, expiredAt, 'kept through a restart');
    } finally {
      await api.close();
      d.close();
      broker.end(true);
    }
  });

  it('is looked up among the responses the distributor stored at the start and at each connection, for commands expired lately only', async () => {
    // The internal broker keeps a response for this API in memory until its next autosave: killed
    // meanwhile, the API away, the answer is lost there while the distributor stored it. Commands
    // still waiting were looked up then; an expired one never was, and stayed `expired` though the
    // device ran it and answered.
    const s = new CommandStore(join(temp.dir, 'looked-up.jsonl'), log);
    const now = Date.now();
    const lately = record('expired', { expiredAt: now - 60_000 });
    const accepted = record('expired', { expiredAt: now - 60_000, response: { status: 'accepted', at: now - 90_000 } });
    const longAgo = record('expired', { expiresAt: now - TIMINGS.commandLateAnswerLookUpMs - 120_000, expiredAt: now - TIMINGS.commandLateAnswerLookUpMs - 60_000 });
    const answered = record('completed', { expiredAt: now - 60_000, response: { status: 'completed', at: now - 30_000 } });
    s.add([lately, accepted, longAgo, answered]);
    const asked: string[] = [];
    const ledger: ResponseLedger = {
      description: 'responses stored after the commands expired',
      find: (wanted: readonly Wanted[]) => {
        asked.push(...wanted.map((w) => w.commandId));
        return Promise.resolve(wanted.map((w) => ({ commandId: w.commandId, deviceId: w.deviceId, status: 'completed' as const, result: 'ran' })));
      },
      close: () => Promise.resolve(),
    };
    const broker = noBroker();
    const d = new CommandDispatcher(broker, s, log, { keys: keys(), allowUnsigned: true }, ledger);
    try {
      await d.settled();
      assert.deepEqual(asked.sort(), [lately.commandId, accepted.commandId].sort(), 'the commands expired lately without a final answer, and none other');
      for (const r of [lately, accepted]) {
        const now = s.get(r.commandId);
        assert.equal(now?.state, 'completed');
        assert.equal(now?.response?.result, 'ran');
        assert.equal(now?.expiredAt, r.expiredAt);
      }
      assert.equal(s.get(longAgo.commandId)?.state, 'expired');
      assert.equal(s.live, 0, 'nothing reopened: no command waits again');
    } finally {
      d.close();
      broker.end(true);
    }
  });
});
