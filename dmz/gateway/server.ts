import type { IncomingMessage } from 'node:http';
import { ACKS_HEADER, AckModeSchema, CRL_HEADER, type AckMode } from '../../shared/contract/downlink.ts';
import type { CrlDelivery } from './crl-delivery.ts';
import type { Duplex } from 'node:stream';
import type { MqttClient } from 'mqtt';
import { WebSocketServer, type WebSocket } from 'ws';
import { FieldStreamError, isFieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { LimitedLog } from '../../shared/limited-log.ts';
import { daysUntil } from '../../shared/tls-files.ts';
import { CommandRouter } from './command-router.ts';
import { ReceiptRouter } from './receipt-router.ts';
import { CLOSE, DeviceSession, type SessionLimits } from './device-session.ts';
import { RevokedSerials } from './revocation.ts';
import { DeviceRateLimiter, type RateLimits } from './rate-limit.ts';
import type { DeviceIdentity, IdentifyDevice } from './identity.ts';
import type { DeviceTokens } from './device-tokens.ts';
import { UplinkPublisher, type UplinkEnvelopes } from './uplink-publisher.ts';
import { GatewayMetrics } from './metrics.ts';
import type { SecurityReporter } from './security-reporter.ts';
import { isGatewaySecurityCode } from '../../shared/contract/envelope.ts';
import { createListener, idleUntilUpgrade, listen, type ListenerOptions } from './listener.ts';
import { Heartbeat } from './heartbeat.ts';
import { UnfinishedFrames } from './unfinished-frames.ts';
import { HeldBytesByDevice } from './read-pause.ts';
import { CertificateExpiry } from './certificate-expiry.ts';
import { ConnectBudget, type ConnectBudgetOptions } from './connect-budget.ts';

export interface GatewayServerOptions extends ListenerOptions {
  gatewayId: string;
  limits: SessionLimits;
  /** how the device's identity is learnt: from its own TLS connection, or from the edge proxy */
  identify: IdentifyDevice;
  /** the revoked certificate serials file, re-read while running */
  revokedSerialsFile?: string | undefined;
  /** the CA's CRL, handed to devices holding an older one (crl-delivery.ts) */
  crl?: CrlDelivery | undefined;
  /** device tokens (GATEWAY_TOKEN_AUTH=on): the gateway closes connections of tokens revoked or rotated meanwhile */
  deviceTokens?: DeviceTokens | undefined;
  rateLimits?: RateLimits | undefined;
  /** milliseconds a device's messages may wait for more to share one envelope */
  lingerMs?: number | undefined;
  /** how readings are enveloped (uplink-publisher.ts; default: the gateway's envelope) */
  envelopes?: UplinkEnvelopes | undefined;
  /** connections held at most */
  maxConnections?: number | undefined;
  /** connections one device may open in a row, and how soon one more (connect-budget.ts; default LIMITS/TIMINGS) */
  deviceConnects?: ConnectBudgetOptions | undefined;
  /** bytes of unfinished messages all devices together may keep buffered (unfinished-frames.ts; default LIMITS.gatewayUnfinishedFramesMaxBytes) */
  unfinishedFramesMaxBytes?: number | undefined;
  /** envelope bytes handed to the broker and not acknowledged yet, past which messages are refused (uplink-publisher.ts backlogBytes; default LIMITS.gatewayBrokerBacklogMaxBytes) */
  brokerBacklogMaxBytes?: number | undefined;
  mqtt: MqttClient;
  logger: Logger;
  /** milliseconds between pings; a device that misses one is disconnected (half-open TCP), unless
   * the gateway paused reading its socket meanwhile (backpressure: its pong may be unread) */
  heartbeatMs?: number;
  /** where the gateway counts what it does (a registry nobody serves when absent) */
  metrics?: GatewayMetrics | undefined;
  /** tells the internal side what was refused for security reasons (none when absent) */
  securityReports?: SecurityReporter | undefined;
}

export interface GatewayServer {
  /** the TCP port (0 when listening on a Unix socket) */
  readonly port: number;
  readonly router: CommandRouter;
  readonly receipts: ReceiptRouter;
  readonly metrics: GatewayMetrics;
  /** closes the connections of device tokens no longer current (the tokens file's reload calls it) */
  recheckTokens(): void;
  close(): Promise<void>;
}

/**
 * The WSS endpoint. TLS requires a client certificate from our CA (a client without one is refused
 * in the handshake); the upgrade then takes the device id from that certificate, or from Caddy's
 * header. With `socketPath` (EDGE_HOP=unix) it is plain HTTP on a Unix socket only Caddy may open.
 * The HTTP server under it is listener.ts's; each open connection's heartbeat, heartbeat.ts's.
 */
export async function startGatewayServer(options: GatewayServerOptions): Promise<GatewayServer> {
  const log = options.logger;
  const metrics = options.metrics ?? new GatewayMetrics();
  const backlogMax = options.brokerBacklogMaxBytes ?? LIMITS.gatewayBrokerBacklogMaxBytes;
  // Each device's share of it, at least a frame of the largest size (read-pause.ts track).
  const sessionLimits: SessionLimits = {
    ...options.limits,
    maxInFlightBytes: options.limits.maxInFlightBytes ?? Math.max(options.limits.frameMaxBytes, Math.floor(backlogMax * LIMITS.gatewayDeviceBrokerBacklogShare)),
  };
  // Once a minute at most: while the broker stalls every device's every frame is refused.
  const backlogLog = new LimitedLog(log, { level: 'warn', maxPerWindow: 1, windowMs: TIMINGS.gatewayRefusalLogWindowMs, what: 'messages refused with the broker backlog full' });
  const publisher = new UplinkPublisher(options.mqtt, {
    gatewayId: options.gatewayId,
    timeoutMs: LIMITS.publishTimeoutMs,
    lingerMs: options.lingerMs ?? 0,
    envelopes: options.envelopes ?? 'gateway',
    maxMessages: options.limits.batchMaxMessages,
    publishSeconds: metrics.publishSeconds,
    backlogMaxBytes: backlogMax,
    onBacklogFull: (bytes) => {
      metrics.backlogRefusals.inc();
      backlogLog.write({ code: 'GATEWAY_BROKER_UNAVAILABLE', backlogBytes: bytes, maxBytes: backlogMax }, 'the broker has not acknowledged as much as the gateway holds (GATEWAY_BROKER_BACKLOG_MAX_MIB): refusing new messages until it does');
    },
  });
  // For all devices together: while the broker stalls, or the gateway is not connected to it, every
  // frame of every device is refused, each a line of its own when logged per device.
  const publishFailureLog = new LimitedLog(log, { level: 'warn', maxPerWindow: LIMITS.gatewayPublishFailureLogMaxPerWindow, windowMs: TIMINGS.gatewayRefusalLogWindowMs, what: 'messages the broker did not take' });
  // A device's share of the backlog is counted over all its connections (read-pause.ts).
  const heldBytes = new HeldBytesByDevice();
  const router = new CommandRouter(options.mqtt, options.gatewayId, log.child({ subsystem: 'commands' }));
  const receipts = new ReceiptRouter(options.mqtt, options.gatewayId, (deviceId) => router.session(deviceId), log.child({ subsystem: 'receipts' }), metrics.receipts);
  const { server, pending } = createListener(options, log, metrics);

  // permessage-deflate off: it costs several times the CPU per message and fragments memory with many sockets.
  const live = new Map<WebSocket, { identity: DeviceIdentity; session: DeviceSession }>();
  const unfinishedMax = options.unfinishedFramesMaxBytes ?? LIMITS.gatewayUnfinishedFramesMaxBytes;
  const unfinished = new UnfinishedFrames(unfinishedMax, (bytes, total) => {
    metrics.unfinishedShed.inc();
    log.warn({ code: 'GATEWAY_UNFINISHED_FRAMES_FULL', bytes, total, maxBytes: unfinishedMax }, 'devices together keep more of unfinished messages than the gateway holds: closed the connection keeping the most');
  });
  metrics.bind({ brokerConnected: () => options.mqtt.connected, connections: () => live.size, pending: () => pending.pending, unfinishedBytes: () => unfinished.bytes, brokerBacklogBytes: () => publisher.backlogBytes });
  const rate = options.rateLimits ? new DeviceRateLimiter(options.rateLimits) : undefined;
  const connects = new ConnectBudget(options.deviceConnects);
  const revoked = new RevokedSerials(options.revokedSerialsFile, log.child({ subsystem: 'revocation' }), (serials) => {
    for (const { identity, session } of live.values()) {
      if (serials.has(identity.serial.toUpperCase())) {
        log.warn({ code: 'GATEWAY_CERTIFICATE_REVOKED', serial: identity.serial }, 'closing the connection of a revoked certificate');
        // Through the session: it takes no more frames from now on, and the socket ends within
        // TIMINGS.gatewayClosingGraceMs whether the device answers the close or not.
        session.close(CLOSE.policyViolation, 'GATEWAY_CERTIFICATE_REVOKED');
      } else if (identity.proxySerial !== undefined && serials.has(identity.proxySerial.toUpperCase())) {
        log.warn({ code: 'GATEWAY_UNTRUSTED_PROXY', serial: identity.proxySerial, deviceId: identity.deviceId }, 'closing a connection forwarded by a revoked proxy certificate');
        session.close(CLOSE.policyViolation, 'GATEWAY_UNTRUSTED_PROXY');
      }
    }
  });
  // Called by the tokens file's reload and when a token expires: a token revoked, rotated or expired meanwhile loses its connection.
  const recheckTokens = () => {
    for (const { identity, session } of live.values()) {
      const { deviceId, token } = identity;
      const code = token && options.deviceTokens ? options.deviceTokens.refusal(token) : undefined;
      if (code) {
        log.warn({ code, deviceId }, code === 'GATEWAY_TOKEN_EXPIRED' ? 'closing the connection of an expired device token' : 'closing the connection of a revoked or replaced device token');
        session.close(CLOSE.policyViolation, code);
      }
    }
  };
  // autoPong off: the session answers pings itself, under its send-buffer bound (DeviceSession.pong).
  const wss = new WebSocketServer({ noServer: true, maxPayload: options.limits.frameMaxBytes, perMessageDeflate: false, autoPong: false });
  const upgradeRefusalLog = new LimitedLog(log, { level: 'warn', maxPerWindow: LIMITS.gatewayUpgradeRefusalLogMaxPerWindow, windowMs: TIMINGS.gatewayRefusalLogWindowMs, what: 'refused upgrades' });
  // What ws still finds wrong with a handshake handshakeProblem passed (a subprotocol named twice):
  // answered coded too, not with its bare 400 (ws emits this instead when it has a listener).
  wss.on('wsClientError', (err: Error, socket: Duplex, req: IncomingMessage) => {
    const coded = new FieldStreamError('GATEWAY_UPGRADE_INVALID', `Not a WebSocket handshake (RFC 6455 §4.2.1): ${err.message}.`);
    upgradeRefusalLog.write({ code: coded.code, remote: req.socket.remoteAddress }, coded.message);
    metrics.connectionsRefused.inc({ code: coded.code });
    if (!socket.destroyed) refuseUpgrade(socket, coded);
  });

  // The pre-upgrade idle timeout (above) stays on until the upgrade is accepted: a request refused,
  // or waiting for its identity check, must not hold its socket for ever.
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    void upgrade(req, socket, head);
  });

  async function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    // Node's HTTP server stops listening for the socket's errors once it hands it to 'upgrade', and
    // ws listens only once it takes the socket: an error meanwhile (the device, or Caddy for it,
    // hanging up while its token is checked, then the refusal written to a closed socket: EPIPE)
    // had no listener and ended the process, every device's connection with it. A TLS socket has a
    // listener of its own; the Unix socket of EDGE_HOP=unix has not.
    const onSocketError = (err: Error) => {
      log.debug({ err: err.message, remote: req.socket.remoteAddress }, 'socket error before the WebSocket was open');
      socket.destroy();
    };
    socket.on('error', onSocketError);
    let identity: DeviceIdentity;
    let acks: AckMode;
    try {
      if (pathOf(req.url) !== options.path) throw new FieldStreamError('GATEWAY_WRONG_PATH', `Open the WebSocket at ${options.path}.`);
      // Checked before the identity: ws refused these only after it (a token's hash spent on a
      // request it then answered with a bare 400 of its own, uncounted, with no code).
      const problem = handshakeProblem(req);
      if (problem) throw new FieldStreamError('GATEWAY_UPGRADE_INVALID', `Not a WebSocket handshake (RFC 6455 §4.2.1): ${problem}.`);
      acks = ackModeOf(req.headers[ACKS_HEADER]);
      // Checked again once identified (below). Upgrades waiting for a token's hash hold no place
      // meanwhile (they are bounded on their own: DeviceTokens' checksMax), or wrong tokens from
      // many addresses could keep every device out.
      if (options.maxConnections !== undefined && live.size >= options.maxConnections) throw new FieldStreamError('GATEWAY_TOO_MANY_CONNECTIONS');
      // A device token is checked with scrypt on the libuv pool: the event loop goes on meanwhile.
      identity = await options.identify(req);
      if (identity.proxySerial !== undefined && revoked.has(identity.proxySerial)) throw new FieldStreamError('GATEWAY_UNTRUSTED_PROXY', "The proxy's certificate is revoked.");
      if (revoked.has(identity.serial)) throw new FieldStreamError('GATEWAY_CERTIFICATE_REVOKED', undefined, { deviceId: identity.deviceId });
      if (options.maxConnections !== undefined && live.size >= options.maxConnections) throw new FieldStreamError('GATEWAY_TOO_MANY_CONNECTIONS');
      // Last, so that only a connection let in is charged: each costs two log lines and two
      // retained presences stored inside, and a device connecting in a loop made them without bound.
      if (!connects.take(identity.deviceId)) throw new FieldStreamError('GATEWAY_RECONNECTING_TOO_FAST', undefined, { deviceId: identity.deviceId });
    } catch (err) {
      // Identities are refused with a code (identity.ts); an error without one is a fault of the
      // gateway (a token's hash failing), not the device's missing certificate.
      if (!isFieldStreamError(err)) log.error({ code: 'GATEWAY_INTERNAL', err }, 'checking the identity of an upgrade failed');
      const coded = isFieldStreamError(err) ? err : new FieldStreamError('GATEWAY_INTERNAL', 'The gateway could not check this connection\'s identity; try again later.');
      const deviceId = coded.details?.deviceId;
      // On the token route, `source`: the device's address as the proxy forwarded it (`remote` is the proxy's).
      const source = coded.details?.source;
      // Never the token itself: only its code, the device it names and where it came from. Limited:
      // anyone reaching the token route decides how many upgrades are refused (the metric counts each).
      upgradeRefusalLog.write(
        { code: coded.code, remote: req.socket.remoteAddress, ...(typeof source === 'string' ? { source } : {}), ...(typeof deviceId === 'string' ? { deviceId } : {}) },
        coded.message,
      );
      metrics.connectionsRefused.inc({ code: coded.code });
      if (isGatewaySecurityCode(coded.code) && typeof deviceId === 'string') options.securityReports?.note(deviceId, coded.code);
      if (!socket.destroyed) refuseUpgrade(socket, toTheDevice(coded));
      return;
    }
    // The device may have gone while its token was checked.
    if (socket.destroyed) return;
    wss.handleUpgrade(req, socket, head, (ws) => {
      // Accepted: from now on the WebSocket heartbeat watches the connection (ws clears the timeout
      // too; said here so the gateway does not depend on that), and ws its socket's errors.
      idleUntilUpgrade(req.socket);
      pending.opened(socket);
      socket.off('error', onSocketError);
      onConnection(ws, socket, identity, req.headers[CRL_HEADER], acks);
    });
  }

  /** `heldCrl`: the device's CRL_HEADER, which CRL it holds (crl-delivery.ts); `acks`: its ACKS_HEADER. */
  function onConnection(ws: WebSocket, socket: Duplex, identity: DeviceIdentity, heldCrl: string | string[] | undefined, acks: AckMode): void {
    const { deviceId } = identity;
    const session = new DeviceSession(deviceId, ws, publisher, sessionLimits, log, rate, metrics, options.securityReports, socket, publishFailureLog, heldBytes.of(deviceId), acks);
    const counted = unfinished.track(() => session.closeUnread(CLOSE.tryAgainLater, 'GATEWAY_UNFINISHED_FRAMES_FULL'));
    const heartbeat = new Heartbeat(ws, session, options.heartbeatMs ?? TIMINGS.heartbeatMs, acks === 'none');
    // The connection's two listeners of its socket's reads, one before ws's own (which takes a read
    // apart, synchronously) and one after: what the unfinished messages, the device's CPU budget
    // and the heartbeat each follow of a read. One pair for them all: a gateway holds tens of
    // thousands of connections, each listener a closure of every one, and a call at every read.
    socket.prependListener('data', (chunk: Buffer) => {
      unfinished.read(counted, chunk);
      session.readStarting();
    });
    socket.on('data', () => {
      session.readDone();
      unfinished.checkBound();
      heartbeat.heard();
    });
    ws.on('ping', (data) => session.pong(data));
    ws.on('error', (err) => log.info({ deviceId, code: wsErrorCode(err), wsCode: (err as { code?: string }).code, err: err.message }, 'WebSocket error'));
    live.set(ws, { identity, session });
    // TLS (ours, or Caddy's) checked the certificate's dates at the handshake only: a device
    // connected before its certificate expired kept the connection, and sent through it, for as long
    // as it lasted. Closed as a revoked one is (a token's expiry is DeviceTokens' own, recheckTokens).
    const expiry = identity.token
      ? undefined
      : new CertificateExpiry(identity.notAfter, () => {
          session.log.warn({ code: 'GATEWAY_CERTIFICATE_EXPIRED', serial: identity.serial, notAfter: new Date(identity.notAfter).toISOString() }, 'closing the connection of a certificate that expired while connected');
          session.close(CLOSE.policyViolation, 'GATEWAY_CERTIFICATE_EXPIRED');
        });
    ws.on('close', (code) => {
      live.delete(ws);
      unfinished.release(counted);
      heartbeat.stop();
      expiry?.stop();
      // When the device was last heard on this connection, the `at` of its offline. A connection
      // found dead by the heartbeat ended then, not when the gateway noticed, up to two heartbeats
      // later: a device that moved to another gateway meanwhile has its online there, and that one
      // must stay the newer for what orders presence by `at` (the distributor's store, the
      // console), whichever of the two the retained status ends as.
      router.detach(session, heartbeat.heardAt);
      log.info({ deviceId, closeCode: code }, 'device disconnected');
    });
    // A token's expiry is checked by DeviceTokens, not published as a certificate's.
    router.attach(session, identity.token ? undefined : identity.notAfter);
    session.welcome(options.gatewayId);
    const crl = options.crl?.frameFor(heldCrl);
    if (crl && session.sendCrl(crl)) {
      options.metrics?.crlsHanded.inc();
      log.info({ deviceId, heldCrl, crl: options.crl?.path }, "handed the device the CA's CRL: it held an older one");
    }
    const daysLeft = daysUntil(identity.notAfter);
    if (!identity.token && daysLeft < TIMINGS.certWarnDays) {
      session.log.warn({ code: 'CERT_EXPIRING_SOON', daysLeft, notAfter: new Date(identity.notAfter).toISOString() }, `device certificate expires in ${daysLeft} days: renew it (scripts/generate-client-cert.sh ${identity.deviceId} --renew)`);
    }
    log.info({ deviceId, ...(identity.token ? { auth: 'token', tokenId: identity.token.tokenId } : { serial: identity.serial }), ...(acks === 'none' ? { acks } : {}) }, 'device connected');
  }

  const port = await listen(server, options, log);

  return {
    port,
    router,
    receipts,
    metrics,
    recheckTokens,
    async close() {
      router.close();
      revoked.close();
      receipts.close();
      for (const ws of wss.clients) ws.close(1001, 'gateway shutting down');
      // Started before waiting for the WebSockets: wss.close waits for every one to close, and a
      // device not answering its close held the shutdown for ws's 30 s (its closeTimeout). The
      // listener's close waits for every connection to end too: one still in its TLS handshake
      // (closeAllConnections sees only those past it) held it for up to the handshake timeout.
      // Each is given a device's grace, then ended.
      const grace = setTimeout(() => {
        for (const ws of wss.clients) ws.terminate();
        pending.destroyAll();
      }, TIMINGS.gatewayClosingGraceMs);
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      server.closeAllConnections();
      // On a Unix socket, closing the listener removes its file too (libuv).
      await new Promise<void>((resolve) => server.close(() => resolve()));
      clearTimeout(grace);
    },
  };
}

