import { constants as cryptoConstants } from 'node:crypto';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createHttpServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { answerClientError } from '../../shared/http-client-error.ts';
import { listenFailed } from '../../shared/listen-failed.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { LimitedLog } from '../../shared/limited-log.ts';
import type { GatewayMetrics } from './metrics.ts';
import { PendingConnections } from './pending-connections.ts';
import { claimSocketPath, listenOnSocket } from './unix-socket.ts';

export interface ListenerOptions {
  host: string;
  port: number;
  /**
   * Listen on this Unix socket instead, in plain HTTP (EDGE_HOP=unix: Caddy is the only client, and
   * the socket's permissions say so; `identify` must not ask for a TLS peer then). host, port and
   * tls are unused.
   */
  socketPath?: string | undefined;
  /** the setting that chooses the address (GATEWAY_PORT, or GATEWAY_SOCKET), named when it cannot be listened on */
  setting: string;
  path: string;
  tls: { cert: string; key: string; ca: string };
  /** connections held at most before their WebSocket is open (pending-connections.ts; default LIMITS.gatewayMaxPendingConnections) */
  maxPendingConnections?: number | undefined;
  /** of those, at most this many from one source address, an IPv6 one as its /64 (pending-connections.ts;
   * none when absent: behind Caddy every connection comes from it) */
  maxPendingPerSource?: number | undefined;
}

/**
 * The HTTP server the devices' WebSockets arrive on: TLS requiring a client certificate from our CA
 * (a client without one is refused in the handshake), or plain HTTP on a Unix socket only Caddy may
 * open (`socketPath`, EDGE_HOP=unix). Its timeouts and its bound on connections not upgraded yet
 * are set here; its 'upgrade' is the caller's. Not listening yet (listen).
 */
export function createListener(options: ListenerOptions, log: Logger, metrics: GatewayMetrics): { server: Server; pending: PendingConnections } {
  const timeouts = {
    // How often Node looks for requests past headersTimeout (its default, 30 s, lets them linger).
    connectionsCheckingInterval: TIMINGS.gatewayConnectionsCheckMs,
  };
  const socketPath = options.socketPath;
  const server: Server = socketPath
    ? createHttpServer(timeouts)
    : createHttpsServer({
        cert: options.tls.cert,
        key: options.tls.key,
        ca: options.tls.ca,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.2',
        // No session tickets: under TLS 1.3 with client certificates each connection then holds
        // about 12 KiB less (measured, Node 20: docs/performance-history.md, "No TLS session
        // tickets in the gateway"). Node keeps no server-side session cache either, so every
        // connection is a full handshake with the client certificate verified again (a resumed
        // session would skip that check).
        secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
        // A client that stalls in the handshake or in its headers (slowloris) is dropped, not waited for.
        handshakeTimeout: TIMINGS.handshakeTimeoutMs,
        ...timeouts,
      });
  server.headersTimeout = TIMINGS.gatewayHeadersTimeoutMs;
  server.requestTimeout = TIMINGS.gatewayRequestTimeoutMs;
  // Until its WebSocket is open, a connection has 10 s of silence to spare; after that the
  // WebSocket ping/pong watches it.
  // One listener function for every socket (its `this`), taken off at the upgrade (idleUntilUpgrade):
  // a closure, and setTimeout's once-wrapper, per socket stayed with every open WebSocket.
  server.on(socketPath ? 'connection' : 'secureConnection', (socket: Socket) => {
    socket.on('timeout', destroyIdle);
    socket.setTimeout(TIMINGS.gatewayPreUpgradeIdleMs);
  });
  server.on('tlsClientError', (err) => log.debug({ err: err.message }, 'TLS handshake refused'));
  // A request Node's parser refuses (headers past its 16 KiB, a malformed header, headers not in
  // within headersTimeout) reaches no 'upgrade': Node answered it with a bare status and no code, a
  // device or Caddy passing it on could not tell why. Answered in the gateway's refusal shape, then
  // ended as a refused upgrade is (the server allows half-open sockets).
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    log.debug({ err: err.message, parserCode: err.code }, 'request refused by the HTTP parser');
    answerClientError(err, socket, (code, message) => ({ code, message }));
    if (socket.destroyed) return;
    const linger = setTimeout(() => socket.destroy(), TIMINGS.gatewayRefusalLingerMs);
    linger.unref();
    socket.once('close', () => clearTimeout(linger));
  });
  const pendingRefusalLog = new LimitedLog(log, { level: 'warn', maxPerWindow: LIMITS.gatewayUpgradeRefusalLogMaxPerWindow, windowMs: TIMINGS.gatewayRefusalLogWindowMs, what: 'connections closed as accepted' });
  const maxPending = options.maxPendingConnections ?? LIMITS.gatewayMaxPendingConnections;
  const maxPendingPerSource = options.maxPendingPerSource;
  const pending = new PendingConnections(
    maxPending,
    (socket, reason) => {
      metrics.connectionsRefused.inc({ code: 'GATEWAY_TOO_MANY_PENDING' });
      if (reason === 'total') pendingRefusalLog.write({ code: 'GATEWAY_TOO_MANY_PENDING', remote: socket.remoteAddress, maxPending }, 'closed a connection as it was accepted: as many are in their handshake or upgrade as the gateway holds');
      else pendingRefusalLog.write({ code: 'GATEWAY_TOO_MANY_PENDING', remote: socket.remoteAddress, maxPendingPerSource }, 'closed a connection as it was accepted: its source address (an IPv6 one: its /64) holds as many in their handshake or upgrade as one source may');
    },
    maxPendingPerSource,
  );
  // For TLS, the TCP socket before its handshake: a connection past the bound costs no handshake.
  server.on('connection', (socket: Socket) => pending.admit(socket));
  server.on('request', (_req, res) => {
    const err = new FieldStreamError('GATEWAY_WRONG_PATH', `Open a WebSocket at ${options.path}.`);
    // Closed after the answer (no keep-alive): a request every few seconds kept a connection, and
    // its place among GATEWAY_MAX_PENDING_CONNECTIONS, for ever, as the idle timeouts never fired.
    res.writeHead(err.httpStatus, { 'content-type': 'application/json', connection: 'close' });
    res.end(JSON.stringify({ code: err.code, message: err.message }));
  });
  return { server, pending };
}

