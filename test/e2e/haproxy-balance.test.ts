import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { startDmzServer, type DmzServer } from '../../scripts/local-stack/dmz-server.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { createLogger } from '../../shared/logger.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { REPO_ROOT, startHaproxy } from '../helpers/stack.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICES = ['hp-1', 'hp-2', 'hp-3', 'hp-4'];
const log = createLogger('test', 'silent');

/**
 * haproxy/haproxy.cfg in front of two real DMZ servers (Caddy, gateway, DMZ Mosquitto each), one of
 * which has lost its gateway while its Caddy still answers (a crashed or crash-looping gateway:
 * Caddy answers every upgrade 502). HAProxy's health check reaches Caddy only (docs/deployment.md,
 * "More than one DMZ server"), so that server stays in the rotation; every device that connects
 * through HAProxy must still reach the other server after a few attempts, not be sent back to the
 * broken one again and again.
 */
describe('HAProxy with one DMZ server whose gateways are down', () => {
  const work = tempDir('haproxy-balance');
  const pki = makeTestPki(DEVICES);
  let s1: DmzServer;
  let s2: DmzServer;
  let haproxy: ManagedProcess;
  let url: string;
  const conns: GatewayConnection[] = [];
  before(async () => {
    const common = { repoRoot: REPO_ROOT, certsDir: pki.dir, env: { LOG_LEVEL: 'warn' }, logger: log, gateways: 1 };
    s1 = await startDmzServer({ ...common, workDir: join(work.dir, 'dmz1'), id: 'dmz1' });
    s2 = await startDmzServer({ ...common, workDir: join(work.dir, 'dmz2'), id: 'dmz2' });
    let hp: number;
    ({ process: haproxy, port: hp } = await startHaproxy([s1, s2], work.dir, join(work.dir, 'haproxy.log')));
    url = `wss://localhost:${hp}/ws`;
    // Server 1's gateway dies and stays dead (kill() also ends its supervision); its Caddy lives on.
    await Promise.all(s1.gateways.map((g) => g.kill()));
  });
  after(async () => {
    await Promise.all(conns.map((c) => c.stop()));
    await haproxy?.stop();
    await s1?.close();
    await s2?.close();
    pki.cleanup();
    work.cleanup();
  });

  it('sends every device to the server that can take it within a few attempts', async () => {
    for (const id of DEVICES) {
      const d = pki.paths.device(id);
      const conn = new GatewayConnection(
        { url, tls: { ca: readFileSync(pki.paths.publicCa, 'utf8'), cert: readFileSync(d.cert, 'utf8'), key: readFileSync(d.key, 'utf8') }, reconnectInitialMs: 100, reconnectMaxMs: 400, idleTimeoutMs: 60_000 },
        log,
      );
      conns.push(conn);
      let opened = false;
      conn.on('open', () => (opened = true));
      conn.start();
      // Each attempt that lands on server 1 fails at once (502) and the next comes within 400 ms.
      await eventually(() => (opened ? true : undefined), 15_000, `${id} connected through HAProxy (after ${conn.consecutiveFailures} refused attempts)`);
    }
  });

  it("lets a device that connects while its server's only gateway restarts through once it is back, not a 502 for Caddy's whole fail_duration", async () => {
    const gateway = s2.gateways[0] as ManagedProcess;
    const restartsBefore = gateway.restarts;
    process.kill(gateway.pid as number, 'SIGKILL'); // supervised: restarted as compose's restart policy would
    const d = pki.paths.device('hp-1');
    const tls = { ca: readFileSync(pki.paths.publicCa), cert: readFileSync(d.cert), key: readFileSync(d.key) };
    // Straight to server 2's Caddy (EDGE_HOP=mtls, one upstream: what a name for every replica is to Caddy).
    const attempt = () =>
      new Promise<string>((resolve) => {
        const ws = new WebSocket(s2.urls.wss, { ...tls, handshakeTimeout: 10_000 });
        ws.on('open', () => {
          ws.close();
          resolve('open');
        });
        ws.on('unexpected-response', (_req, res) => {
          res.destroy();
          ws.terminate();
          resolve(String(res.statusCode));
        });
        ws.on('error', (err) => resolve(err.message));
      });
    const first = await attempt(); // while it is down: refused (502) or held until it is back
    await eventually(() => (gateway.restarts > restartsBefore ? true : undefined), 15_000, 'the gateway restarted');
    const back = Date.now();
    const answers: string[] = [first];
    for (;;) {
      const a = await attempt();
      answers.push(a);
      if (a === 'open') break;
      // Caddy marked its one upstream down at the failure: for 10 s (fail_duration before) every
      // attempt was a 502; now at most 2 s, and an attempt meanwhile waits for it (lb_try_duration).
      assert.ok(Date.now() - back < 6_000, `still refused ${Date.now() - back} ms after the gateway came back: ${answers.join(', ')}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  });
});
