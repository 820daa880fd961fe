import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { CommandFrame } from '../../shared/contract/downlink.ts';
import { signCommand } from '../../shared/security/command-auth.ts';
import { parseSigningKey } from '../../shared/security/message-auth.ts';
import { fieldClientProcess } from '../helpers/field.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { RogueGateway } from '../helpers/rogue-gateway.ts';
import { eventually } from '../helpers/ws-device.ts';

// Commands delivered together all started their exec programs at once. Now FIELD_COMMANDS_CONCURRENCY
// run, and the others wait before anything of them is journaled: a field client killed with SIGKILL
// while they wait ran nothing of them, and its next start runs them at their next delivery, still
// at most that many at once; those that ran are answered of unknown outcome, none twice.
const DEVICE = 'valve-6';
const IDS = ['cmd-0', 'cmd-1', 'cmd-2', 'cmd-3', 'cmd-4'];

describe('commands waiting for a slot when the field client is killed with SIGKILL', () => {
  const pki = makeTestPki([DEVICE]);
  const work = tempDir('command-concurrency-restart');
  after(() => {
    // The programs of cmd-0 and cmd-1 were ended by the restart; let any left end by themselves.
    for (const id of IDS) writeFileSync(join(work.dir, `go-${id}`), '');
    pki.cleanup();
    work.cleanup();
  });

  it('runs them after the restart, two at a time, each once, and answers each once', async () => {
    const key = parseSigningKey(readFileSync(pki.paths.device(DEVICE).signingKey, 'utf8')) as Buffer;
    const programsLog = join(work.dir, 'programs.log');
    const commandsFile = join(work.dir, 'commands.json');
    const script = `echo "start $FIELDSTREAM_COMMAND_ID" >> ${programsLog}; while [ ! -e ${work.dir}/go-$FIELDSTREAM_COMMAND_ID ]; do sleep 0.05; done; echo "end $FIELDSTREAM_COMMAND_ID" >> ${programsLog}`;
    writeFileSync(commandsFile, JSON.stringify({ job: { type: 'exec', program: '/bin/sh', args: ['-c', script], timeoutMs: 600_000 } }));
    const responses: Array<{ commandId: string; status: string; result?: unknown }> = [];
    const rogue = await RogueGateway.start(pki.paths, DEVICE, (batch) => {
      for (const m of batch) if (m.dataType === 'response') responses.push(m.payload as (typeof responses)[number]);
    });
    const dataDir = join(work.dir, 'data');
    const started = await fieldClientProcess({
      paths: pki.paths, deviceId: DEVICE, gatewayUrl: rogue.url, dataDir, logFile: join(work.dir, 'field.log'),
      env: { FIELD_COMMANDS_FILE: commandsFile, FIELD_COMMANDS_CONCURRENCY: '2' },
    });
    const field = started.process;
    const issuedAt = Date.now();
    const frames: CommandFrame[] = IDS.map((commandId) => ({
      type: 'command', commandId, command: 'job', issuedAt,
      auth: signCommand(key, { commandId, deviceId: DEVICE, command: 'job', issuedAt }, issuedAt + 600_000),
    }));
    const lines = () => (existsSync(programsLog) ? readFileSync(programsLog, 'utf8').trim().split('\n') : []);
    const journaledStarted = () => readFileSync(join(dataDir, 'commands.journal'), 'utf8').split('\n').filter((l) => l.split(' ')[1] === 'started').map((l) => l.split(' ')[0]);
    try {
      await field.start();
      const firstSocket = await eventually(() => rogue.socket, 15_000, 'the field client connected');
      for (const f of frames) rogue.send(f);
      await eventually(() => (lines().length >= 2 ? true : undefined), 15_000, 'two programs started');
      const status = await eventually(async () => {
        const s = (await (await fetch(`http://127.0.0.1:${started.httpPort}/status`)).json()) as { commands: { running: number; waiting: number } };
        return s.commands.waiting === 3 ? s : undefined;
      }, 15_000, 'three commands waiting');
      assert.equal(status.commands.running, 2);
      assert.deepEqual(lines(), ['start cmd-0', 'start cmd-1']);
      assert.deepEqual(journaledStarted(), ['cmd-0', 'cmd-1'], 'nothing journaled of those waiting');

      await field.kill();
      for (const id of IDS.slice(2)) writeFileSync(join(work.dir, `go-${id}`), '');
      await field.start(); // the same data folder: it ends the programs of cmd-0 and cmd-1
      await eventually(() => (rogue.socket !== firstSocket ? rogue.socket : undefined), 15_000, 'the client connected again');
      for (const f of frames) rogue.send(f); // the command API sends again what is not answered
      await eventually(() => (IDS.every((id) => responses.some((r) => r.commandId === id)) ? true : undefined), 20_000, 'every command answered');
      await new Promise((r) => setTimeout(r, 500)); // no second answer follows
      assert.deepEqual(responses.map((r) => r.commandId).sort(), IDS, 'each answered once');
      for (const id of ['cmd-0', 'cmd-1']) assert.match(String(responses.find((r) => r.commandId === id)?.result), /^FIELD_COMMAND_OUTCOME_UNKNOWN: /, id);
      for (const id of IDS.slice(2)) assert.equal(responses.find((r) => r.commandId === id)?.status, 'completed', id);
      const after = lines().slice(2);
      assert.deepEqual(after.filter((l) => l.startsWith('start')).sort(), ['start cmd-2', 'start cmd-3', 'start cmd-4'], 'those that waited ran once each, after the restart');
      let atOnce = 0;
      let most = 0;
      for (const l of after) most = Math.max(most, (atOnce += l.startsWith('start') ? 1 : -1));
      assert.ok(most <= 2, `at most two at once: ${after.join('; ')}`);
    } finally {
      await field.stop();
      await rogue.close();
    }
  });
});
