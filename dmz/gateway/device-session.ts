import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import type { AckMode, CommandFrame, CommitFrame, CrlFrame, DownlinkFrame, ErrorFrame } from '../../shared/contract/downlink.ts';
import { errorFrame } from '../../shared/contract/downlink.ts';
import { parseUplinkFrame, type FrameLimits } from '../../shared/contract/uplink.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { LimitedLog } from '../../shared/limited-log.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { AckBatcher } from './ack-batcher.ts';
import type { AcceptedMessage, PublishGroup, UplinkPublisher } from './uplink-publisher.ts';
import type { Budget, DeviceBudget, DeviceRateLimiter } from './rate-limit.ts';
import { GatewayMetrics } from './metrics.ts';
import { ReadPause, type DeviceHeldBytes } from './read-pause.ts';
import type { SecurityReporter } from './security-reporter.ts';

export interface SessionLimits extends FrameLimits {
  /** messages awaiting PUBACK before the gateway stops reading this socket */
  maxInFlight: number;
  /**
   * bytes of frames whose messages the publisher or its MQTT client still holds (not PUBACKed)
   * before the gateway stops reading this socket, as for maxInFlight; server.ts sets it from the
   * broker backlog (LIMITS.gatewayDeviceBrokerBacklogShare). Absent: no such bound.
   */
  maxInFlightBytes?: number | undefined;
  /** bytes of unsent downlink before the device is considered stuck and disconnected */
  sendBufferMaxBytes: number;
  /** milliseconds a small ack may wait for the device's next commit receipt (GATEWAY_ACK_HOLD_MS; 0: never) */
  ackHoldMs: number;
}

/** WebSocket close codes (RFC 6455 §7.4.1; 1013 Try Again Later from IANA's registry; 4000–4999 are for applications). */
export const CLOSE = { policyViolation: 1008, superseded: 4009, tooSlow: 4008, goingAway: 1001, tryAgainLater: 1013 } as const;

/** The socket under a device's WebSocket, corked while two frames are written as one. */
export type DeviceSocket = Pick<Duplex, 'cork' | 'uncork'>;

/**
 * One connected device: reads its frames, hands accepted messages to the broker, answers each with
 * an ack (after PUBACK; none to a device that asked for none, ACKS_HEADER) or a coded error, and
 * delivers its commands.
 */
export class DeviceSession {
  /** whether the socket is read, and why not (read-pause.ts) */
  private readonly reads: ReadPause;
  /** refusals of what the device sent: each would be a log line, and a device decides how many (made at the first) */
  private refusals: LimitedLog | undefined;
  /** the device's logger, once made (log) */
  private deviceLog: Logger | undefined;
  /** messages the broker did not take (see the constructor's publishFailureLog) */
  private readonly publishFailureLog: LimitedLog;
  private closed = false;
  /** this device's acks, gathered per turn and held for its next commit receipt (ack-batcher.ts) */
  private readonly acks: AckBatcher;
  /** performance.now() when the socket read under way began (see chargeReads) */
  private readStarted = 0;
  /** milliseconds of that read already charged as its frames' parses */
  private chargedInRead = 0;

  constructor(
    readonly deviceId: string,
    private readonly ws: WebSocket,
    private readonly publisher: UplinkPublisher,
    private readonly limits: SessionLimits,
    /** the gateway's logger: the session's own, a child naming the device, is made at its first use (log) */
    private readonly gatewayLog: Logger,
    private readonly rate?: DeviceRateLimiter,
    private readonly metrics: GatewayMetrics = new GatewayMetrics(),
    private readonly securityReports?: SecurityReporter,
    /** the socket ws writes to (handleUpgrade's); without it, acks are never held */
    private readonly socket?: DeviceSocket,
    /**
     * where messages the broker did not take are logged: the gateway's one for all its devices
     * (server.ts), as a stalled broker has every device's every frame refused at once
     */
    publishFailureLog?: LimitedLog,
    /**
     * the bytes of this device's frames the broker has not taken, over all its connections
     * (server.ts: HeldBytesByDevice); without it, this connection's alone
     */
    heldBytes?: DeviceHeldBytes,
    /** which acks the device reads (ACKS_HEADER): with `none`, no ack frame is sent, errors still are */
    private readonly ackMode: AckMode = 'all',
  ) {
    this.reads = new ReadPause(ws, limits, this, heldBytes);
    ws.on('message', (data, isBinary) => {
      // Whatever a device sends, a failure of handling it is this connection's alone: an error that
      // escaped here would end the process, and every device's connection with it.
      try {
        this.onFrame(data as Buffer, isBinary);
      } catch (err) {
        this.log.error({ code: 'GATEWAY_INTERNAL', err }, 'handling a frame failed; closing the connection');
        this.metrics.refusal('GATEWAY_INTERNAL');
        this.close(1011, 'internal error');
      }
    });
    this.acks = new AckBatcher(this, { batchMaxMessages: limits.batchMaxMessages, ackHoldMs: limits.ackHoldMs, canHold: socket !== undefined });
    ws.on('close', () => {
      this.closed = true;
      this.acks.close();
      this.reads.stop();
    });
    this.publishFailureLog = publishFailureLog ?? new LimitedLog(gatewayLog, { level: 'warn', maxPerWindow: LIMITS.gatewayPublishFailureLogMaxPerWindow, windowMs: TIMINGS.gatewayRefusalLogWindowMs, what: 'messages the broker did not take' });
  }

