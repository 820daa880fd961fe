import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import type { CommitOptions } from '../../field-client/src/commit-receipts.ts';
import { FieldClient } from '../../field-client/src/field-client.ts';
import { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { GatewayConnection, type ConnectionOptions } from '../../field-client/src/gateway-connection.ts';
import { DurableQueue } from '../../field-client/src/queue/durable-queue.ts';
import { createCertificateAuthority, issueCertificate } from '../../pki/certificates.ts';
import { LIMITS } from '../../shared/limits.ts';
import type { LogCapture } from './embedded.ts';
import { tempDir } from './pki.ts';

/**
 * A WSS endpoint that plays the gateway, as a compromised DMZ (or a DMZ server with a part broken)
 * would, and a field client of its own to face it (test/e2e/field-hostile-gateway.test.ts,
 * field-receipts-silent.test.ts). A throwaway CA stands in for the edge's.
 */
export const DEVICE = 'd1';
export const ca = createCertificateAuthority('Hostile Gateway Test CA', 1);
export const serverCert = issueCertificate(ca, { commonName: 'gw', organizationalUnit: 'services', role: 'server', validityDays: 1, subjectAltNames: ['localhost'] });
export const defaultLimits = { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages };

export function welcome(limits: { frameMaxBytes: number; batchMaxMessages: number } = defaultLimits): string {
  return JSON.stringify({ type: 'welcome', deviceId: DEVICE, gatewayId: 'hostile', serverTime: Date.now(), limits });
}

export interface Item {
  messageId: string;
  seq: number;
}

/** A WSS endpoint playing the gateway: `onConnection` decides what it does; it records every message it reads. */
export async function hostileGateway(onConnection: (ws: WebSocket, n: number) => void, onBatch: (ws: WebSocket, batch: Item[]) => void = () => {}) {
  const https: Server = createServer({ cert: serverCert.certPem, key: serverCert.keyPem });
  const wss = new WebSocketServer({ server: https });
  const g = {
    url: '',
    connections: 0,
    /** every message read, copies included */
    items: [] as Item[],
    sockets: [] as WebSocket[],
    distinct: () => new Set(g.items.map((i) => i.messageId)).size,
    async close() {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      await new Promise<void>((r) => https.close(() => r()));
    },
  };
  wss.on('connection', (ws) => {
    g.connections++;
    g.sockets.push(ws);
    ws.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as { batch?: Item[] };
      if (!frame.batch) return;
      g.items.push(...frame.batch.map((m) => ({ messageId: m.messageId, seq: m.seq })));
      onBatch(ws, frame.batch);
    });
    onConnection(ws, g.connections);
  });
  await new Promise<void>((r) => https.listen(0, '127.0.0.1', r));
  g.url = `wss://localhost:${(https.address() as AddressInfo).port}/ws`;
  return g;
}

export const ack = (ws: WebSocket, batch: Item[]) => ws.send(JSON.stringify({ type: 'ack', messageIds: batch.map((m) => m.messageId) }));

/** A field client of its own (queue, outbox, connection), `messages` events of `payloadBytes` queued. */
export async function device(
  url: string,
  logs: LogCapture,
  o: { messages: number; payloadBytes?: number; window?: number; commit?: CommitOptions; transientRewindMs?: number; brokerUnavailableMoveMs?: number; connection?: Partial<ConnectionOptions> },
) {
  const work = tempDir('hostile-gateway');
  // the device's key, which receipts are signed under (a gateway standing in for the internal side signs with it)
  const signingKey = randomBytes(32);
  const log = logs.logger;
  const queue = await DurableQueue.open({ dir: join(work.dir, 'queue'), maxBytes: 256 * 1024 * 1024, segmentBytes: 8 * 1024 * 1024, fullPolicy: 'reject', sync: { mode: 'interval', ms: 1000 }, receipts: o.commit !== undefined, log });
  const outbox = new FileOutbox(work.dir, 64 * 1024);
  const connection = new GatewayConnection({ url, tls: { ca: ca.certPem, token: `fst1.${DEVICE}.x` }, reconnectInitialMs: 20, reconnectMaxMs: 100, idleTimeoutMs: 60_000, ...o.connection }, log);
  const commands = new CommandHandlers({ deviceId: DEVICE, key: undefined, allowUnsigned: false, maxAgeMs: 1000, skewMs: 1000 });
  const client = new FieldClient(
    { deviceId: DEVICE, batchMax: 500, window: o.window ?? 2000, fileWindow: 1, maxBytes: 256 * 1024 * 1024, dataDir: work.dir, signingKey, commit: o.commit, transientRewindMs: o.transientRewindMs, brokerUnavailableMoveMs: o.brokerUnavailableMoveMs },
    queue,
    outbox,
    connection,
    commands,
    log,
  );
  const filler = 'x'.repeat(o.payloadBytes ?? 100);
  for (let i = 0; i < o.messages; i += 500) {
    await client.submitMany(Array.from({ length: Math.min(500, o.messages - i) }, () => ({ dataType: 'event' as const, payload: { eventType: 'e', message: filler, severity: 'info' as const } })));
  }
  return {
    client,
    connection,
    queue,
    signingKey,
    async close() {
      client.stop();
      await connection.stop();
      await queue.close();
      work.cleanup();
    },
  };
}
