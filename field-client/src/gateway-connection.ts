import { EventEmitter } from 'node:events';
import type { TLSSocket } from 'node:tls';
import WebSocket, { type ClientOptions } from 'ws';
import { CRL_HEADER, DownlinkFrameSchema, type CrlFrame, type DownlinkFrame } from '../../shared/contract/downlink.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { LimitedLog } from '../../shared/limited-log.ts';
import type { Logger } from '../../shared/logger.ts';
import { GatewayLiveness } from './gateway-liveness.ts';
import { gatewayUrls } from './gateway-urls.ts';
import { gatewayLog, gatewayText } from './gateway-log.ts';
import { CERT_REVOKED, revokedSerial, serverIdentityCheck, type ServerCrl } from './server-crl.ts';
import type { ServerCrlSource } from './server-crl-source.ts';
import type { DeviceCredentials } from './device-credentials.ts';

export interface ConnectionOptions {
  /** one wss:// URL, or several separated by commas (GATEWAY_URL): tried in turn */
  url: string;
  /**
   * a certificate device: its certificate and key; a token device: its device token instead. `crl`:
   * where the CRL the server's certificate is checked against comes from (server-crl-source.ts),
   * none when undefined. `credentials`: where the certificate and key (or token) presented at each
   * connection attempt come from when they may change on disk (device-credentials.ts); the ones
   * given here when undefined.
   */
  tls: ({ ca: string; cert: string; key: string } | { ca: string; token: string }) & { crl?: ServerCrlSource | undefined; credentials?: DeviceCredentials | undefined };
  /** milliseconds */
  reconnectInitialMs: number;
  /** milliseconds */
  reconnectMaxMs: number;
  /** milliseconds without any sign of life from the gateway before the socket is presumed dead */
  idleTimeoutMs: number;
  /** milliseconds without any sign of life since a frame was sent before the socket is presumed
   * dead (TIMINGS.answerTimeoutMs; shorter than idleTimeoutMs: a live gateway answers a frame) */
  answerTimeoutMs?: number;
  /** milliseconds a connection must stay open before the backoff starts over (TIMINGS.gatewayHealthyAfterMs) */
  healthyAfterMs?: number;
  /** milliseconds between two looks at the CRL file while connected (TIMINGS.fieldCrlCheckMs) */
  crlCheckMs?: number;
}

/**
 * The WSS connection to the gateway, kept up for as long as the client runs: reconnect with
 * exponential backoff and full jitter (so a fleet does not return in lockstep after an outage).
 * Emits 'open', 'frame' (validated downlink frames), 'drain' (see canSend) and 'close'.
 *
 * With several URLs (one per DMZ server, or per path to it), a failed or lost connection moves to
 * the next URL, wrapping round; an open connection stays where it is, so the client goes back to an
 * earlier URL only by rotation, never because that server came back (no flapping between servers).
 * The backoff grows once per full round without a connection, so a dead server is skipped at once.
 * A connection counts as one that worked only once it stayed open for `healthyAfterMs`: one the
 * gateway closes sooner (welcomed, then dropped) counts as failed, and the backoff goes on growing.
 */
