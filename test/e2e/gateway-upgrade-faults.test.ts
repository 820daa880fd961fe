import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { LIMITS } from '../../shared/limits.ts';
import { identifyByProxy, identifyByTls } from '../../dmz/gateway/identity.ts';
import { DeviceTokens } from '../../dmz/gateway/device-tokens.ts';
import { startGatewayServer, type GatewayServer, type GatewayServerOptions } from '../../dmz/gateway/server.ts';
import { createCertificateAuthority, issueCertificate, newKeyPair } from '../../pki/certificates.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { captureLogs, edgeCertificates, socketGatewayOptions } from '../helpers/gateway-fixture.ts';
import { tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';
import WebSocket from 'ws';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


/**
 * The gateway's upgrades and closes when a client misbehaves (server.ts), on a real Mosquitto and
 * real TLS: a socket error before the WebSocket is open must not end the process (every device's
 * connection with it), and a connection the gateway closed takes nothing more.
 */
describe('a gateway terminating TLS: refused upgrades and closed connections', () => {
  const work = tempDir('gateway-upgrade-faults');
  const logs = captureLogs();
  const revokedFile = join(work.dir, 'revoked-serials.txt');
  let broker: { url: string; process: ManagedProcess };
  let mqtt: MqttClient;
  let watcher: MqttClient;
  let gateway: GatewayServer;
  let tlsOf: (deviceId: string, validityDays?: number) => { ca: string; cert: string; key: string };
  let port: number;
  const published: string[] = [];
  /** uncaught exceptions of this process (the gateway's), instead of the process ending */
  const uncaught: Error[] = [];
  const onUncaught = (err: Error) => uncaught.push(err);

  before(async () => {
    process.on('uncaughtException', onUncaught);
    writeFileSync(revokedFile, '');
    const { ca, server, tlsOf: issue } = edgeCertificates();
    tlsOf = issue;
    broker = await startMosquitto(work.dir);
    mqtt = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'gateway-upgrade-faults', reconnectPeriod: 200 });
    watcher = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'gateway-upgrade-faults-watcher' });
    await watcher.subscribeAsync('#', { qos: 1 });
    watcher.on('message', (_t, payload) => published.push(payload.toString()));
    gateway = await startGatewayServer({
      host: '127.0.0.1',
      port: 0,
      setting: 'GATEWAY_PORT',
      path: '/ws',
      gatewayId: 'gw-upgrade-faults',
      tls: { cert: server.certPem, key: server.keyPem, ca: ca.certPem },
      limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages, maxInFlight: 100, sendBufferMaxBytes: LIMITS.sendBufferMaxBytes, ackHoldMs: 0 },
      identify: identifyByTls(),
      revokedSerialsFile: revokedFile,
      mqtt,
      logger: logs.logger,
    });
    port = gateway.port;
  });
  after(async () => {
    await gateway?.close();
    await mqtt?.endAsync(true);
    await watcher?.endAsync(true);
    await broker?.process.stop();
    process.off('uncaughtException', onUncaught);
    work.cleanup();
  });

  it('survives a client that resets its connection after a refused upgrade', async () => {
    const tls = tlsOf('resetter');
    const raw = netConnect(port, '127.0.0.1');
    await new Promise<void>((resolve) => raw.once('connect', () => resolve()));
    const t = tlsConnect({ socket: raw, ca: tls.ca, cert: tls.cert, key: tls.key, servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      t.once('secureConnect', () => resolve());
      t.once('error', reject);
    });
    t.on('error', () => undefined);
    // Any holder of a certificate from the CA (a revoked one too): an upgrade the gateway refuses.
    t.write('GET /wrong HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    await new Promise<void>((resolve) => t.once('data', () => resolve()));
    // Then a TCP reset while the gateway lingers before destroying the refused socket (1 s).
    raw.resetAndDestroy();
    await sleep(500);
    assert.deepEqual(
      uncaught.map((e) => `${(e as NodeJS.ErrnoException).code}: ${e.message}`),
      [],
      'an error of a refused socket escaped: the gateway process would have ended, and every device with it',
    );
  });

  /** What the gateway answers a request with a client certificate: status line and body. */
  async function answerTo(request: string): Promise<string> {
    const tls = tlsOf('asker');
    const t = tlsConnect({ host: '127.0.0.1', port, ca: tls.ca, cert: tls.cert, key: tls.key, servername: 'localhost' });
    t.on('error', () => undefined);
    await new Promise<void>((resolve) => t.once('secureConnect', () => resolve()));
    t.write(request);
    let text = '';
    t.on('data', (chunk: Buffer) => (text += chunk.toString()));
    await new Promise((resolve) => t.once('close', resolve));
    return text;
  }

  it('answers a plain request, and an upgrade whose target is no URL, 404 GATEWAY_WRONG_PATH as docs/errors.md says', async () => {
    const plain = await answerTo('GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    assert.match(plain, /^HTTP\/1\.1 404 /);
    assert.match(plain, /"code":"GATEWAY_WRONG_PATH"/);
    const garbled = await answerTo('GET //[ HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    assert.match(garbled, /^HTTP\/1\.1 404 GATEWAY_WRONG_PATH\r\n/, 'not GATEWAY_NO_CLIENT_CERTIFICATE: the device has one');
  });

  it("answers requests Node's parser refuses with a code of the registry, and stays up", async () => {
    const upgrade = 'GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';
    // Headers past Node's 16 KiB: a device's own, or Caddy's certificate header on top of them.
    const huge = await answerTo(`${upgrade}X-Padding: ${'a'.repeat(20 * 1024)}\r\n\r\n`);
    assert.match(huge, /^HTTP\/1\.1 431 /);
    assert.match(huge, /"code":"HTTP_HEADERS_TOO_LARGE"/);
    const malformed = await answerTo(`${upgrade}Bad Header: x\r\n\r\n`);
    assert.match(malformed, /^HTTP\/1\.1 400 /);
    assert.match(malformed, /"code":"HTTP_MALFORMED"/);
    // and the gateway still takes a device
    const d = await RawDevice.connect(`wss://127.0.0.1:${port}/ws`, tlsOf('after-bad-requests'));
    await eventually(() => d.welcome, 5_000, 'welcome');
    d.ws.terminate();
  });

  it('answers an upgrade that is no valid WebSocket handshake 400 GATEWAY_UPGRADE_INVALID, counted, before its identity is checked', async () => {
    const counted = async () => (await gateway.metrics.connectionsRefused.get()).values.find((v) => v.labels.code === 'GATEWAY_UPGRADE_INVALID')?.value ?? 0;
    const start = await counted();
    const head = 'Host: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n';
    const cases = [
      `GET /ws HTTP/1.1\r\n${head}Sec-WebSocket-Version: 13\r\n\r\n`, // no key
      `GET /ws HTTP/1.1\r\n${head}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n`,
      `GET /ws HTTP/1.1\r\n${head}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`, // no version
      `POST /ws HTTP/1.1\r\n${head}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 0\r\n\r\n`,
      `GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
      `GET /ws HTTP/1.1\r\n${head}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: a,,b\r\n\r\n`,
      // found by ws itself, after the identity (a subprotocol named twice): answered the same way
      `GET /ws HTTP/1.1\r\n${head}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: chat, chat\r\n\r\n`,
    ];
    for (const request of cases) {
      const answer = await answerTo(request);
      assert.match(answer, /^HTTP\/1\.1 400 GATEWAY_UPGRADE_INVALID\r\n/, `${JSON.stringify(request.split('\r\n')[0])}: ${JSON.stringify(answer.slice(0, 200))}`);
      assert.match(answer, /"code":"GATEWAY_UPGRADE_INVALID"/);
    }
    assert.equal((await counted()) - start, cases.length, 'each counted in gateway_connections_refused_total');
  });

  it('takes no more frames from a device once its certificate is revoked, though the device ignores the close', async () => {
    const id = 'revokee';
    const tls = tlsOf(id);
    const serial = new X509Certificate(tls.cert).serialNumber;
    const d = await RawDevice.connect(`wss://127.0.0.1:${port}/ws`, tls);
    await eventually(() => d.welcome, 5_000, 'welcome');
    // A hostile device: it does not answer the gateway's close frame, and sends on.
    (d.ws as unknown as { close: () => void }).close = () => undefined;
    writeFileSync(revokedFile, `${serial}\n`);
    await eventually(() => (logs.lines.some((l) => l.code === 'GATEWAY_CERTIFICATE_REVOKED' && l.serial === serial) ? true : undefined), 10_000, 'the gateway closing the revoked connection');
    await sleep(200);
    for (let i = 0; i < 5; i++) {
      d.ws.send(JSON.stringify({ deviceId: id, batch: [{ dataType: 'timeseries', messageId: `after-revocation-${i}`, payload: { v: i } }] }));
      await sleep(100);
    }
    await sleep(1500);
    const leaked = published.filter((p) => p.includes('after-revocation-'));
    d.ws.terminate();
    assert.equal(leaked.length, 0, `published for a revoked certificate after its connection was closed: ${leaked.length} envelope(s)`);
  });

  /**
   * TLS checks the certificate's dates at the handshake only: a device connected before its
   * certificate expired kept its connection, and sent through it, for as long as it lasted (weeks,
   * months), where a revoked certificate or an expired device token lose theirs.
   */
  it('closes the connection of a certificate that expires while connected (GATEWAY_CERTIFICATE_EXPIRED)', async () => {
    const id = 'expiree';
    // Valid for 5 s more (its notBefore is backdated): time for the handshake on a busy machine.
    const tls = tlsOf(id, 5 / 86_400);
    const notAfter = Date.parse(new X509Certificate(tls.cert).validTo);
    const d = await RawDevice.connect(`wss://127.0.0.1:${port}/ws`, tls);
    await eventually(() => d.welcome, 5_000, 'welcome');
    await eventually(() => (d.closeCode !== undefined ? true : undefined), 12_000, 'the gateway closing the connection of the expired certificate');
    assert.ok(Date.now() >= notAfter, 'not closed before the certificate expired');
    assert.deepEqual({ code: d.closeCode, reason: d.closeReason }, { code: 1008, reason: 'GATEWAY_CERTIFICATE_EXPIRED' });
    assert.ok(logs.lines.some((l) => l.code === 'GATEWAY_CERTIFICATE_EXPIRED' && l.deviceId === id), 'logged with its code');
  });
});

/**
 * EDGE_HOP=unix with the token route: a plain HTTP server on a Unix socket. After 'upgrade' Node's
 * HTTP server leaves the socket with no 'error' listener (TLS sockets keep one of their own); while a
 * token is checked (scrypt, ~100 ms) Caddy may close its side (the device went away: Caddy cancels
 * the upstream request), and the refusal then written to it fails with EPIPE, uncaught.
 */
describe('a gateway on a Unix socket (EDGE_HOP=unix): a device that leaves during its token check', () => {
  const work = tempDir('gateway-upgrade-faults-unix');
  const uncaught: Error[] = [];
  const onUncaught = (err: Error) => uncaught.push(err);
  let broker: { url: string; process: ManagedProcess };
  let mqtt: MqttClient;
  let gateway: GatewayServer;
  let tokens: DeviceTokens;
  /** a device certificate as Caddy forwards it (base64 DER) */
  let forwardedCert: string;
  let options: GatewayServerOptions;
  const sockDir = join(work.dir, 'run');
  const socketPath = join(sockDir, 'gw.sock');
  const logs = captureLogs();

  before(async () => {
    process.on('uncaughtException', onUncaught);
    mkdirSync(sockDir);
    chmodSync(sockDir, 0o700);
    const ca = createCertificateAuthority('FieldStream Test CA', 1);
    const device = issueCertificate(ca, { commonName: 'meter-7', organizationalUnit: 'devices', role: 'client', validityDays: 1, keyPair: newKeyPair() });
    forwardedCert = new X509Certificate(device.certPem).raw.toString('base64');
    const tokensFile = join(work.dir, 'device-tokens.json');
    writeFileSync(tokensFile, JSON.stringify({ version: 1, devices: {} }));
    const logger = logs.logger;
    tokens = new DeviceTokens({ path: tokensFile, maxFailures: 10, failureWindowMs: 300_000, log: logger, checksMax: 2 });
    broker = await startMosquitto(work.dir);
    mqtt = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'gateway-upgrade-faults-unix', reconnectPeriod: 200 });
    options = socketGatewayOptions({ socketPath, gatewayId: 'gw-upgrade-faults-unix', caPem: ca.certPem, tokens, mqtt, logger }, { maxConnections: 3 });
    gateway = await startGatewayServer(options);
  });
  after(async () => {
    tokens?.close();
    await gateway?.close();
    await mqtt?.endAsync(true);
    await broker?.process.stop();
    process.off('uncaughtException', onUncaught);
    work.cleanup();
  });

  it('a second gateway on its socket stops with LISTEN_FAILED naming GATEWAY_SOCKET, the setting to change', async () => {
    await assert.rejects(startGatewayServer({ ...options, gatewayId: 'gw-upgrade-faults-unix-2' }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'LISTEN_FAILED');
      assert.match(err.message, /^GATEWAY_SOCKET: Another process listens on .*gw\.sock/);
      return true;
    });
  });

  it('survives Caddy closing the upstream socket while a wrong token is being checked', async () => {
    const c = netConnect(socketPath);
    await new Promise<void>((resolve) => c.once('connect', () => resolve()));
    c.write(
      'GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-FieldStream-Route: token\r\nX-FieldStream-Client-Addr: 203.0.113.9\r\n' +
        `Authorization: Bearer fst1.pump-1.${'A'.repeat(43)}\r\n\r\n`,
    );
    await sleep(20);
    c.destroy(); // the device hung up; Caddy closes its upstream connection
    await sleep(1500);
    assert.deepEqual(
      uncaught.map((e) => `${(e as NodeJS.ErrnoException).code}: ${e.message}`),
      [],
      'an error of the refused socket escaped: the gateway process would have ended, and every device with it',
    );
  });
  /** An upgrade through the socket as Caddy sends it; resolves with the gateway's status line. */
  function upgradeBySocket(headers: string): { status: Promise<string>; socket: ReturnType<typeof netConnect> } {
    const c = netConnect(socketPath);
    c.on('error', () => undefined);
    c.write(`GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${headers}\r\n`);
    return { socket: c, status: new Promise((resolve) => c.once('data', (d: Buffer) => resolve(d.toString().split('\r\n')[0] as string))) };
  }

  it('logs a flood of refused upgrades on the token route (anyone may send them) within its limit, counting every one', async () => {
    const counted = async () => (await gateway.metrics.connectionsRefused.get()).values.reduce((n, v) => n + v.value, 0);
    const start = await counted();
    const lines = () => logs.lines.filter((l) => l.code === 'GATEWAY_TOKEN_MISSING' || l.code === 'GATEWAY_TOKEN_THROTTLED').length;
    const logged = lines();
    const flood = LIMITS.gatewayUpgradeRefusalLogMaxPerWindow * 3;
    for (let i = 0; i < flood; i++) {
      // No token at all: refused without a hash, then throttled; a line of the log each, unbounded.
      const u = upgradeBySocket('X-FieldStream-Route: token\r\nX-FieldStream-Client-Addr: 198.51.100.77\r\n');
      assert.match(await u.status, /^HTTP\/1\.1 (401|429) /);
      u.socket.destroy();
    }
    assert.equal((await counted()) - start, flood, 'every refusal counted in gateway_connections_refused_total');
    assert.ok(lines() - logged <= LIMITS.gatewayUpgradeRefusalLogMaxPerWindow, `${lines() - logged} log lines for ${flood} refused upgrades`);
    assert.ok(lines() - logged > 0, 'the refusals are still logged');
  });

  it('answers a token upgrade that is no WebSocket handshake GATEWAY_UPGRADE_INVALID, with no hash of its token', async () => {
    const u = netConnect(socketPath);
    u.on('error', () => undefined);
    // No Sec-WebSocket-Key: ws would refuse it, but only after the token's hash had been spent on it.
    u.write(`GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nX-FieldStream-Route: token\r\nX-FieldStream-Client-Addr: 192.0.2.44\r\nAuthorization: Bearer fst1.pump-9.${'C'.repeat(43)}\r\n\r\n`);
    const status = await new Promise<string>((resolve) => u.once('data', (d: Buffer) => resolve(d.toString().split('\r\n')[0] as string)));
    u.destroy();
    assert.equal(status, 'HTTP/1.1 400 GATEWAY_UPGRADE_INVALID');
    assert.ok(!logs.lines.some((l) => l.source === '192.0.2.44' && String(l.code).startsWith('GATEWAY_TOKEN_')), 'no token check for it');
  });

  it("lets a certificate's device in while wrong tokens from many addresses wait for their hash", async () => {
    // Six guesses, each from an address of its own (no address reaches its throttle).
    const guesses = Array.from({ length: 6 }, (_, i) =>
      upgradeBySocket(`X-FieldStream-Route: token\r\nX-FieldStream-Client-Addr: 203.0.113.${i + 20}\r\nAuthorization: Bearer fst1.pump-${i}.${'B'.repeat(43)}\r\n`),
    );
    const device = upgradeBySocket(`X-FieldStream-Route: certificate\r\nX-FieldStream-Client-Cert: ${forwardedCert}\r\n`);
    try {
      assert.equal(await device.status, 'HTTP/1.1 101 Switching Protocols', 'the checks in progress hold no place of GATEWAY_MAX_CONNECTIONS (3 here)');
      const answers = await Promise.all(guesses.map((g) => g.status));
      assert.deepEqual(answers.filter((a) => !/^HTTP\/1\.1 (401|503) /.test(a)), [], 'every guess refused');
      assert.equal(answers.filter((a) => a.startsWith('HTTP/1.1 503 GATEWAY_TOO_MANY_CONNECTIONS')).length, 4, 'past two checks at once (checksMax here), refused at once');
    } finally {
      device.socket.destroy();
      for (const g of guesses) g.socket.destroy();
    }
  });
});

