import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CommandApi } from '../../internal-network/command-api/command-api.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { issueTestCommand, startTestCommandApi, testCommandState } from '../helpers/command-api.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * One command API per journal (internal-network/command-api/state-lock.ts). Two on one
 * COMMAND_STATE_PATH (`npm start` and `npm run command-api` in one checkout share
 * `./data/commands.jsonl`) each rewrote it at a compaction from the commands it held, without those
 * the other had accepted since. A command API as its own process holds the journal; a second start
 * on it is refused, naming the first, and leaves the journal as it was; once the first is killed
 * with SIGKILL, a start takes the journal over at once, the command accepted before the kill in it.
 * No broker is needed for any of it: commands are journaled (and answered 202) before they are sent.
 */
describe('the lock of the command journal', () => {
  const pki = makeTestPki([]);
  const work = tempDir('command-state-lock');
  const logs = new LogCapture();
  const token = 'state-lock-test-token-0123456789abcdef';
  const journal = join(work.dir, 'commands.jsonl');
  let first: ChildProcess | undefined;
  let firstPort = 0;
  let second: CommandApi | undefined;
  let unusedPort = 0;

  before(async () => {
    firstPort = await freePort();
    // A port nothing listens on: the broker is never reached, and never needed here.
    unusedPort = await freePort();
    const p = pki.paths;
    first = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'internal-network', 'command-api', 'main.ts')], {
      cwd: REPO_ROOT,
      env: {
        PATH: process.env.PATH,
        FIELDSTREAM_ENV_FILE: '/dev/null',
        LOG_LEVEL: 'warn',
        MQTT_URL: `mqtts://127.0.0.1:${unusedPort}`,
        MQTT_CA_FILE: p.publicCa,
        MQTT_CERT_FILE: p.service('internal/command-api').cert,
        MQTT_KEY_FILE: p.service('internal/command-api').key,
        COMMAND_API_HOST: '127.0.0.1',
        COMMAND_API_PORT: String(firstPort),
        COMMAND_API_TOKEN: token,
        COMMAND_STATE_PATH: journal,
        COMMAND_DEVICE_KEYS_DIR: join(pki.dir, 'internal', 'device-keys'),
        COMMAND_REVOKED_DEVICES_FILE: join(pki.dir, 'internal', 'revoked-devices.txt'),
        COMMAND_ALLOW_UNSIGNED: 'true',
        COMMAND_API_METRICS_PORT: 'off',
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    await eventually(async () => {
      try {
        return (await fetch(`http://127.0.0.1:${firstPort}/healthz`)).status > 0 ? true : undefined;
      } catch {
        return undefined;
      }
    }, 30_000, 'the first command API listening');
  });
  after(async () => {
    first?.kill('SIGKILL');
    await second?.close();
    pki.cleanup();
    work.cleanup();
  });

  const startSecond = () => startTestCommandApi({ brokerUrl: `mqtts://127.0.0.1:${unusedPort}`, pki, dir: work.dir, token, clientId: 'command-api-second', log: logs.logger });

  it('refuses a second command API on the journal, naming the first, and leaves the journal as it was', async () => {
    const id = await issueTestCommand(firstPort, token, { deviceId: 'pump-1', command: 'reboot' });
    const lock = JSON.parse(readFileSync(`${journal}.lock`, 'utf8')) as { pid: number };
    assert.equal(lock.pid, first?.pid, 'the lock names the first');
    const before = readFileSync(journal, 'utf8');
    await assert.rejects(startSecond(), (err: unknown) => isFieldStreamError(err) && err.code === 'API_STATE_IN_USE' && err.message.includes(`process ${first?.pid}`));
    assert.equal(readFileSync(journal, 'utf8'), before, 'the journal untouched');
    // The first goes on: its command still known, a new one accepted.
    assert.equal(await testCommandState(firstPort, token, id), 'queued');
    await issueTestCommand(firstPort, token, { deviceId: 'pump-1', command: 'status' });
  });

  it('takes the journal over at once from a command API killed with SIGKILL, every command accepted before the kill in it', async () => {
    const ids = readFileSync(journal, 'utf8').match(/"commandId":"[^"]+"/g) ?? [];
    assert.equal(new Set(ids).size, 2, 'two commands accepted by the first');
    const exited = new Promise((r) => first?.once('exit', r));
    first?.kill('SIGKILL');
    await exited;
    assert.ok(existsSync(`${journal}.lock`), 'the killed one left its lock');
    const started = Date.now();
    second = await startSecond();
    // Its holder's process gone on this machine: not the 15 s a lock from another host is waited for.
    assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
    for (const quoted of new Set(ids)) assert.equal(await testCommandState(second.port, token, quoted.slice('"commandId":"'.length, -1)), 'queued');
    assert.equal(JSON.parse(readFileSync(`${journal}.lock`, 'utf8')).pid, process.pid, 'the lock names the new holder');
  });
});
