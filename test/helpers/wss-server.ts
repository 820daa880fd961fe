import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { createServer, type Server } from 'node:https';
import { WebSocketServer, type WebSocket } from 'ws';
import { issueCertificate, type KeyAndCert } from '../../pki/certificates.ts';
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