/**
 * A gateway behind Caddy on mutual TLS (EDGE_HOP=mtls) believes the device certificate Caddy
 * forwards because Caddy's own certificate says "edge". After a DMZ compromise that certificate is
 * revoked (`generate-certificates.sh --renew-dmz` puts its serial in the gateways' list): whoever
 * holds the stolen key must not forward devices any more, on new connections or open ones.
 */
describe('a gateway behind Caddy on mutual TLS: a revoked proxy certificate forwards no one', () => {
  const work = tempDir('gateway-proxy-revoked');
  const logs = captureLogs();
  const revokedFile = join(work.dir, 'revoked-serials.txt');
  const ca = createCertificateAuthority('FieldStream Test CA', 1);
  const keyPair = newKeyPair();
  const server = issueCertificate(ca, { commonName: 'gateway', organizationalUnit: 'services', role: 'server', subjectAltNames: ['localhost', '127.0.0.1'], validityDays: 1, keyPair });
  const edge = () => issueCertificate(ca, { commonName: 'edge', organizationalUnit: 'services', role: 'client', validityDays: 1, keyPair });
  const device = issueCertificate(ca, { commonName: 'pump-1', organizationalUnit: 'devices', role: 'client', validityDays: 1, keyPair });
  let broker: { url: string; process: ManagedProcess };
  let mqtt: MqttClient;
  let gateway: GatewayServer;

  before(async () => {
    writeFileSync(revokedFile, '');
    broker = await startMosquitto(work.dir);
    mqtt = await connectAsync(broker.url, { protocolVersion: 5, clientId: 'gateway-proxy-revoked', reconnectPeriod: 200 });
    gateway = await startGatewayServer({
      host: '127.0.0.1',
      port: 0,
      setting: 'GATEWAY_PORT',
      path: '/ws',
      gatewayId: 'gw-proxy-revoked',
      tls: { cert: server.certPem, key: server.keyPem, ca: ca.certPem },
      limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages, maxInFlight: 100, sendBufferMaxBytes: LIMITS.sendBufferMaxBytes, ackHoldMs: 0 },
      identify: identifyByProxy(ca.certPem, ['edge'], undefined, 'certificate'),
      revokedSerialsFile: revokedFile,
      mqtt,
      logger: logs.logger,
    });
  });
  after(async () => {
    await gateway?.close();
    await mqtt?.endAsync(true);
    await broker?.process.stop();
    work.cleanup();
  });

  /** A WebSocket as Caddy opens it for pump-1 with `proxy`'s certificate: open, or the refusal's status and code. */
  const forward = (proxy: { certPem: string; keyPem: string }) =>
    new Promise<{ ws?: WebSocket; refused?: string }>((resolve) => {
      const ws = new WebSocket(`wss://127.0.0.1:${gateway.port}/ws`, {
        ca: ca.certPem,
        cert: proxy.certPem,
        key: proxy.keyPem,
        servername: 'localhost',
        headers: { 'x-fieldstream-client-cert': new X509Certificate(device.certPem).raw.toString('base64') },
      } as WebSocket.ClientOptions);
      ws.once('open', () => resolve({ ws }));
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ refused: `${res.statusCode} ${(JSON.parse(body) as { code?: string }).code ?? body}` }));
      });
      ws.once('error', (err) => resolve({ refused: err.message }));
    });

  it('closes the connections it forwarded and refuses its new ones (GATEWAY_UNTRUSTED_PROXY); another edge certificate forwards as before', async () => {
    const stolen = edge();
    const open = await forward(stolen);
    assert.ok(open.ws, `forwarded before the revocation: ${open.refused}`);
    // Within the list's reload (2 s), or not at all.
    const closed = new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve('still open after 10 s'), 10_000);
      open.ws?.once('close', (_code, reason) => {
        clearTimeout(timer);
        resolve(reason.toString());
      });
    });
    writeFileSync(revokedFile, `${new X509Certificate(stolen.certPem).serialNumber}\n`);
    assert.equal(await closed, 'GATEWAY_UNTRUSTED_PROXY', 'the open connection is closed');
    assert.deepEqual(await forward(stolen), { refused: '403 GATEWAY_UNTRUSTED_PROXY' });
    const renewed = await forward(edge());
    assert.ok(renewed.ws, `a renewed edge certificate forwards: ${renewed.refused}`);
    renewed.ws?.close();
  });
});
