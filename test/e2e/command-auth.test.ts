import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import type { CommandFrame } from '../../shared/contract/downlink.ts';
import { ENVELOPE_VERSION, type CommandEnvelope } from '../../shared/contract/envelope.ts';
import { commandTopic } from '../../shared/contract/topics.ts';
import { parseSigningKey } from '../../shared/security/message-auth.ts';
import { signCommand } from '../../shared/security/command-auth.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { RogueGateway } from '../helpers/rogue-gateway.ts';
import { api, startTestStack } from '../helpers/stack.ts';
import { eventually } from '../helpers/ws-device.ts';

type Answer = { commandId: string; status: string; result?: { code?: string } };
const DEVICE = 'valve-1';

/**
 * A compromised DMZ holds the edge certificate and the gateway's broker identity, never a device's
 * signing key. Whatever it sends a device — forged, altered, replayed (before and after a restart of
 * the client), stale or future-dated commands — runs nothing and is answered "rejected" with its
 * code; a command from the command API runs exactly once. The handler is an `exec` that appends a
 * line to a marker file, so a command that ran cannot go unnoticed.
 */
describe('commands authenticated end to end against a compromised DMZ', () => {
  const pki = makeTestPki([DEVICE, 'valve-2']);
  const work = tempDir('command-auth');
  const logs = new LogCapture();
  const marker = join(work.dir, 'valve-opened');
  const commandsFile = join(work.dir, 'commands.json');
  writeFileSync(commandsFile, JSON.stringify({ open_valve: { type: 'exec', program: 'sh', args: ['-c', `echo "$FIELDSTREAM_COMMAND_ID" >> '${marker}'`] } }));
  const key = parseSigningKey(readFileSync(pki.paths.device(DEVICE).signingKey, 'utf8')) as Buffer;
  const otherKey = parseSigningKey(readFileSync(pki.paths.device('valve-2').signingKey, 'utf8')) as Buffer;
  const runs = () => (existsSync(marker) ? readFileSync(marker, 'utf8').trim().split('\n') : []);
  const fieldEnv = (dataDir: string) => ({ FIELD_COMMANDS_FILE: commandsFile, FIELD_DATA_DIR: dataDir, FIELD_COMMAND_MAX_AGE_S: '600', FIELD_COMMAND_CLOCK_SKEW_S: '30' });
  const answerOf = (id: string, n = 1) =>
    eventually(() => answers.filter((x) => x.commandId === id)[n - 1], 20_000, `answer ${n} to ${id}`);
  let rogue: RogueGateway;
  const answers: Answer[] = [];
  const answerIds = new Set<string>();
  before(async () => {
    rogue = await RogueGateway.start(pki.paths, DEVICE, (batch) => {
      // A copy of an answer sent again (the rogue sends no receipts, so a restarted client sends
      // again all it holds) has the message id of the first: the internal side would drop it too.
      for (const m of batch) {
        if (m.dataType !== 'response' || answerIds.has(m.messageId)) continue;
        answerIds.add(m.messageId);
        answers.push(m.payload as Answer);
      }
    });
  });
  after(() => rogue.close());

  after(() => {
    pki.cleanup();
    work.cleanup();
  });

  describe('a WSS endpoint holding only the edge certificate', () => {
    it('runs nothing forged, altered, for another device, stale, future-dated or replayed', async () => {
      const dataDir = join(work.dir, 'field-a');
      const url = rogue.url;
      let field = await startTestFieldClient(pki.paths, DEVICE, url, logs.logger, fieldEnv(dataDir));
      await eventually(() => rogue.socket, 10_000, 'the field client connected');
      const send = (f: CommandFrame) => rogue.send(f);
      const now = Date.now();
      const signed = (id: string, params: CommandFrame['params'], issuedAt = now, expiresAt = now + 60_000, k = key, deviceId = DEVICE): CommandFrame => ({
        type: 'command', commandId: id, command: 'open_valve', params, issuedAt,
        auth: signCommand(k, { commandId: id, deviceId, command: 'open_valve', params, issuedAt }, expiresAt),
      });
      const attacks: [CommandFrame, string][] = [
        [{ type: 'command', commandId: 'cmd-forged', command: 'open_valve', params: { percent: 100 }, issuedAt: now }, 'FIELD_COMMAND_UNSIGNED'],
        [{ ...signed('cmd-badmac', { percent: 100 }), auth: { v: 1, expiresAt: now + 60_000, mac: 'A'.repeat(43) } }, 'FIELD_COMMAND_BAD_SIGNATURE'],
        [{ ...signed('cmd-altered', { percent: 10 }), params: { percent: 100 } }, 'FIELD_COMMAND_BAD_SIGNATURE'],
        [signed('cmd-other-device', { percent: 100 }, now, now + 60_000, otherKey, 'valve-2'), 'FIELD_COMMAND_BAD_SIGNATURE'],
        [signed('cmd-other-key', { percent: 100 }, now, now + 60_000, otherKey), 'FIELD_COMMAND_BAD_SIGNATURE'],
        [signed('cmd-stale', { percent: 100 }, now - 700_000, now + 60_000), 'FIELD_COMMAND_STALE'],
        [signed('cmd-expired', { percent: 100 }, now - 120_000, now - 60_000), 'FIELD_COMMAND_STALE'],
        [signed('cmd-future', { percent: 100 }, now + 120_000, now + 600_000), 'FIELD_COMMAND_FUTURE'],
      ];
      // Authentic but refused (stale, future-dated) is answered "rejected" with its code; what fails
      // authentication gets no answer (it would take room in the durable queue): counted, logged.
      const unanswered = new Set(['FIELD_COMMAND_UNSIGNED', 'FIELD_COMMAND_BAD_SIGNATURE']);
      for (const [frame, code] of attacks) {
        send(frame);
        if (unanswered.has(code)) continue;
        const a = await answerOf(frame.commandId);
        assert.equal(a.status, 'rejected', frame.commandId);
        assert.equal(a.result?.code, code, frame.commandId);
      }
      for (const [frame] of attacks.filter(([, c]) => unanswered.has(c))) assert.equal(answers.find((x) => x.commandId === frame.commandId), undefined, frame.commandId);
      assert.deepEqual(runs(), [], 'no attack ran');

      // A command the API really issued (captured on its way) runs once; sent again, never again.
      const real = signed('cmd-real-a', { percent: 40 });
      send(real);
      assert.equal((await answerOf('cmd-real-a')).status, 'completed');
      send(real); // replayed: refused, and not answered again (its answer is in the queue already)
      await eventually(() => field.client.status().commands.refusedByCode.FIELD_COMMAND_REPLAYED, 10_000, 'the replay refused');
      const status = field.client.status().commands;
      assert.equal(status.refused, attacks.length + 1);
      assert.equal(status.refusedByCode.FIELD_COMMAND_BAD_SIGNATURE, 4);
      assert.equal(status.unanswered, 6);
      assert.equal(answers.filter((x) => x.commandId === 'cmd-real-a').length, 1);

      await field.close();
      rogue.socket = undefined;
      field = await startTestFieldClient(pki.paths, DEVICE, url, logs.logger, fieldEnv(dataDir)); // the journal survives a restart
      await eventually(() => rogue.socket, 10_000, 'the field client reconnected');
      send(real);
      await eventually(() => field.client.status().commands.refusedByCode.FIELD_COMMAND_REPLAYED, 10_000, 'the replay refused after a restart');
      assert.deepEqual(runs(), ['cmd-real-a'], 'only the real command ran, once');
      await field.close();
    });
  });

  describe('the gateway’s identity on the real DMZ broker', () => {
    let stack: LocalStack;
    let token: string;
    let dmz: MqttClient;
    const captured: CommandEnvelope[] = [];
    before(async () => {
      ({ stack, token } = await startTestStack(pki.dir, join(work.dir, 'stack'), {}));
      const ca = readFileSync(pki.paths.publicCa);
      const gw = pki.paths.service('dmz/gateway');
      // A compromised gateway: the gateway's broker identity on the real DMZ Mosquitto, passing each
      // command on to the device through the rogue WSS endpoint (and keeping a copy to replay).
      dmz = await connectAsync(stack.urls.dmzMqtt, { ca, cert: readFileSync(gw.cert), key: readFileSync(gw.key), protocolVersion: 5 });
      dmz.on('message', (_t, m) => {
        const { v: _v, ...command } = JSON.parse(m.toString()) as CommandEnvelope;
        captured.push({ v: ENVELOPE_VERSION, ...command });
        rogue.socket?.send(JSON.stringify({ type: 'command', ...command }));
      });
      await dmz.subscribeAsync(commandTopic(DEVICE), { qos: 1 });
    });
    after(async () => {
      await dmz?.endAsync();
      await stack?.close();
    });

    it('runs the command API’s command once, and nothing the DMZ makes of it', async () => {
      const before = runs().length;
      const dataDir = join(work.dir, 'field-b');
      rogue.socket = undefined;
      let field = await startTestFieldClient(pki.paths, DEVICE, rogue.url, logs.logger, fieldEnv(dataDir));
      await eventually(() => rogue.socket, 10_000, 'the field client connected');
      const send = (e: CommandEnvelope) => {
        const { v: _v, ...command } = e;
        rogue.send({ type: 'command', ...command });
      };
      // The broker itself refuses the gateway's identity to publish commands.
      await assert.rejects(dmz.publishAsync(commandTopic(DEVICE), JSON.stringify({ v: 1, commandId: 'x', command: 'open_valve', issuedAt: Date.now() }), { qos: 1 }), /Not authorized/);

      const r = await api(stack, token, 'POST', '/v1/commands', { deviceId: DEVICE, command: 'open_valve', params: { percent: 40 } });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      const id = r.body.commands[0].commandId as string;
      assert.equal((await answerOf(id)).status, 'completed');
      const real = captured.find((e) => e.commandId === id) as CommandEnvelope;
      assert.ok(real.auth, 'the command API authenticated it');

      const forged: [CommandEnvelope, string][] = [
        [{ v: ENVELOPE_VERSION, commandId: 'dmz-forged', command: 'open_valve', params: { percent: 100 }, issuedAt: Date.now() }, 'FIELD_COMMAND_UNSIGNED'],
        [{ ...real, commandId: 'dmz-other-id' }, 'FIELD_COMMAND_BAD_SIGNATURE'],
        [{ ...real, commandId: 'dmz-altered', params: { percent: 100 } }, 'FIELD_COMMAND_BAD_SIGNATURE'],
      ];
      // None of these is answered (a forged command deserves no answer through the queue): counted.
      for (const [e] of forged) send(e);
      send({ ...real, params: { percent: 100 } }); // the real id, altered
      send(real); // replayed as it was
      await eventually(() => (field.client.status().commands.refused === forged.length + 2 ? true : undefined), 10_000, 'the forgeries refused');
      const byCode = field.client.status().commands.refusedByCode;
      assert.deepEqual(byCode, { FIELD_COMMAND_UNSIGNED: 1, FIELD_COMMAND_BAD_SIGNATURE: 3, FIELD_COMMAND_REPLAYED: 1 });
      for (const [e] of forged) assert.equal(answers.find((x) => x.commandId === e.commandId), undefined, e.commandId);
      await field.close();
      rogue.socket = undefined;
      field = await startTestFieldClient(pki.paths, DEVICE, rogue.url, logs.logger, fieldEnv(dataDir));
      await eventually(() => rogue.socket, 10_000, 'the field client reconnected');
      send(real); // replayed after a restart of the client
      await eventually(() => field.client.status().commands.refusedByCode.FIELD_COMMAND_REPLAYED, 10_000, 'the replay refused after a restart');
      assert.equal(answers.filter((x) => x.commandId === id).length, 1, 'the real command answered once');
      assert.deepEqual(runs().slice(before), [id], 'the real command ran once; nothing else ran');

      // A device without a registered key gets no command at all: the API refuses it.
      const none = await api(stack, token, 'POST', '/v1/commands', { deviceId: 'unknown-9', command: 'open_valve' });
      assert.equal(none.status, 409);
      assert.equal(none.body.code, 'API_DEVICE_KEY_MISSING');
      await field.close();
    });
  });
});
