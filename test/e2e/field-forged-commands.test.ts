import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CommandFrame } from '../../shared/contract/downlink.ts';
import { parseSigningKey } from '../../shared/security/message-auth.ts';
import { signCommand } from '../../shared/security/command-auth.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { RogueGateway } from '../helpers/rogue-gateway.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'valve-9';

/**
 * A compromised gateway floods a device with forged commands (and replays of a real one). None is
 * answered through the durable queue — each answer would be fsync'ed and wait for a receipt that
 * never comes, until real readings found the queue full — they are counted and logged, rate-limited.
 * An authentic command refused as stale is still answered, once.
 */
describe('forged commands take no room in the durable queue', () => {
  const pki = makeTestPki([DEVICE]);
  const work = tempDir('forged-commands');
  const logs = new LogCapture();
  const key = parseSigningKey(readFileSync(pki.paths.device(DEVICE).signingKey, 'utf8')) as Buffer;
  const commandsFile = join(work.dir, 'commands.json');
  writeFileSync(commandsFile, JSON.stringify({ noop: { type: 'exec', program: 'true', args: [] } }));
  const responses: { commandId: string; status: string; result?: { code?: string } }[] = [];
  let readings = 0;
  let rogue: RogueGateway;
  let field: Awaited<ReturnType<typeof startTestFieldClient>>;
  before(async () => {
    rogue = await RogueGateway.start(pki.paths, DEVICE, (batch) => {
      for (const m of batch) {
        if (m.dataType === 'response') responses.push(m.payload as (typeof responses)[number]);
        if (m.dataType === 'timeseries') readings++;
      }
    });
    field = await startTestFieldClient(pki.paths, DEVICE, rogue.url, logs.logger, {
      FIELD_COMMANDS_FILE: commandsFile,
      FIELD_QUEUE_MAX_BYTES: String(1024 * 1024),
      FIELD_COMMAND_MAX_AGE_S: '600',
      FIELD_COMMAND_CLOCK_SKEW_S: '30',
    });
    await eventually(() => rogue.socket, 10_000, 'the field client connected');
  });
  after(async () => {
    await field?.close();
    await rogue.close();
    pki.cleanup();
    work.cleanup();
  });

  it('answers no forged or replayed command, counts them, logs them rate-limited; answers an authentic stale one once', async () => {
    const now = Date.now();
    const signed = (id: string, issuedAt = now, expiresAt = now + 60_000): CommandFrame => ({
      type: 'command', commandId: id, command: 'noop', issuedAt,
      auth: signCommand(key, { commandId: id, deviceId: DEVICE, command: 'noop', issuedAt }, expiresAt),
    });
    const real = signed('real-1');
    rogue.send(real);
    await eventually(() => responses.find((r) => r.commandId === 'real-1'), 10_000, 'the real command answered');

    const N = 3000;
    const pad = 'x'.repeat(200);
    for (let i = 0; i < N; i++) {
      const f: CommandFrame =
        i % 2 === 0
          ? { type: 'command', commandId: `forged-${i}`, command: 'noop', params: { pad }, issuedAt: now } // unsigned
          : { ...signed(`forged-${i}`), params: { pad } }; // altered: bad signature
      rogue.send(f);
    }
    for (let i = 0; i < 20; i++) rogue.send(real); // replays of an answered command
    const stale = signed('stale-1', now - 700_000, now + 60_000);
    for (let i = 0; i < 3; i++) rogue.send(stale); // authentic, refused as stale: answered once
    await eventually(() => (field.client.status().commands.refused >= N + 20 + 3 ? true : undefined), 60_000, 'every command looked at').catch((err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify(field.client.status().commands)}`);
    });
    await new Promise((r) => setTimeout(r, 500)); // any answer queued would be on its way by now

    assert.deepEqual(
      responses.map((r) => `${r.commandId}:${r.status}:${r.result?.code ?? ''}`),
      ['real-1:completed:', 'stale-1:rejected:FIELD_COMMAND_STALE'],
      'only the real command and the authentic stale one were answered',
    );
    const status = field.client.status();
    assert.equal(status.commands.refusedByCode.FIELD_COMMAND_UNSIGNED, N / 2);
    assert.equal(status.commands.refusedByCode.FIELD_COMMAND_BAD_SIGNATURE, N / 2);
    assert.equal(status.commands.refusedByCode.FIELD_COMMAND_REPLAYED, 20);
    assert.equal(status.commands.unanswered, N + 20 + 2);
    assert.ok(status.queue.bytes < 64 * 1024, `the queue holds ${status.queue.bytes} bytes`);
    const logged = logs.lines.filter((l) => l.msg === 'command refused; not run, not answered').length;
    assert.ok(logged <= 20, `${logged} log lines for ${N + 20} unanswered refusals`);

    // Real data still finds room.
    await field.client.submit('timeseries', { lps: 1, timestamp: new Date().toISOString() });
    await eventually(() => (readings > 0 ? true : undefined), 10_000, 'the reading sent');
  });
});
