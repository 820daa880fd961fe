import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eventually } from '../helpers/ws-device.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startTestStack, subscriptions, untilResubscribed } from '../helpers/stack.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import { RESTART_INITIAL_DELAY_MS } from '../../scripts/local-stack/process.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import type { RunningFieldClient } from '../../field-client/src/start.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `npm run stack` restarts a component that exits unexpectedly, as `restart: unless-stopped` does. */
describe('the local stack supervises its processes', () => {
  const work = tempDir('supervisor');
  const pki = makeTestPki(['field-s']);
  const logs = new LogCapture(); // the supervisor's log
  const fieldLogs = new LogCapture();
  let stack: LocalStack;
  let field: RunningFieldClient;
  const base = Date.parse('2025-11-01T00:00:00Z');
  let next = 0;
  const stored = () => new Set(readLocalStore(stack.dataDir.timeseries).filter((p) => p.tags.device === 'field-s').map((p) => p.fields.v));
  /** Submits n readings and returns their values. */
  const submit = async (n: number) => {
    const first = next;
    next += n;
    await Promise.all(Array.from({ length: n }, (_, i) => field.client.submit('timeseries', { v: first + i, timestamp: base + first + i })));
    return Array.from({ length: n }, (_, i) => first + i);
  };
  const arrive = (values: number[], what: string) =>
    eventually(() => (values.every((v) => stored().has(v)) ? true : undefined), 45_000, `${values.length} readings ${what}`);
  const restartLines = (component: string) => logs.lines.filter((l) => l.component === component && l.restartInMs !== undefined);

  before(async () => {
    ({ stack } = await startTestStack(pki.dir, join(work.dir, 'stack'), { DISTRIBUTOR_RETRY_MAX_MS: '1000' }, { logger: logs.logger }));
    field = await startTestFieldClient(pki.paths, 'field-s', stack.urls.wss, fieldLogs.logger);
    await arrive(await submit(10), 'before any fault');
  });
  after(async () => {
    await field?.close();
    await stack?.close();
    pki.cleanup();
    work.cleanup();
  });

  it('restarts a distributor killed with SIGKILL, logs why, and the data flows again', async () => {
    const pid = stack.distributor.pid;
    await stack.kill('distributor', 'SIGKILL');
    await stack.untilRunning('distributor');
    assert.notEqual(stack.distributor.pid, pid, 'a new process');
    const line = restartLines('distributor')[0];
    assert.ok(line, 'a log line for the crash');
    assert.equal(line.signal, 'SIGKILL');
    assert.equal(line.restartInMs, RESTART_INITIAL_DELAY_MS);
    assert.match(String(line.msg), /distributor exited unexpectedly/);
    await arrive(await submit(50), 'after the distributor came back');
  });

  it('restarts the internal Mosquitto from its own configuration and data folder; the pipeline heals', async () => {
    const before = subscriptions(stack).again;
    const pid = stack.internalMosquitto.pid;
    await stack.kill('internal-mosquitto');
    await stack.untilRunning('internal-mosquitto');
    assert.notEqual(stack.internalMosquitto.pid, pid, 'a new process');
    await untilResubscribed(stack, before);
    await arrive(await submit(50), 'after the internal broker came back');
  });

  it('backs off exponentially for a component that keeps crashing', async () => {
    for (let i = 0; i < 3; i++) {
      await stack.kill('gateway-1');
      await stack.untilRunning('gateway-1');
    }
    const delays = restartLines('gateway-1').map((l) => l.restartInMs);
    assert.deepEqual(delays, [RESTART_INITIAL_DELAY_MS, 2 * RESTART_INITIAL_DELAY_MS, 4 * RESTART_INITIAL_DELAY_MS]);
    // Caddy's upstream is back: the device reconnects through it and is heard again.
    await arrive(await submit(20), 'after the gateway crashes');
  });

  it('pauses (SIGSTOP) and resumes (SIGCONT) a component without restarting it', async () => {
    const pid = stack.distributor.pid;
    await stack.pause('distributor');
    const values = await submit(20);
    await sleep(1500);
    assert.ok(!values.some((v) => stored().has(v)), 'nothing written while the distributor is frozen');
    await stack.resume('distributor');
    await arrive(values, 'once the distributor was resumed');
    assert.equal(stack.distributor.pid, pid, 'the same process');
  });

  it('a clean stop restarts nothing', async () => {
    const before = logs.lines.length;
    await stack.close();
    await sleep(RESTART_INITIAL_DELAY_MS * 3);
    assert.deepEqual(stack.all.filter((p) => p.running).map((p) => p.name), []);
    assert.deepEqual(logs.lines.slice(before).filter((l) => l.restartInMs !== undefined), []);
  });
});

/** `npm run stack` where another program holds one of its ports, as its README line promises of `npm start`. */
describe('the local stack refuses a port another program holds', () => {
  const work = tempDir('stack-port');
  after(() => work.cleanup());

  // The DMZ broker's port is one a readiness check waits on; Caddy's HTTP port is not (its HTTPS one is).
  for (const setting of ['STACK_DMZ_MQTT_PORT', 'STACK_HTTP_PORT']) {
    it(`stops at once with LISTEN_FAILED naming the address and the STACK_* setting, one line, no stack trace (${setting})`, async () => {
      const held = createServer();
      await new Promise<void>((resolve) => held.listen(0, '127.0.0.1', resolve));
      const heldPort = (held.address() as { port: number }).port;
      const ports: Record<string, string> = {};
      for (const name of ['STACK_HTTPS_PORT', 'STACK_HTTP_PORT', 'STACK_DMZ_MQTT_PORT', 'STACK_INTERNAL_MQTT_PORT', 'STACK_GATEWAY_PORT', 'STACK_COMMAND_API_PORT', 'STACK_CONSOLE_PORT']) {
        ports[name] = String(await freePort());
      }
      ports[setting] = String(heldPort);
      try {
        const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
          const repo = join(import.meta.dirname, '..', '..');
          const child = execFile(process.execPath, ['--import', 'tsx', join(repo, 'scripts', 'local-stack.ts')], {
            cwd: repo,
            timeout: 120_000,
            env: {
              PATH: process.env.PATH,
              FIELDSTREAM_ENV_FILE: '/dev/null',
              CERTS_DIR: join(work.dir, 'certs'),
              STACK_DIR: join(work.dir, 'stack'),
              ...ports,
            },
          }, (_err, _stdout, stderr) => resolve({ code: child.exitCode, stderr }));
        });
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, new RegExp(`^stack: error LISTEN_FAILED: .*127\\.0\\.0\\.1:${heldPort}.*\\(${setting}\\)`, 'm'));
        assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
      } finally {
        held.close();
      }
    });
  }
});