/** Listens on the port or the Unix socket; resolves with the TCP port (0 on a Unix socket). */
export async function listen(server: Server, options: ListenerOptions, log: Logger): Promise<number> {
  const socketPath = options.socketPath;
  const where = socketPath ?? `${options.host}:${options.port}`;
  // What is wrong with the socket's path names its setting too.
  const claimed = socketPath
    ? await claimSocketPath(socketPath).catch((err: unknown) => {
        throw isFieldStreamError(err, 'LISTEN_FAILED') ? new FieldStreamError('LISTEN_FAILED', `${options.setting}: ${err.message}`) : err;
      })
    : undefined;
  if (claimed === 'stale socket removed') {
    log.info({ socket: socketPath }, 'removed the socket file a stopped gateway left (nobody listened on it)');
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(listenFailed('Gateway', where, options.setting, err)));
    if (socketPath) listenOnSocket(server, socketPath, () => resolve());
    else server.listen(options.port, options.host, () => resolve());
  });
  const port = socketPath ? 0 : (server.address() as AddressInfo).port;
  if (socketPath) log.info({ socket: socketPath, path: options.path }, 'gateway listening on a Unix socket for Caddy (EDGE_HOP=unix)');
  else log.info({ host: options.host, port, path: options.path }, 'gateway listening (WSS, client certificates required)');
  return port;
}

/** What ends a connection silent for TIMINGS.gatewayPreUpgradeIdleMs before its WebSocket is open (its 'timeout'). */
function destroyIdle(this: Socket): void {
  this.destroy();
}

/** The WebSocket of `socket` is open: from now on the WebSocket heartbeat watches it, not the idle timeout. */
export function idleUntilUpgrade(socket: Socket): void {
  socket.setTimeout(0);
  socket.off('timeout', destroyIdle);
}
