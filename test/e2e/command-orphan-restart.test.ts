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
import { alive } from '../helpers/processes.ts';

// An exec command's program runs in a process group of its own, which a field client killed with
// SIGKILL does not take with it: the program ran on unseen, and the restarted client answered its
// command only at its next delivery, with no word of the program still running. Now its group is
// journaled with its identity as it is spawned, and the next start ends it and answers the command.
const DEVICE = 'valve-4';

describe('an exec program left running by a field client killed with SIGKILL', () => {
  const pki = makeTestPki([DEVICE]);
  const work = tempDir('command-orphan');
  const pidFile = join(work.dir, 'pids');
  let pids: number[] = [];
  after(() => {
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    pki.cleanup();
    work.cleanup();
  });

  it('is ended by the next start of the client on the same data folder, and its command answered of unknown outcome', async () => {
    const key = parseSigningKey(readFileSync(pki.paths.device(DEVICE).signingKey, 'utf8')) as Buffer;
    const commandsFile = join(work.dir, 'commands.json');
    // The script and a child of its own in the background: the whole group must end.
    const script = `sleep 300 & echo $! > ${pidFile}; echo $$ >> ${pidFile}; wait`;
    writeFileSync(commandsFile, JSON.stringify({ job: { type: 'exec', program: '/bin/sh', args: ['-c', script], timeoutMs: 600_000 } }));
    const responses: Array<{ commandId: string; status: string; result?: unknown }> = [];
    const rogue = await RogueGateway.start(pki.paths, DEVICE, (batch) => {
      for (const m of batch) if (m.dataType === 'response') responses.push(m.payload as (typeof responses)[number]);
    });
    const dataDir = join(work.dir, 'data');
    const field = (await fieldClientProcess({ paths: pki.paths, deviceId: DEVICE, gatewayUrl: rogue.url, dataDir, logFile: join(work.dir, 'field.log'), env: { FIELD_COMMANDS_FILE: commandsFile } })).process;
    try {
      await field.start();
      const firstSocket = await eventually(() => rogue.socket, 15_000, 'the field client connected');
      const issuedAt = Date.now();
      const frame: CommandFrame = {
        type: 'command', commandId: 'cmd-orphan', command: 'job', issuedAt,
        auth: signCommand(key, { commandId: 'cmd-orphan', deviceId: DEVICE, command: 'job', issuedAt }, issuedAt + 600_000),
      };
      rogue.send(frame);
      await eventually(() => (existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim().split('\n').length >= 2) || undefined, 15_000, 'the program started');
      pids = readFileSync(pidFile, 'utf8').trim().split('\n').map(Number);

      await field.kill();
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(pids.every(alive), 'the program and its child run on after the client was killed');
      assert.equal(responses.length, 0, 'nothing answered yet');

      await field.start(); // the same data folder
      await eventually(() => (rogue.socket !== firstSocket ? rogue.socket : undefined), 15_000, 'the client connected again');
      await eventually(() => (pids.some(alive) ? undefined : true), 15_000, 'the program and its child ended');
      const answer = await eventually(() => responses.find((r) => r.commandId === 'cmd-orphan'), 15_000, 'the command answered, without its next delivery');
      assert.equal(answer.status, 'failed');
      assert.match(String(answer.result), /^FIELD_COMMAND_OUTCOME_UNKNOWN: .*still ran at the restart, and was ended/);
      const log = readFileSync(join(work.dir, 'field.log'), 'utf8');
      assert.match(log, /"fate":"ended"/);
    } finally {
      await field.stop();
      await rogue.close();
    }
  });
});
