import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { createServer, type Server } from 'node:https';
import { after, afterEach, before } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import type { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { X509Certificate } from 'node:crypto';
import { createCrl, issueCertificate, newKeyPair, type KeyAndCert } from '../../pki/certificates.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';

export type WssServer = Awaited<ReturnType<typeof wssServer>>;

/** A WSS server that accepts any WebSocket and remembers its connections; its certificate `given`, or one of `ca`'s. */
export async function wssServer(ca: KeyAndCert, given?: KeyAndCert): Promise<{ url: string; port: number; sockets: WebSocket[]; accepted: number; upgrades: number; headers: IncomingHttpHeaders; close(): Promise<void> }> {
  const cert = given ?? issueCertificate(ca, { commonName: 'gw', organizationalUnit: 'services', role: 'server', validityDays: 1, subjectAltNames: ['localhost'] });
  const https: Server = createServer({ cert: cert.certPem, key: cert.keyPem });
  const wss = new WebSocketServer({ server: https });
  const port = await freePort();
  const s = {
    url: `wss://localhost:${port}/ws`,
    port,
    sockets: [] as WebSocket[],
    accepted: 0,
    /** upgrade requests that reached the server: any byte of the client's HTTP request */
    upgrades: 0,
    /** the headers of the last upgrade request */
    headers: {} as IncomingHttpHeaders,
    async close() {
      for (const ws of s.sockets) ws.terminate();
      wss.close();
      await new Promise<void>((r) => https.close(() => r()));
    },
  };
  https.on('upgrade', (req: IncomingMessage) => {
    s.upgrades++;
    s.headers = req.headers;
  });
  wss.on('connection', (ws) => {
    s.accepted++;
    s.sockets.push(ws);
  });
  await new Promise<void>((r) => https.listen(port, '127.0.0.1', r));
  return s;
}

/**
 * For a test file's suite: two WSS servers presenting the edge certificate before and after a
 * `--renew-dmz` (one key pair, as the renewal's own test has), of the CA `ca()` gives when the suite
 * starts, the old one's serial (what a CRL revokes), and the connection a test opened (`conn`),
 * stopped after each test; the servers are closed after the suite.
 */
export function edgeServers(ca: () => KeyAndCert): { old: WssServer; renewed: WssServer; oldSerial: string; conn: GatewayConnection | undefined } {
  const f = { conn: undefined } as { old: WssServer; renewed: WssServer; oldSerial: string; conn: GatewayConnection | undefined };
  before(async () => {
    const keyPair = newKeyPair();
    const edge = () => issueCertificate(ca(), { commonName: 'edge', organizationalUnit: 'services', role: 'server', subjectAltNames: ['localhost'], validityDays: 1, keyPair });
    const before = edge();
    f.oldSerial = new X509Certificate(before.certPem).serialNumber;
    f.old = await wssServer(ca(), before);
    f.renewed = await wssServer(ca(), edge());
  });
  afterEach(async () => {
    await f.conn?.stop();
    f.conn = undefined;
  });
  after(async () => {
    await f.old?.close();
    await f.renewed?.close();
  });
  return f;
}

/** A CRL of `ca` listing `serials`, dated `ageMs` before now, valid a day. */
export const crlOf = (ca: KeyAndCert, serials: readonly string[], ageMs: number, crlNumber: number): string =>
  createCrl(ca, { entries: serials.map((serial) => ({ serial, revokedAt: new Date(Date.now() - ageMs) })), crlNumber, thisUpdate: new Date(Date.now() - ageMs), nextUpdate: new Date(Date.now() + 86_400_000) });
