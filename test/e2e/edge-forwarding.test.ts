import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { connect as h2connect } from 'node:http2';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import WebSocket from 'ws';
import { DeviceTokens } from '../../dmz/gateway/device-tokens.ts';
import { startGatewayServer, type GatewayServer } from '../../dmz/gateway/server.ts';
import { generateToken, hashTokenSecret, parseToken } from '../../shared/security/device-token.ts';
import { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { captureLogs, edgeCertificates, socketGatewayOptions } from '../helpers/gateway-fixture.ts';
import { tempDir } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const UPGRADE = 'GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';

/**
 * What the real Caddyfile passes on to a real gateway (EDGE_HOP=unix, the token route on). Every
 * request Caddy passes on is a connection of its own to a gateway (with EDGE_HOP=mtls, a TLS
 * handshake each): what a client can make Caddy pass on, without a token, is what it can make the
 * gateways do. The gateway's accepted connections are counted in this process (net.server.socket).
 */
describe('Caddy in front of a gateway: what reaches the gateway, and at what cost to the client', () => {
  const work = tempDir('edge-forwarding');
  const logs = captureLogs();
  const { ca, server, tlsOf } = edgeCertificates();
  const sockDir = join(work.dir, 'run');
  const socketPath = join(sockDir, 'gw.sock');
  let broker: { url: string; process: ManagedProcess };
  let mqtt: MqttClient;
  let tokens: DeviceTokens;
  let gateway: GatewayServer;
  let caddy: ManagedProcess;
  let certPort: number;
  let tokenPort: number;
  let token: string;
  let accepted = 0;
  const onSocket = () => accepted++;

  before(async () => {
    mkdirSync(sockDir);
    chmodSync(sockDir, 0o700);
    const file = (name: string, text: string) => {
      const path = join(work.dir, name);
      writeFileSync(path, text, { mode: 0o600 });
      return path;
    };
    const caFile = file('ca.crt', ca.certPem);
    const edgeCert = file('edge.crt', server.certPem);
    const edgeKey = file('edge.key', server.keyPem);
    token = generateToken('plc-1');
    const tokensFile = file(
      'device-tokens.json',
      JSON.stringify({ version: 1, devices: { 'plc-1': { state: 'active', tokenId: '0123456789abcdef', issuedAt: new Date().toISOString(), scrypt: await hashTokenSecret(parseToken(token)!.secret) } } }),
    );
    tokens = new DeviceTokens({ path: tokensFile, maxFailures: 1000, failureWindowMs: 300_000, log: logs.logger });
    broker = await startMosquitto(work.dir);
    mqtt = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'edge-forwarding', reconnectPeriod: 200 });
    gateway = await startGatewayServer(socketGatewayOptions({ socketPath, gatewayId: 'gw-edge-forwarding', caPem: ca.certPem, tokens, mqtt, logger: logs.logger }));
    certPort = await freePort();
    tokenPort = await freePort();
    const httpPort = await freePort();
    caddy = new ManagedProcess({
      name: 'caddy-edge-forwarding',
      command: 'caddy',
      args: ['run', '--config', join(REPO_ROOT, 'Caddyfile'), '--adapter', 'caddyfile'],
      env: {
        PATH: process.env.PATH,
        HOME: work.dir,
        XDG_DATA_HOME: join(work.dir, 'caddy-data'),
        XDG_CONFIG_HOME: join(work.dir, 'caddy-config'),
        DOMAIN_NAME: 'localhost',
        CADDY_TLS: 'files',
        CADDY_ADMIN: 'off',
        CADDY_HTTP_PORT: String(httpPort),
        CADDY_HTTPS_PORT: String(certPort),
        CADDY_TLS_CERT_FILE: edgeCert,
        CADDY_TLS_KEY_FILE: edgeKey,
        CADDY_CLIENT_CA_FILE: caFile,
        EDGE_HOP: 'unix',
        GATEWAY_SOCKET: socketPath,
        CADDY_TOKEN_ROUTE: 'on',
        CADDY_TOKEN_PORT: String(tokenPort),
      },
      cwd: work.dir,
      logFile: join(work.dir, 'caddy.log'),
      ready: { port: certPort },
      alsoListens: [{ port: tokenPort }],
    });
    await caddy.start();
    subscribe('net.server.socket', onSocket);
  });
  after(async () => {
    unsubscribe('net.server.socket', onSocket);
    await caddy?.stop();
    await gateway?.close();
    tokens?.close();
    await mqtt?.endAsync(true);
    await broker?.process.stop();
    work.cleanup();
  });

  /** `count` GET /ws on one HTTP/2 connection; resolves with the statuses and one body. */
  async function plainRequests(port: number, count: number, tls: { cert?: string; key?: string } = {}): Promise<{ statuses: number[]; body: string }> {
    const session = h2connect(`https://localhost:${port}`, { ca: ca.certPem, ...tls });
    session.on('error', () => undefined);
    let body = '';
    const statuses = await Promise.all(
      Array.from({ length: count }, () =>
        new Promise<number>((resolve) => {
          const r = session.request({ ':path': '/ws', ':method': 'GET' });
          let status = 0;
          let text = '';
          r.on('response', (h) => (status = Number(h[':status'])));
          r.on('data', (c: Buffer) => (text += c.toString()));
          r.on('end', () => {
            body = text;
            resolve(status);
          });
          r.on('error', () => resolve(-1));
        }),
      ),
    );
    session.close();
    return { statuses, body };
  }

  it('answers requests that are no WebSocket upgrade itself, on either route: many on one HTTP/2 connection reach no gateway', async () => {
    const before = accepted;
    const onTokenRoute = await plainRequests(tokenPort, 100);
    const device = tlsOf('meter-1');
    const onCertRoute = await plainRequests(certPort, 100, { cert: device.cert, key: device.key });
    for (const r of [onTokenRoute, onCertRoute]) {
      assert.deepEqual([...new Set(r.statuses)], [404]);
      assert.equal((JSON.parse(r.body) as { code: string }).code, 'GATEWAY_WRONG_PATH');
    }
    await sleep(200);
    assert.equal(accepted - before, 0, 'connections the gateway took for 200 requests that were no upgrade');
  });

  it('ends the connection of a refused upgrade: one connection cannot send the gateway upgrade after upgrade', async () => {
    const before = accepted;
    const t: TLSSocket = tlsConnect({ host: '127.0.0.1', port: tokenPort, ca: ca.certPem, servername: 'localhost', ALPNProtocols: ['http/1.1'] });
    t.on('error', () => undefined);
    await new Promise((resolve) => t.once('secureConnect', resolve));
    let text = '';
    t.on('data', (c: Buffer) => (text += c.toString()));
    // Upgrades with no valid token, one after another on the same connection, each once the one before is answered.
    for (let i = 0; i < 20 && !t.destroyed && t.writable; i++) {
      const answers = (text.match(/HTTP\/1\.1 /g) ?? []).length;
      t.write(`${UPGRADE}Authorization: Bearer not-a-token\r\n\r\n`);
      for (let w = 0; w < 50 && (text.match(/HTTP\/1\.1 /g) ?? []).length === answers && !t.destroyed; w++) await sleep(20);
    }
    await sleep(300);
    t.destroy();
    assert.match(text, /^HTTP\/1\.1 401 /, 'the gateway\'s answer reaches the client');
    assert.match(text, /"code":"GATEWAY_TOKEN_MISSING"/);
    assert.equal((text.match(/HTTP\/1\.1 /g) ?? []).length, 1, 'answers on the one connection');
    assert.equal(accepted - before, 1, 'connections the gateway took for one client connection');
  });

  it('still lets devices in: by token on the token route, by certificate on the other; a wrong token gets its coded answer', async () => {
    // Read by an HTTP client's parser: the answer Caddy copies must be one HTTP response, headers once.
    const wrong = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const ws = new WebSocket(`wss://localhost:${tokenPort}/ws`, { ca: ca.certPem, headers: { authorization: `Bearer ${generateToken('plc-1')}` }, perMessageDeflate: false });
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
    });
    assert.deepEqual([wrong.status, (JSON.parse(wrong.body) as { code: string }).code], [401, 'GATEWAY_TOKEN_INVALID']);
    const device = tlsOf('meter-2');
    const opens = [
      () => new WebSocket(`wss://localhost:${tokenPort}/ws`, { ca: ca.certPem, headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false }),
      () => new WebSocket(`wss://localhost:${certPort}/ws`, { ca: ca.certPem, cert: device.cert, key: device.key, perMessageDeflate: false }),
    ];
    for (const open of opens) {
      const ws = open();
      const welcome = await new Promise<{ type: string }>((resolve, reject) => {
        ws.once('message', (m) => resolve(JSON.parse(m.toString()) as { type: string }));
        ws.once('error', reject);
        ws.once('unexpected-response', (_req, res) => reject(new Error(`refused: ${res.statusCode}`)));
      });
      assert.equal(welcome.type, 'welcome');
      ws.close();
    }
  });
});