/** Sec-WebSocket-Key: 16 bytes in base64 (RFC 6455 §4.2.1, item 5), as ws takes it. */
const WS_KEY = /^[+/0-9A-Za-z]{22}==$/;
/** Sec-WebSocket-Protocol: a list of tokens (RFC 6455 §4.1, RFC 7230 §3.2.6) separated by commas. */
const WS_PROTOCOLS = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*,[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*$/;

/** What makes an upgrade request no WebSocket handshake ws would take, or undefined (ws's own checks, made first here). */
function handshakeProblem(req: IncomingMessage): string | undefined {
  if (req.method !== 'GET') return 'the method is not GET';
  const upgrade = req.headers.upgrade;
  if (typeof upgrade !== 'string' || upgrade.toLowerCase() !== 'websocket') return 'Upgrade is not "websocket"';
  const key = req.headers['sec-websocket-key'];
  if (typeof key !== 'string' || !WS_KEY.test(key)) return 'Sec-WebSocket-Key is missing or not 16 bytes in base64';
  const version = req.headers['sec-websocket-version'];
  if (version !== '13' && version !== '8') return 'Sec-WebSocket-Version is not 13';
  const protocols = req.headers['sec-websocket-protocol'];
  if (protocols !== undefined && !WS_PROTOCOLS.test(protocols)) return 'Sec-WebSocket-Protocol is no list of tokens';
  return undefined;
}

/** The path of a request's target; undefined for one no URL parser takes (`//[`). */
/** The device's ACKS_HEADER: absent is `all`; a value neither `all` nor `none`, or the header twice (an array), is refused. */
function ackModeOf(header: string | string[] | undefined): AckMode {
  if (header === undefined) return 'all';
  const mode = AckModeSchema.safeParse(header);
  if (mode.success) return mode.data;
  throw new FieldStreamError('GATEWAY_ACKS_HEADER_INVALID', `X-FieldStream-Acks must be "all" or "none", once; it was ${JSON.stringify(header).slice(0, 100)}.`);
}

function pathOf(target: string | undefined): string | undefined {
  try {
    return new URL(target ?? '/', 'https://gateway').pathname;
  } catch {
    return undefined;
  }
}

/**
 * What a refused upgrade is told: what it was refused for, but that no token was issued to the
 * device a token names, which is answered as a wrong token (GATEWAY_TOKEN_INVALID, its words): told
 * apart, the answer said to anyone which device ids have tokens (their hashes take as long, the
 * decoy's: DeviceTokens.check). The log and the metrics keep the difference, for the operator.
 */
function toTheDevice(err: FieldStreamError): FieldStreamError {
  return err.code === 'GATEWAY_TOKEN_UNKNOWN_DEVICE' ? new FieldStreamError('GATEWAY_TOKEN_INVALID') : err;
}

/**
 * Answers a refused upgrade with an HTTP status and the coded error as JSON, then closes. end() alone
 * only half-closes: the HTTP server allows half-open sockets, so a client that never ends its side
 * (any holder of a certificate from the CA, even a revoked one) would keep the socket and its file
 * descriptor for ever, outside GATEWAY_MAX_CONNECTIONS. The socket is destroyed shortly after,
 * leaving the client a moment to read the answer (destroying at once could lose it to a reset).
 */
function refuseUpgrade(socket: Duplex, err: FieldStreamError): void {
  const body = JSON.stringify({ code: err.code, message: err.message });
  socket.end(
    `HTTP/1.1 ${err.httpStatus} ${err.code}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
  const linger = setTimeout(() => socket.destroy(), TIMINGS.gatewayRefusalLingerMs);
  // Neither the timer nor the socket may hold the process at shutdown (close() destroys the sockets).
  linger.unref();
  socket.once('close', () => clearTimeout(linger));
}

/**
 * ws reports an oversized frame as WS_ERR_UNSUPPORTED_MESSAGE_LENGTH and closes with 1009; its other
 * codes (WS_ERR_INVALID_UTF8, ...) are protocol faults of the socket, logged beside as wsCode.
 */
function wsErrorCode(err: Error): ErrorCode {
  const code = (err as { code?: string }).code;
  return code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 'CONTRACT_FRAME_TOO_LARGE' : 'GATEWAY_SOCKET_ERROR';
}