export class GatewayConnection extends EventEmitter<{ open: []; close: []; frame: [DownlinkFrame]; drain: [] }> {
  private ws: WebSocket | undefined;
  private readonly urls: string[];
  /** index in `urls` of the URL of the current (or next) connection */
  private current = 0;
  /** connections that failed or were lost since the last one that stayed open for healthyAfterMs */
  private failures = 0;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | undefined;
  /** whether the gateway still shows signs of life (gateway-liveness.ts) */
  private readonly liveness: GatewayLiveness;
  private healthyTimer: NodeJS.Timeout | undefined;
  /** canSend() said no since the last 'drain': the next write that brings the buffer under the bound emits one */
  private full = false;
  private readonly gatewayLog: LimitedLog;
  /** the open connection's server certificate (DER), for a CRL that changes while it is open */
  private serverCert: Buffer | undefined;
  private crlTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: ConnectionOptions,
    private readonly log: Logger,
  ) {
    super();
    this.urls = gatewayUrls(options.url);
    if (this.urls.length === 0) throw new FieldStreamError('CONFIG_INVALID', 'GATEWAY_URL lists no URL');
    this.gatewayLog = gatewayLog(log);
    this.liveness = new GatewayLiveness(options, log, () => this.ws?.terminate());
  }

  /** the URL of the current connection, or of the next attempt */
  get url(): string {
    return this.urls[this.current] as string;
  }

  get isOpen(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  /** connections that failed or were lost in a row (none of them stayed open for healthyAfterMs) */
  get consecutiveFailures(): number {
    return this.failures;
  }

  /** bytes handed to the socket and not yet taken by the kernel (0 when not connected) */
  get bufferedAmount(): number {
    return this.ws?.bufferedAmount ?? 0;
  }

  /**
   * Whether to hand the socket another frame now: open, and less than LIMITS.fieldSendBufferMaxBytes
   * waiting unsent in it. ws buffers whatever it is given, so a sender that does not ask this fills
   * the device's memory while the gateway does not read. After a no, 'drain' is emitted once the
   * buffer is back under the bound.
   */
  canSend(): boolean {
    if (!this.isOpen) return false;
    if (this.bufferedAmount < LIMITS.fieldSendBufferMaxBytes) return true;
    this.full = true;
    return false;
  }

  start(): void {
    this.stopped = false;
    if (this.options.tls.crl && !this.crlTimer) {
      this.crlTimer = setInterval(() => this.recheckCrl(), this.options.crlCheckMs ?? TIMINGS.fieldCrlCheckMs);
      this.crlTimer.unref();
    }
    this.open();
  }

  send(text: string): void {
    const ws = this.ws;
    if (ws) this.liveness.sent();
    // The callback runs once this frame left ws's buffer for the kernel (or the socket closed).
    ws?.send(text, () => {
      if (this.full && this.ws === ws && ws.readyState === WebSocket.OPEN && ws.bufferedAmount < LIMITS.fieldSendBufferMaxBytes) {
        this.full = false;
        this.emit('drain');
      }
    });
  }

  /** how many URLs GATEWAY_URL lists */
  get urlCount(): number {
    return this.urls.length;
  }

  /**
   * Leaves the open connection for the next URL (the same one when there is one only: behind a
   * load balancer, another server); the usual close, backoff and rotation follow. False when no
   * connection was open.
   */
  moveOn(reason: Record<string, unknown>, message: string): boolean {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.log.warn({ url: this.url, ...reason }, message);
    this.ws.terminate();
    return true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.crlTimer);
    this.crlTimer = undefined;
    clearTimeout(this.retryTimer);
    this.liveness.disarm();
    clearTimeout(this.healthyTimer);
    const ws = this.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      ws.once('close', () => resolve());
      ws.close(1000, 'client stopping');
      setTimeout(() => {
        ws.terminate();
        resolve();
      }, TIMINGS.closeGraceMs).unref();
    });
  }

  private open(): void {
    const auth = this.options.tls;
    // The certificate and key (or token) as they are now: read again if their files changed.
    const creds = auth.credentials?.current() ?? auth;
    const url = this.url;
    // The CRL as it is now: its file read again if it changed since (server-crl-source.ts).
    const crl = auth.crl?.current();
    this.serverCert = undefined;
    const ws = new WebSocket(url, {
      ca: auth.ca,
      // The CRL is checked by the client itself, not by OpenSSL (Node's `crl`): server-crl.ts says why.
      // ws hands this to tls.connect as it is; @types/ws declares it (servername, CertMeta) => boolean.
      ...(crl !== undefined ? { checkServerIdentity: serverIdentityCheck(crl) as unknown as ClientOptions['checkServerIdentity'] } : {}),
      // The token goes in the upgrade's Authorization header (RFC 6750 §2.1), never in the URL,
      // which proxies and servers write to their logs. CRL_HEADER: which CRL the device holds, so
      // that a gateway with a newer one hands it over (a `crl` frame; 0: none held).
      headers: {
        ...('token' in creds ? { authorization: `Bearer ${creds.token}` } : {}),
        ...(auth.crl ? { [CRL_HEADER]: String(crl?.thisUpdate.getTime() ?? 0) } : {}),
      },
      ...('token' in creds ? {} : { cert: creds.cert, key: creds.key }),
      perMessageDeflate: false,
      handshakeTimeout: TIMINGS.handshakeTimeoutMs,
      // ws reads a frame whole before handing it over (its default limit is 100 MiB): no legitimate
      // downlink frame comes near this; a larger one closes the connection (1009) unread.
      maxPayload: LIMITS.downlinkFrameMaxBytes,
    });
    this.ws = ws;
    /** a crl frame came on this connection (a gateway sends one at most, after the welcome) */
    let crlSeen = false;
    ws.on('upgrade', (res) => {
      if (this.ws === ws) this.serverCert = (res.socket as TLSSocket).getPeerCertificate().raw;
    });
    ws.on('open', () => {
      this.full = false;
      // Not reset here: a gateway that opens and closes at once would keep the delay at its first step.
      clearTimeout(this.healthyTimer);
      this.healthyTimer = setTimeout(() => (this.failures = 0), this.options.healthyAfterMs ?? TIMINGS.gatewayHealthyAfterMs);
      this.healthyTimer.unref();
      this.log.info({ url }, 'connected to gateway');
      this.liveness.touch();
      this.emit('open');
    });
    ws.on('message', (data, isBinary) => {
      this.liveness.touch();
      if (isBinary) return;
      let frame: DownlinkFrame;
      try {
        frame = DownlinkFrameSchema.parse(JSON.parse(data.toString()));
      } catch (err) {
        this.gatewayLog.write({ code: 'FIELD_GATEWAY_FRAME_INVALID', url, err: gatewayText((err as Error).message) }, 'ignored an invalid frame from the gateway');
        return;
      }
      if (frame.type === 'crl') {
        // One per connection is looked at: each costs a parse of up to downlinkFrameMaxBytes and a
        // signature check (tens of ms), which a hostile gateway could otherwise ask for frame
        // after frame. A genuine gateway sends one, right after the welcome.
        if (crlSeen) {
          this.gatewayLog.write({ code: 'FIELD_GATEWAY_CRL_REPEATED', url }, 'ignored a second CRL on one connection');
          return;
        }
        crlSeen = true;
        this.takeCrl(frame, url);
        return;
      }
      this.emit('frame', frame);
    });
    ws.on('ping', () => this.liveness.touch());
    ws.on('unexpected-response', (_req, res) => {
      this.log.warn({ url, status: res.statusCode, reason: res.statusMessage }, 'gateway refused the WebSocket upgrade');
      // With a listener for this event ws leaves the attempt to it (lib/websocket.js: it aborts only
      // when nobody listens): without this the socket stayed CONNECTING for ever, no close, no next
      // URL, after a single 502 from a Caddy whose gateways were down. Ended here: 'close' follows.
      res.destroy();
      ws.terminate();
    });
    ws.on('error', (err) => {
      if ((err as Error & { code?: string }).code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
        // ws closes the connection itself (1009); the close below reconnects.
        this.log.warn({ url, code: 'FIELD_GATEWAY_FRAME_TOO_LARGE', maxBytes: LIMITS.downlinkFrameMaxBytes }, 'the gateway sent a frame larger than any legitimate one; connection closed');
        return;
      }
      const tlsCode = (err as Error & { code?: string }).code;
      if (tlsCode === CERT_REVOKED) {
        // The certificate of a server whose key was given away (the old edge certificate after a
        // --renew-dmz): whoever answers there is not to be sent anything. The next URL, as any failure.
        this.log.warn({ url, code: 'FIELD_GATEWAY_CERT_REVOKED', err: err.message }, "the server's certificate is revoked (FIELD_CRL_FILE): not connected, nothing sent");
        return;
      }
      this.log.warn({ url, err: err.message }, 'gateway connection error');
    });
    ws.on('close', (code, reason) => {
      this.liveness.disarm();
      clearTimeout(this.healthyTimer);
      if (this.ws === ws) this.ws = undefined;
      this.emit('close');
      if (this.stopped) return;
      // Failed or lost alike: the next URL (the same one when there is only one).
      this.current = (this.current + 1) % this.urls.length;
      const delay = this.backoff();
      this.log.info({ url, closeCode: code, reason: reason.toString(), nextUrl: this.url, retryInMs: delay }, 'disconnected from gateway');
      this.retryTimer = setTimeout(() => this.open(), delay);
    });
  }

  /**
   * The CRL read again if its file changed (every TIMINGS.fieldCrlCheckMs): a connection open to a
   * server whose certificate it now revokes is dropped, and the next URL tried, as at a handshake.
   */
  private recheckCrl(): void {
    const crl = this.options.tls.crl?.current();
    const ws = this.ws;
    if (!crl || !ws || ws.readyState !== WebSocket.OPEN || !this.serverCert) return;
    const serial = revokedSerial(crl, this.serverCert);
    if (serial === undefined) return;
    this.log.warn({ url: this.url, code: 'FIELD_GATEWAY_CERT_REVOKED', serial, crl: crl.path }, "the server's certificate is revoked by the CRL as it changed: disconnected, nothing more sent");
    ws.terminate();
  }

  /**
   * A CRL the gateway handed over: taken if the CA's and newer (server-crl-source.ts), then the open
   * connection checked against it. One that is not the CA's is said as the gateway's other refused
   * frames are (gatewayLog): a hostile gateway could send one after another, each a log line, and
   * the reason may quote what it put in the frame (an algorithm's OID of any length).
   */
  private takeCrl(frame: CrlFrame, url: string): void {
    let taken: ServerCrl | undefined;
    try {
      taken = this.options.tls.crl?.offer(Buffer.from(frame.crl, 'base64'), url);
    } catch (err) {
      if (!isFieldStreamError(err)) throw err;
      this.gatewayLog.write({ code: err.code, url, err: gatewayText(err.message) }, "the gateway handed over a CRL that is not the CA's: ignored");
      return;
    }
    if (taken) this.recheckCrl();
  }

  private backoff(): number {
    // One step per full round of the URLs: after a lost connection every other server is tried
    // within reconnectInitialMs each before the delay starts to grow.
    const round = Math.floor(this.failures++ / this.urls.length);
    const cap = Math.min(this.options.reconnectMaxMs, this.options.reconnectInitialMs * 2 ** Math.min(round, 20));
    return Math.max(TIMINGS.reconnectMinMs, Math.floor(Math.random() * cap));
  }
}
