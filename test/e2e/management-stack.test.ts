import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { ROLE_TOKENS, writeRoleTokens } from '../helpers/console-client.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startTestStack } from '../helpers/stack.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'valve-1';

/**
 * The management API as `npm run stack` runs it (docs/management-api.md): its own console process
 * beside both real Mosquitto brokers, the bridge between them, the broker exporter, Caddy and a
 * gateway. The state of both brokers and the bridge comes from the exporter, the distributor's
 * and the database's from the distributor; a test event crosses the real bridge and Caddy to a
 * field client and its signed answer comes back.
 */
describe('the management API on the real stack', () => {
  const work = tempDir('manage-stack');
  const pki = makeTestPki([DEVICE]);
  const logs = new LogCapture();
  let stack: LocalStack;
  let field: Awaited<ReturnType<typeof startTestFieldClient>>;

  const call = async (path: string, token: string, init: { method?: string; body?: unknown } = {}) => {
    const res = await fetch(new URL(`/api/v1/manage${path}`, stack.urls.console), {
      method: init.method ?? 'GET',
      headers: { authorization: `Bearer ${token}`, ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
    });
    return { status: res.status, body: (await res.json()) as any };
  };

  before(async () => {
    ({ stack } = await startTestStack(pki.dir, join(work.dir, 'stack'), { COMMAND_API_TOKENS_FILE: writeRoleTokens(work.dir) }));
    field = await startTestFieldClient(pki.paths, DEVICE, stack.urls.wss, logs.logger);
  });
  after(async () => {
    await field?.close();
    await stack?.close();
    pki.cleanup();
    work.cleanup();
  });

  it('reports both brokers, the bridge, the distributor and the database as the exporter and the distributor see them', async () => {
    const status = await eventually(async () => {
      const r = await call('/status', ROLE_TOKENS.viewer);
      assert.equal(r.status, 200);
      const s = r.body;
      // The console looks every pipelinePollMs: its last look may be from before the distributor's
      // consumers connected (its /readyz answers from the start), so that is waited for too.
      const distributorsReady = s.distributors.length > 0 && s.distributors.every((d: { ready: boolean }) => d.ready === true);
      return s.brokers.internal.up === true && s.brokers.dmz.up === true && s.bridge.connected === true && s.database.ok === true && distributorsReady ? s : undefined;
    }, 30_000, 'both brokers up, the bridge connected, the distributor ready, the database writable');
    assert.deepEqual(status.brokers, { internal: { up: true, source: 'broker-exporter' }, dmz: { up: true, source: 'broker-exporter' } });
    assert.deepEqual(status.bridge, { connected: true, source: 'broker-exporter' });
    assert.deepEqual(status.distributors.map((d: { name: string; ready: boolean; broker: boolean; database: boolean }) => [d.name, d.ready, d.broker, d.database]), [['distributor', true, true, true]]);
  });

  it('sends a test event across the bridge to the device, which answers it', async () => {
    await eventually(async () => ((await call(`/devices/${DEVICE}`, ROLE_TOKENS.viewer)).body.state === 'online' ? true : undefined), 30_000, 'the device online');
    const sent = await call(`/devices/${DEVICE}/test-event`, ROLE_TOKENS.admin, { method: 'POST', body: { note: 'stack' } });
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    const done = await eventually(async () => {
      const r = await call(`/test-events/${sent.body.commandId}`, ROLE_TOKENS.viewer);
      return r.body.state === 'completed' ? r.body : undefined;
    }, 30_000, 'the test event answered');
    assert.equal(done.response.result.test, 'received');
    assert.equal(done.response.result.note, 'stack');
  });

  // Last: these stop the brokers the test event above needs.
  type Status = { brokers: { internal: { up: boolean | null; source: string }; dmz: { up: boolean | null; source: string } }; bridge: { connected: boolean | null; source: string }; distributors: Array<{ broker: boolean | null }> };
  const status = async () => {
    const r = await call('/status', ROLE_TOKENS.viewer);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body as Status;
  };
  const allUp = (s: Status) => s.brokers.internal.up === true && s.brokers.dmz.up === true && s.bridge.connected === true;

  it('reports the DMZ broker and the bridge down while the DMZ broker is stopped, and up again after it restarts', async () => {
    await stack.dmzMosquitto.stop();
    const down = await eventually(async () => {
      const s = await status();
      return s.brokers.dmz.up === false && s.bridge.connected === false ? s : undefined;
    }, 30_000, 'the DMZ broker and the bridge reported down');
    assert.deepEqual(down.brokers, { internal: { up: true, source: 'broker-exporter' }, dmz: { up: false, source: 'broker-exporter' } });
    assert.deepEqual(down.bridge, { connected: false, source: 'broker-exporter' });

    await stack.dmzMosquitto.start();
    // The bridge retries with a growing delay (restart_timeout 2 30).
    await eventually(async () => (allUp(await status()) ? true : undefined), 60_000, 'the DMZ broker and the bridge reported up again');
  });

  it('reports the internal broker (and so the bridge) down while it is stopped, and up again after it restarts', async () => {
    await stack.internalMosquitto.stop();
    const down = await eventually(async () => {
      const s = await status();
      return s.brokers.internal.up === false && s.bridge.connected === false && s.distributors.every((d) => d.broker === false) ? s : undefined;
    }, 30_000, 'the internal broker reported down');
    // From the exporter, not from the console's own (also lost) connection: the same source as when up.
    assert.deepEqual(down.brokers, { internal: { up: false, source: 'broker-exporter' }, dmz: { up: true, source: 'broker-exporter' } });
    assert.deepEqual(down.bridge, { connected: false, source: 'broker-exporter' });

    await stack.internalMosquitto.start();
    const up = await eventually(async () => {
      const s = await status();
      return allUp(s) && s.distributors.every((d) => d.broker === true) ? s : undefined;
    }, 60_000, 'the internal broker and the bridge reported up again');
    assert.deepEqual(up.brokers, { internal: { up: true, source: 'broker-exporter' }, dmz: { up: true, source: 'broker-exporter' } });
  });
});
