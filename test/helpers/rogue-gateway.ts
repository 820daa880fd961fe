import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { LIMITS } from '../../shared/limits.ts';
import type { PkiPaths } from '../../pki/layout.ts';

/** One message of a device's batch frame, as the rogue endpoint sees it. */
export interface RogueBatchItem {
  dataType: string;
  messageId: string;
  payload: unknown;
}

/**
 * A compromised DMZ server's WSS endpoint: it holds the edge certificate and key (all a DMZ server
 * has to pass as the gateway) and never a device's signing key. It welcomes the device, hands each
 * batch to `onBatch`, and acks every frame ("in the DMZ broker"), whatever it does with it.
 * `socket` is the device's current connection; `send` writes any frame to it.
 */
export class RogueGateway {
  socket: WebSocket | undefined;
  /** TCP connections accepted, whether their TLS handshake completed or not */
  connections = 0;

  private constructor(
    private readonly server: Server,
    private readonly wss: WebSocketServer,
  ) {}

  /**
   * `ack`: false to leave every message in flight (unanswered), e.g. to refuse it later.
   * `tls`: the certificate and key it presents (default the edge's); `port`: where it listens on
   * 127.0.0.1 (default one the OS picks), e.g. a gateway's, to pose as that gateway to Caddy.
   */
  static async start(
    paths: PkiPaths,
    deviceId: string,
    onBatch: (batch: RogueBatchItem[]) => void = () => {},
    o: { ack?: boolean; tls?: { cert: string; key: string }; port?: number } = {},
  ): Promise<RogueGateway> {
    const files = o.tls ?? paths.service('dmz/edge');
    const server = createServer({ cert: readFileSync(files.cert), key: readFileSync(files.key) });
    const wss = new WebSocketServer({ server, path: '/ws' });
    const rogue = new RogueGateway(server, wss);
    server.on('connection', () => rogue.connections++);
    wss.on('connection', (ws) => {
      rogue.socket = ws;
      // A protocol error of the peer is the rogue's to swallow, as the gateway logs it: Caddy 2.6,
      // stopped while it proxies a WebSocket, writes a close frame to the upstream too, unmasked
      // (RFC 6455 §5.1 has a client mask every frame), and without a listener ws throws that
      // (WS_ERR_EXPECTED_MASK) as an uncaught exception, failing whichever test was running.
      ws.on('error', () => {});
      ws.send(JSON.stringify({ type: 'welcome', deviceId, gatewayId: 'rogue', serverTime: Date.now(), limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages } }));
      ws.on('message', (data) => {
        const frame = JSON.parse(data.toString()) as { batch?: RogueBatchItem[] };
        if (!frame.batch) return;
        onBatch(frame.batch);
        if (o.ack !== false) ws.send(JSON.stringify({ type: 'ack', messageIds: frame.batch.map((m) => m.messageId) }));
      });
    });
    await new Promise<void>((resolve) => server.listen(o.port ?? 0, '127.0.0.1', resolve));
    return rogue;
  }

  get url(): string {
    return `wss://localhost:${(this.server.address() as AddressInfo).port}/ws`;
  }

  send(frame: unknown): void {
    (this.socket as WebSocket).send(JSON.stringify(frame));
  }

  async close(): Promise<void> {
    for (const c of this.wss.clients) c.terminate();
    this.wss.close();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
