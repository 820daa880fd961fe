import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import { after, before, describe, it } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { createCertificateAuthority, issueCertificate } from '../../pki/certificates.ts';
import { createLogger } from '../../shared/logger.ts';
import { eventually } from '../helpers/ws-device.ts';

const log = createLogger('test', 'silent');

/** A WSS server that accepts any WebSocket and remembers its connections. */
async function wssServer(ca: ReturnType<typeof createCertificateAuthority>): Promise<{ url: string; port: number; sockets: WebSocket[]; accepted: number; close(): Promise<void> }> {
  const cert = issueCertificate(ca, { commonName: 'gw', organizationalUnit: 'services', role: 'server', validityDays: 1, subjectAltNames: ['localhost'] });
  const https: Server = createServer({ cert: cert.certPem, key: cert.keyPem });
  const wss = new WebSocketServer({ server: https });
  const port = await freePort();
  const s = {
    url: `wss://localhost:${port}/ws`,
    port,
    sockets: [] as WebSocket[],
    accepted: 0,
    async close() {
      for (const ws of s.sockets) ws.terminate();
      wss.close();
      await new Promise<void>((r) => https.close(() => r()));
    },
  };
  wss.on('connection', (ws) => {
    s.accepted++;
    s.sockets.push(ws);
  });
  await new Promise<void>((r) => https.listen(port, '127.0.0.1', r));
  return s;
}

/**
 * GATEWAY_URL with several URLs (one per DMZ server): a failed or lost connection moves on to the
 * next URL; the client comes back to an earlier one only by going round, never because it is up.
 */
describe('the gateway connection over several URLs', () => {
  const ca = createCertificateAuthority('Failover Test CA', 1);
  let b: Awaited<ReturnType<typeof wssServer>>;
  let c: Awaited<ReturnType<typeof wssServer>>;
  let deadUrl: string;
  let conn: GatewayConnection;
  before(async () => {
    b = await wssServer(ca);
    c = await wssServer(ca);
    deadUrl = `wss://localhost:${await freePort()}/ws`; // nothing listens there
  });
  after(async () => {
    await conn?.stop();
    await b.close();
    await c.close();
  });

  it('skips a URL that fails, moves on when the connection is lost, and goes round to the start', async () => {
    const opened: string[] = [];
    conn = new GatewayConnection({ url: `${deadUrl}, ${b.url}, ${c.url}`, tls: { ca: ca.certPem, token: 'unused' }, reconnectInitialMs: 50, reconnectMaxMs: 200, idleTimeoutMs: 60_000 }, log);
    conn.on('open', () => opened.push(conn.url));
    conn.start();
    await eventually(() => (opened.length === 1 ? true : undefined), 10_000, 'the first connection');
    assert.deepEqual(opened, [b.url], 'the first URL refused: the second one');
    // The server holding it goes away: the next URL, not back to the first.
    b.sockets[0]?.terminate();
    await eventually(() => (opened.length === 2 ? true : undefined), 10_000, 'the second connection');
    assert.equal(opened[1], c.url);
    // Server B is up again all along, but the client stays where it is while its connection holds.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(b.accepted, 1, 'no move back to a server that is up');
    // Lost again: round past the dead first URL, to B.
    c.sockets[0]?.terminate();
    await eventually(() => (opened.length === 3 ? true : undefined), 10_000, 'the third connection');
    assert.deepEqual(opened, [b.url, c.url, b.url]);
    assert.equal(c.accepted, 1);
  });
});

/**
 * A server that answers the WebSocket upgrade with an HTTP error (Caddy's 502 when every gateway
 * behind it is down, a gateway's 503, a 401 for a token): the client must close that attempt and
 * go on to the next URL, not wait on it for ever.
 */
describe('the gateway connection after a refused upgrade', () => {
  const ca = createCertificateAuthority('Refused Upgrade Test CA', 1);
  let good: Awaited<ReturnType<typeof wssServer>>;
  let refusing: Server;
  let refusingUrl: string;
  let refusals = 0;
  let conn: GatewayConnection | undefined;
  before(async () => {
    good = await wssServer(ca);
    const cert = issueCertificate(ca, { commonName: 'caddy', organizationalUnit: 'services', role: 'server', validityDays: 1, subjectAltNames: ['localhost'] });
    refusing = createServer({ cert: cert.certPem, key: cert.keyPem }, (_req, res) => {
      refusals++;
      res.writeHead(502, { 'content-type': 'text/plain' }).end('bad gateway');
    });
    // Node's HTTPS server passes an upgrade request to the handler above only without an 'upgrade' listener.
    refusing.on('upgrade', (_req, socket) => {
      refusals++;
      socket.end('HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n\r\nbad gateway');
    });
    const port = await freePort();
    await new Promise<void>((r) => refusing.listen(port, '127.0.0.1', r));
    refusingUrl = `wss://localhost:${port}/ws`;
  });
  after(async () => {
    await conn?.stop();
    await good.close();
    refusing.closeAllConnections();
    await new Promise<void>((r) => refusing.close(() => r()));
  });

  it('moves on to the next URL at once, and keeps retrying a single URL that refuses', async () => {
    conn = new GatewayConnection({ url: `${refusingUrl},${good.url}`, tls: { ca: ca.certPem, token: 'unused' }, reconnectInitialMs: 50, reconnectMaxMs: 200, idleTimeoutMs: 60_000 }, log);
    const opened: string[] = [];
    conn.on('open', () => opened.push(conn!.url));
    conn.start();
    // Well under TIMINGS.handshakeTimeoutMs: the refusal itself ends the attempt.
    await eventually(() => (opened.length === 1 ? true : undefined), 3_000, 'the second URL after the first refused the upgrade');
    assert.deepEqual(opened, [good.url]);
    assert.equal(refusals, 1);
    await conn.stop();
    // Only the refusing URL: it is tried again and again, not once and then never.
    refusals = 0;
    conn = new GatewayConnection({ url: refusingUrl, tls: { ca: ca.certPem, token: 'unused' }, reconnectInitialMs: 50, reconnectMaxMs: 100, idleTimeoutMs: 60_000 }, log);
    conn.start();
    await eventually(() => (refusals >= 3 ? true : undefined), 3_000, 'three attempts on the refusing URL');
  });
});
