import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eventually } from '../helpers/ws-device.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { api, startTestStack, subscriptions, untilResubscribed } from '../helpers/stack.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import type { RunningFieldClient } from '../../field-client/src/start.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** ms allowed for the broker's next save: its autosave_interval is 5 s (Mosquitto saves once more
 * than that has passed, counted in whole seconds) */
const AUTOSAVE_DEADLINE_MS = 15_000;
/** ms: how long the crashed broker stays down, as in the report (a restart policy's delay) */
const DOWN_MS = 3_000;

/**
 * A broker killed with SIGKILL and started again from its own configuration and
 * data folder. Mosquitto restores each persistent session from its file and answers "session
 * present", but not the session's shared subscriptions ($share/...): a client that subscribed only
 * when the session was new got nothing more, ever. Every subscriber now subscribes on every connection.
 */
describe('a broker crash: every subscriber is subscribed again once its broker is back', () => {
  const work = tempDir('broker-restart');
  const pki = makeTestPki(['field-r']);
  const logs = new LogCapture();
  let stack: LocalStack;
  let token: string;
  let field: RunningFieldClient;
  const base = Date.parse('2025-10-01T00:00:00Z');
  let next = 0;
  /** Submits n readings; resolves once every one of them is in the distributor's store. */
  const stream = async (n: number, what: string) => {
    const first = next;
    next += n;
    await Promise.all(Array.from({ length: n }, (_, i) => field.client.submit('timeseries', { v: first + i, timestamp: base + first + i })));
    await eventually(
      () => {
        const have = new Set(readLocalStore(stack.dataDir.timeseries).filter((p) => p.tags.device === 'field-r').map((p) => p.fields.v));
        return Array.from({ length: n }, (_, i) => first + i).every((v) => have.has(v)) ? true : undefined;
      },
      45_000,
      `${n} readings ${what} in the store`,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n--- distributor ---\n${stack.distributor.tail(15)}`);
    });
  };
  /**
   * Resolves once the broker has saved its persistence file after this call, so that the file holds
   * our sessions, as it does for a broker that ran for a while before it crashed. Mosquitto writes
   * the file whole and renames it into place at each autosave: a newer mtime is a newer save. (A
   * fixed wait past the autosave interval, 6.5 s, did the same at every crash.)
   */
  const untilSaved = async (tier: 'dmz' | 'internal') => {
    const file = join(work.dir, 'stack', `${tier}-mosquitto`, 'mosquitto.db');
    const since = Date.now();
    await eventually(() => (existsSync(file) && statSync(file).mtimeMs > since ? true : undefined), AUTOSAVE_DEADLINE_MS, `the ${tier} broker saving its persistence file`);
  };
  const crash = async (broker: ManagedProcess, tier: 'dmz' | 'internal') => {
    await untilSaved(tier);
    await broker.kill(); // SIGKILL: no clean shutdown, no last save
    await sleep(DOWN_MS);
    await broker.start(); // the same configuration and persistence folder
  };

  before(async () => {
    ({ stack, token } = await startTestStack(pki.dir, join(work.dir, 'stack'), { DISTRIBUTOR_RETRY_MAX_MS: '1000' }));
    field = await startTestFieldClient(pki.paths, 'field-r', stack.urls.wss, logs.logger);
    field.commands.register('ping', () => ({ status: 'completed', result: 'pong' }));
  });
  after(async () => {
    await field?.close();
    await stack?.close();
    pki.cleanup();
    work.cleanup();
  });

  it('the distributor writes what arrives after the internal Mosquitto crashed and restarted', async () => {
    await stream(20, 'before the crash');
    const before = subscriptions(stack).again;
    await crash(stack.internalMosquitto, 'internal');
    await untilResubscribed(stack, before);
    await stream(200, 'published after the restart');
    // The broker did restore the session (so a subscribe-when-new client would have waited forever).
    assert.match(stack.distributor.tail(200), /"sessionPresent":true[^\n]*"msg":"subscription granted again after reconnect"/);
  });

  it('the gateway still forwards commands (and readings) after the DMZ Mosquitto crashed and restarted', async () => {
    await crash(stack.dmzMosquitto, 'dmz');
    const issued = await api(stack, token, 'POST', '/v1/commands', { deviceId: 'field-r', command: 'ping' });
    assert.equal(issued.status, 202, JSON.stringify(issued.body));
    const id = issued.body.commands[0].commandId as string;
    const done = await eventually(
      async () => {
        const r = await api(stack, token, 'GET', `/v1/commands/${id}`);
        return r.body.state === 'completed' ? r.body : undefined;
      },
      45_000,
      'the command answered',
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n--- gateway ---\n${stack.gateways[0]?.tail(15)}`);
    });
    assert.equal(done.response.result, 'pong');
    await stream(50, 'sent after the DMZ broker restarted');
  });
});