  /**
   * This device's logger (a child of the gateway's naming the device), made at its first use: most
   * connections log only their start and end, which server.ts writes naming the device itself, and
   * a child made for each of tens of thousands of connections was memory of every one of them.
   */
  get log(): Logger {
    return (this.deviceLog ??= this.gatewayLog.child({ deviceId: this.deviceId }));
  }

  private get refusalLog(): LimitedLog {
    return (this.refusals ??= new LimitedLog(this.log, { level: 'info', maxPerWindow: LIMITS.gatewayRefusalLogMaxPerWindow, windowMs: TIMINGS.gatewayRefusalLogWindowMs, what: 'refused frames' }));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Whether reading this device's socket is paused (backpressure, see ReadPause.track). Meanwhile the
   * gateway reads nothing of it, pongs included: the heartbeat must not take a pong it did not read
   * for one the device did not send.
   */
  get readingPaused(): boolean {
    return this.reads.now;
  }

  /** How many times reading was paused so far: the heartbeat compares it between two looks to know
   * whether reading went on without a break in between (a pause may begin and end between them). */
  get readPauses(): number {
    return this.reads.count;
  }

  /**
   * Closes with a code the device can read, and ends the socket TIMINGS.gatewayClosingGraceMs later
   * if the device has not answered the close by then: ws would wait 30 s, and a device that
   * reconnects again and again without reading (each connection superseding the one before) would
   * otherwise hold a socket each, counted against GATEWAY_MAX_CONNECTIONS, for that long.
   */
  close(code: number, reason: string): void {
    if (this.closed) return;
    this.ws.close(code, reason.slice(0, 120));
    const force = setTimeout(() => this.ws.terminate(), TIMINGS.gatewayClosingGraceMs);
    force.unref();
    this.ws.once('close', () => clearTimeout(force));
  }

  /**
   * Closes as close() does, and reads nothing more of the socket meanwhile: for a connection shed
   * for what it keeps buffered (unfinished-frames.ts), whose bytes are no longer counted once it is
   * shed. Read on, the rest of its message (up to GATEWAY_MAX_FRAME_BYTES) was buffered, uncounted,
   * through the grace; unread, the device's answer to the close is not read either, and the socket
   * ends at the grace's end.
   */
  closeUnread(code: number, reason: string): void {
    if (this.closed) return;
    this.close(code, reason);
    this.reads.shed();
  }

  /**
   * Each read of the device's socket is charged to its CPU budget (GATEWAY_RATE_CPU_MS_PER_S), and
   * reading stops for a while once it owes time, as for a frame (rateLimited). The budget's check
   * before each message sees only whole data messages: pings, unasked pongs and the empty fragments
   * of one message (up to ws's 16,384 a message, each counted by no budget) reached none, and a
   * single device sending them (6 bytes a frame) held most of a core of the gateway, every other
   * device's frames waiting behind. ws takes a read's frames apart synchronously in its own 'data'
   * listener, so the time between a listener before it (readStarting) and one after it (readDone,
   * both server.ts's) is what the read cost; the parses already charged in it (onFrame) are not
   * charged twice.
   */
  readStarting(): void {
    if (!this.rate) return;
    this.readStarted = performance.now();
    this.chargedInRead = 0;
  }

  readDone(): void {
    if (this.closed || !this.rate) return;
    const now = performance.now();
    const budget = this.rate.of(this.deviceId, now, Date.now());
    if (!budget.chargeRead(Math.max(0, now - this.readStarted - this.chargedInRead), now) && !this.reads.forRate) this.rateLimited('cpu', budget);
  }

  /** The ack frames of its AckBatcher (the session is its sink: no closure of its own per connection). */
  sendAck(messageIds: string[]): void {
    this.send({ type: 'ack', messageIds });
  }

  sendCommand(frame: CommandFrame): boolean {
    return this.send(frame);
  }

  /** The CA's CRL, to a device holding an older one (crl-delivery.ts). */
  sendCrl(frame: CrlFrame): boolean {
    return this.send(frame);
  }

  /**
   * A commit receipt from the distributor, passed on as it came (only the device can verify it).
   * Held acks leave in the same write, ack first: one write here, one TLS record and one read at
   * the device where there were two of each.
   */
  sendCommit(frame: CommitFrame): boolean {
    this.acks.receiptSeen();
    if (!this.acks.holding || !this.socket) return this.send(frame);
    this.socket.cork();
    try {
      this.acks.releaseHeld();
      return this.send(frame);
    } finally {
      this.socket.uncork();
    }
  }

  welcome(gatewayId: string): void {
    this.send({
      type: 'welcome',
      deviceId: this.deviceId,
      gatewayId,
      serverTime: Date.now(),
      limits: { frameMaxBytes: this.limits.frameMaxBytes, batchMaxMessages: this.limits.batchMaxMessages },
      ...(this.ackMode === 'none' ? { acks: 'none' as const } : {}),
    });
  }

  private onFrame(data: Buffer, isBinary: boolean): void {
    // ws still hands over frames that arrive after a close began (the device's revoked certificate
    // or token, a newer connection of the device, a failure): none of them is taken. Unanswered, as
    // no answer could reach the device now; it sends them again on its next connection.
    if (this.ws.readyState !== this.ws.OPEN) return;
    const receivedAt = Date.now();
    // Past its rate limit the device was answered once (GATEWAY_RATE_LIMITED) and its socket paused:
    // frames already read with that data are dropped unanswered, uncounted against its budget (the
    // device sends again from its first unacknowledged message after that answer).
    if (this.reads.forRate) {
      // A frame refused for the rate limit, but no error frame: gateway_refused_total counts those
      // sent (the one answer of rateLimited()), not each frame dropped unanswered (95 of a burst of 100).
      this.metrics.rateLimited.inc();
      return;
    }
    // Rate limits before parsing, binary frames included: a flooding device costs the gateway as
    // little as possible (rate-limit.ts DeviceBudget.admit).
    const started = performance.now();
    const budget = this.rate?.of(this.deviceId, started, receivedAt);
    const over = budget?.admit(data.length, started);
    if (budget && over) {
      this.rateLimited(over, budget);
      return;
    }
    if (isBinary) {
      this.reject(new FieldStreamError('CONTRACT_BINARY_FRAME'));
      return;
    }
    let messages;
    // The parse is what a frame can make expensive: charged to the device, refused frames too.
    let parsed = started;
    try {
      messages = parseUplinkFrame(data, this.limits);
    } catch (err) {
      if (!isFieldStreamError(err)) throw err;
      this.reject(err);
      return;
    } finally {
      if (budget) {
        parsed = performance.now();
        budget.chargeCpu(parsed - started, parsed);
        this.chargedInRead += parsed - started;
      }
    }
    // Identity comes from the certificate: one message claiming another device refuses the whole
    // frame, so a frame is accepted or refused as a unit.
    const foreign = messages.find((m) => m.deviceId !== this.deviceId);
    if (foreign) {
      const ids = messages.flatMap((m) => (m.messageId ? [m.messageId] : []));
      this.reject(
        new FieldStreamError(
          'GATEWAY_DEVICE_MISMATCH',
          `This connection's certificate is for device "${this.deviceId}"; the frame claims "${foreign.deviceId}".`,
          { certificateDeviceId: this.deviceId, claimedDeviceId: foreign.deviceId },
        ),
        ids,
      );
      return;
    }
    if (budget && !budget.more(messages.length - 1, parsed)) {
      this.rateLimited('messages', budget, messages.flatMap((m) => (m.messageId ? [m.messageId] : [])));
      return;
    }
    // The parsed messages are this frame's own objects: completed in place, not copied.
    for (const m of messages) m.messageId ??= randomUUID();
    const accepted = messages as AcceptedMessage[];
    this.reads.track(accepted.length, data.length);
    this.metrics.frames.inc();
    const groups = this.publisher.publish(this.deviceId, accepted, receivedAt, data.length);
    // The bytes count until the client lets go of every group, not at the answer: a publish past its
    // timeout is answered (the device sends again) while the client keeps it until the broker
    // answers, and a device freed at each timeout filled the shared backlog all the same.
    const frameBytes = data.length;
    // Most frames make one group (one data type): no Promise.all, two promises and an array more per
    // frame, for those.
    const released = groups.length === 1 ? (groups[0] as PublishGroup).released : Promise.all(groups.map((g) => g.released));
    void released.then(() => this.reads.track(0, -frameBytes));
    for (const group of groups) {
      group.done.then(
        () => {
          this.reads.track(-group.messageIds.length, 0);
          this.metrics.messages(group.dataType, group.messageIds.length);
          if (this.ackMode === 'all') this.acks.ack(group.messageIds);
        },
        (err: unknown) => {
          this.reads.track(-group.messageIds.length, 0);
          const coded = isFieldStreamError(err) ? err : new FieldStreamError('GATEWAY_BROKER_UNAVAILABLE', String(err));
          this.publishFailureLog.write({ code: coded.code, deviceId: this.deviceId, messages: group.messageIds.length }, coded.message);
          this.metrics.refusal(coded.code);
          this.sendError(errorFrame(coded, group.messageIds));
        },
      );
    }
  }

  /** `budget`: which of the device's budgets it is past (GATEWAY_RATE_MESSAGES_PER_S, _BYTES_PER_S, _CPU_MS_PER_S). */
  private rateLimited(budget: Budget, of: DeviceBudget, messageIds?: string[]): void {
    const n = of.limited;
    this.metrics.rateLimited.inc();
    this.metrics.refusal('GATEWAY_RATE_LIMITED');
    this.securityReports?.note(this.deviceId, 'GATEWAY_RATE_LIMITED');
    // Logged on the first and then every 1000th refusal: a flood must not flood the log too.
    if (n === 1 || n % 1000 === 0) this.log.warn({ code: 'GATEWAY_RATE_LIMITED', budget, refusedFrames: n }, `device over its rate limit (${budget})`);
    this.sendError(errorFrame(new FieldStreamError('GATEWAY_RATE_LIMITED'), messageIds));
    // Not read for a moment: what the device sends meanwhile waits in its TCP connection, instead
    // of each frame being parsed and refused in turn (a device past its budget made the gateway
    // answer hundreds of thousands of refusals a second).
    this.reads.pauseForRate();
  }

  private reject(err: FieldStreamError, messageIds?: string[]): void {
    this.refusalLog.write({ code: err.code, details: err.details }, err.message);
    this.metrics.refusal(err.code);
    if (err.code === 'GATEWAY_DEVICE_MISMATCH') this.securityReports?.note(this.deviceId, err.code);
    this.sendError(errorFrame(err, messageIds));
  }

  /**
   * An error goes after any held ack: a device answers a transient error by sending again from its
   * first unacknowledged message, which must not be one the gateway had already acked and held.
   */
  private sendError(frame: ErrorFrame): void {
    if (this.acks.holding) this.acks.releaseHeld();
    this.send(frame);
  }

  /**
   * Answers the device's ping (the server runs ws with autoPong off, server.ts): under the same bound
   * as every other frame to it. ws's own answer ended a device that pinged without reading after 60
   * pongs unwritten, with no code in the log, unlike every other device cut for not reading.
   */
  pong(data: Buffer): void {
    if (this.writable()) this.ws.pong(data);
  }

  private send(frame: DownlinkFrame): boolean {
    if (!this.writable()) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Whether a frame may be written now; a device past the send-buffer limit is disconnected. */
  private writable(): boolean {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return false;
    // ws buffers without bound; a device that stops reading must not grow the gateway's memory.
    if (this.ws.bufferedAmount > this.limits.sendBufferMaxBytes) {
      this.log.warn({ code: 'GATEWAY_SLOW_CONSUMER', buffered: this.ws.bufferedAmount }, 'device is not reading; disconnecting');
      // With a code, behind what it has not read: a device that reads again within
      // TIMINGS.gatewayClosingGraceMs learns why; else the socket ends then (close()). Nothing more
      // is written meanwhile (the socket is no longer open), so the buffer grows no further.
      this.close(CLOSE.tooSlow, 'GATEWAY_SLOW_CONSUMER');
      return false;
    }
    return true;
  }
}
