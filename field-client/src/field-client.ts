import { join } from 'node:path';
import type { DownlinkFrame, WelcomeFrame } from '../../shared/contract/downlink.ts';
import { canonicalPayload, type DataType, type ResponsePayload } from '../../shared/contract/payloads.ts';
import type { FieldClientOptions, PayloadOf, Submission } from './client-options.ts';
import { clientStatus, type ClientStatus } from './client-status.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { LimitedLog } from '../../shared/limited-log.ts';
import { CommitReceipts, noReceiptStats, type ReceiptStats } from './commit-receipts.ts';
import type { Logger } from '../../shared/logger.ts';
import type { CommandHandlers } from './commands.ts';
import type { FileOutbox } from './files/file-outbox.ts';
import { dropFilesOf } from './files/file-records.ts';
import { FinishedTransfers } from './files/finished-transfers.ts';
import { fileRoom, holdAnnouncedRoom, reserveFileRoom, takeFile, type IntakeHost } from './files/file-intake.ts';
import type { Reservation } from './files/file-room.ts';
import { chunkBytesForFrame } from './files/transfer-record.ts';
import { FileTransfers } from './files/transfers.ts';
import { SetAside } from './set-aside.ts';
import { GatewayAnswers } from './gateway-answers.ts';
import { gatewayLog } from './gateway-log.ts';
import { TransientRewind } from './rewind-backoff.ts';
import { SendPacing } from './send-pacing.ts';
import { LinkRateNote } from './link-rate.ts';
import { FrameSender } from './frame-sender.ts';
import { BrokerWatch } from './broker-watch.ts';
import { SendPump } from './send-pump.ts';
import { InFlight } from './in-flight.ts';
import type { GatewayConnection } from './gateway-connection.ts';
import type { DurableQueue, QueuedMessage } from './queue/durable-queue.ts';

/**
 * Store and forward. Everything accepted goes first into the durable queue (`submit` resolves when
 * it is on disk), and leaves it only when the internal network says it holds it: a commit receipt
 * from the distributor, under this device's key, verified here (with no signing key, receipts
 * cannot be verified and the gateway's ack, "in the DMZ broker", is taken instead). The gateway's
 * ack only moves a message to "awaiting its receipt"; one whose receipt does not come within
 * `commit.timeoutMs` is sent again, and the copy, recognised on the internal side, is answered with
 * a receipt too. So a message survives a crash of any hop after it left: only a receipt deletes it.
 *
 * Messages go out in order, in batches, with a window of unacknowledged ones and a bound on what
 * awaits receipts; after a reconnect the client starts again from the first unacknowledged message.
 * Whatever the windows allow, no more is handed to the connection, unanswered, than the link carries
 * in a few seconds (send-pacing.ts): a frame is signed when handed over, and must reach the gateway
 * within DISTRIBUTOR_TRANSIT_MAX_S.
 * Each message keeps the identity it was given when accepted (queue epoch, sequence number) and its
 * device timestamp, so one sent twice becomes the same database point.
 *
 * Files go in chunks from the outbox (files/transfers.ts), each chunk kept until its receipt.
 */
export class FieldClient {
  /** queue sequence numbers handed to the connection and not yet answered, with when: the pump adds, answers take out (in-flight.ts) */
  private readonly inFlight = new InFlight();
  private readonly transfers: FileTransfers;
  /** file transfers finished whose records a start may read back (files/finished-transfers.ts) */
  private readonly finishedFiles: FinishedTransfers;
  /** messages refused for good, set aside within maxBytes or held in the queue for room (set-aside.ts) */
  private readonly rejected: SetAside;
  /** sending again after transient error frames, with a growing pause (rewind-backoff.ts) */
  private readonly transientRewind: TransientRewind;
  /** GATEWAY_BROKER_UNAVAILABLE without progress, and when to leave for the next URL (broker-watch.ts) */
  private readonly brokerWatch: BrokerWatch;
  /** what is handed to the connection and not yet answered, within what the link carries in a few seconds (send-pacing.ts) */
  private readonly pacing: SendPacing;
  /** frames signed on the gateway's clock, within its frame limit (frame-sender.ts) */
  private readonly frames: FrameSender;
  /** the gateway's acks and errors, commit receipts, refusals for good (gateway-answers.ts) */
  private readonly answers: GatewayAnswers;
  /** takes from the queue what may go out now, and sends it (send-pump.ts) */
  private readonly pump: SendPump;
  /** the link's measured rate, kept across restarts (link-rate.ts) */
  private readonly linkRate: LinkRateNote;
  /** error frames and out-of-place welcomes: logged within a bound (gateway-log.ts) */
  private readonly gatewayLog: LimitedLog;
  private readonly commitTimer: NodeJS.Timeout | undefined;
  /** commit receipts: on when the client has commit options and a key to verify receipts with */
  readonly receipts: CommitReceipts | undefined;
  welcome: WelcomeFrame | undefined;
  /**
   * bytes: the largest chunk whose frame the last gateway that welcomed this client takes (undefined:
   * none yet, or none fits); kept across connections, as files are taken between them too
   */
  private frameChunkBytes: number | undefined;
  /** the wait for this connection's welcome (onOpen), after which sending starts without one */
  private welcomeWait: NodeJS.Timeout | undefined;
  /**
   * Sending started on this connection: at its welcome, or once the wait for it ended. What is
   * submitted before is not sent: the welcome starts sending from the first unacknowledged message,
   * so anything sent before it would go twice.
   */
  private sending = false;
  readonly stats = { sent: 0, refusedByGateway: 0, lastAckAt: 0, connectedSince: 0 };

  constructor(
    private readonly options: FieldClientOptions,
    readonly queue: DurableQueue,
    private readonly outbox: FileOutbox,
    private readonly connection: GatewayConnection,
    private readonly commands: CommandHandlers,
    private readonly log: Logger,
  ) {
    const { commit, signingKey } = options;
    this.rejected = new SetAside({
      dataDir: options.dataDir,
      maxBytes: options.maxBytes,
      queue,
      outboxBytes: () => outbox.bytes(),
      onSetAside: (n) => (this.stats.refusedByGateway += n),
      log,
    });
    // One bound for all the device holds: new data is charged the files waiting in the outbox and
    // what is set aside (or the reserve for it), and drop-oldest drops a file with its record.
    queue.shareCapacity(() => this.rejected.charge() + outbox.bytes());
    queue.onDrop((dropped) => this.onDropped(dropped));
    this.finishedFiles = new FinishedTransfers(options.dataDir, log);
    this.transfers = new FileTransfers(outbox, { window: options.fileWindow, receipts: commit !== undefined && signingKey !== undefined }, (seq, transferId, setAside) => this.onFileDone(seq, transferId, setAside), log, () => this.schedulePump());
    connection.on('open', () => this.onOpen());
    connection.on('close', () => this.onClose());
    connection.on('frame', (frame) => this.onFrame(frame));
    // The socket's buffer went back under its bound (the pump stopped at it): go on.
    connection.on('drain', () => this.schedulePump());
    this.transientRewind = new TransientRewind(() => this.resetSending(), options.transientRewindMs);
    this.linkRate = new LinkRateNote(join(options.dataDir, 'link-rate.json'), log);
    this.pacing = new SendPacing(options.sendAheadMs, this.linkRate.load(Date.now()));
    // A file taken once the link is measured is cut in chunks that cross it in a few seconds, and
    // once a gateway said its frame limit, in chunks whose frames it takes.
    outbox.sizeChunksBy(() => {
      const link = this.pacing.chunkBytes();
      const frame = this.frameChunkBytes;
      return link === undefined || frame === undefined ? (link ?? frame) : Math.min(link, frame);
    });
    this.gatewayLog = gatewayLog(log);
    this.frames = new FrameSender(options, connection, this.pacing, this.stats, () => this.welcome, log);
    this.brokerWatch = new BrokerWatch(options, connection);
    if (commit && signingKey) {
      this.receipts = new CommitReceipts(options.deviceId, signingKey, commit, queue, this.transfers, log, this.inFlight);
      this.commitTimer = setInterval(() => this.expireOverdue(), TIMINGS.commitCheckIntervalMs);
      this.commitTimer.unref();
    }
    this.answers = new GatewayAnswers({
      queue,
      inFlight: this.inFlight,
      transfers: this.transfers,
      pacing: this.pacing,
      linkRate: this.linkRate,
      stats: this.stats,
      receipts: this.receipts,
      brokerWatch: this.brokerWatch,
      transientRewind: this.transientRewind,
      gatewayLog: this.gatewayLog,
      rejected: this.rejected,
      schedulePump: () => this.schedulePump(),
      fileDone: (seq, transferId) => this.onFileDone(seq, transferId),
    });
    this.pump = new SendPump(options, queue, connection, this.pacing, this.transfers, this.frames, this.inFlight, this.receipts, {
      welcome: () => this.welcome,
      isHeld: (seq) => this.rejected.isHeld(seq),
      refuseForGood: (ids, refusal) => this.answers.refuseForGood(ids, refusal),
      // Written down as finished, as a transfer done is: the next start lets its record go quietly.
      fileGone: (seq, transferId) => this.finishedFiles.add(transferId, seq, this.queue.persistedThrough),
    }, log);
  }

  /** What commit receipts did (all 0 with receipts off). */
  get receiptStats(): ReceiptStats {
    return this.receipts?.stats ?? noReceiptStats();
  }

  /**
   * Milliseconds the gateway's clock was ahead of this device's (negative: behind) when its last
   * welcome arrived, the trip from the gateway included; undefined before the first welcome.
   */
  get clockOffset(): number | undefined {
    return this.frames.clockOffset;
  }

  /** Whether messages are kept until their commit receipt (rather than until the gateway's ack). */
  get receiptsOn(): boolean {
    return this.receipts !== undefined;
  }

  stop(): void {
    clearInterval(this.commitTimer);
    this.transfers.close();
    this.rejected.stop();
    this.transientRewind.cancel();
  }

  /** Accepts messages; resolves once they are in the durable queue (safe from a crash). */
  async submitMany(items: readonly Submission[]): Promise<QueuedMessage[]> {
    const now = new Date().toISOString();
    // The device's clock stamps what has no timestamp, so a message sent twice is the same point.
    const stamped = items.map((i) =>
      i.dataType === 'file' || (i.payload as { timestamp?: unknown }).timestamp !== undefined
        ? i
        : { dataType: i.dataType, payload: { ...i.payload, timestamp: now } },
    );
    const accepted = await this.queue.append(stamped.map((i) => ({ dataType: i.dataType, payload: canonicalPayload(i.dataType, i.payload) })));
    this.schedulePump();
    return accepted;
  }

  submit<T extends DataType>(dataType: T, payload: PayloadOf[T]): Promise<QueuedMessage> {
    return this.submitMany([{ dataType, payload } as Submission]).then((m) => m[0] as QueuedMessage);
  }

  /** bytes a file may still take within FIELD_QUEUE_MAX_BYTES (see files/file-intake.ts) */
  fileRoom(): number {
    return fileRoom(this.intake);
  }

  /** Holds room for `bytes` more of a file being taken until it is queued or released; FIELD_QUEUE_FULL when there is none. */
  reserveFileRoom(bytes: number, held?: Reservation): Reservation {
    return reserveFileRoom(this.intake, bytes, held);
  }

  /** Holds room for a file its sender says is `bytes` long, before it arrives (files/file-intake.ts holdAnnouncedRoom). */
  holdAnnouncedRoom(bytes: number): Reservation {
    return holdAnnouncedRoom(this.intake, bytes);
  }

  /**
   * Queues a file of any size to be sent in chunks; resolves once it is in the outbox and queued.
   * `reservation`: room the caller already holds for it (the HTTP input, while the file arrived).
   */
  async submitFile(path: string, options: { filename?: string; contentType?: string; move?: boolean; reservation?: Reservation; sourceKept?: (code: string) => void } = {}): Promise<QueuedMessage> {
    const m = await takeFile(this.intake, path, options);
    this.schedulePump();
    return m;
  }

  private get intake(): IntakeHost {
    return { queue: this.queue, outbox: this.outbox, maxBytes: this.options.maxBytes, setAside: () => ({ charge: this.rejected.charge(), bytes: this.rejected.bytes }), log: this.log };
  }

  private onOpen(): void {
    // What the command journal kept unqueued (a crash between a command's run and its answer's
    // queueing, a full queue) goes now, not only when a command next arrives.
    this.commands.queueKept(this.queueResponse, this.log);
    this.brokerWatch.reset();
    this.stats.connectedSince = Date.now();
    this.welcome = undefined;
    this.sending = false;
    // Sending starts with the gateway's welcome, which says its limits (or after a moment without one).
    // This connection's moment: a wait left running by one closed before its welcome started the
    // next connection's sending before that one's welcome, within limits it had not said.
    clearTimeout(this.welcomeWait);
    this.welcomeWait = setTimeout(() => {
      if (this.welcome || !this.connection.isOpen) return;
      this.sending = true;
      this.resetSending();
    }, TIMINGS.welcomeWaitMs).unref();
  }

  private onClose(): void {
    clearTimeout(this.welcomeWait);
    this.stats.connectedSince = 0;
    this.sending = false;
    this.receipts?.disconnected(this.queue.now());
    this.transientRewind.cancel();
    this.inFlight.clear();
    this.transfers.reset();
    this.pacing.reset();
    this.queue.rewind(); // offline: nothing is read until the gateway's welcome
  }

  /**
   * Start again from the first unacknowledged message and chunk (what awaits a receipt waits on):
   * a new connection, or a transient error, after which the gateway may have dropped frames
   * unanswered. What was handed over is counted afresh against the pacing's budget.
   */
  private resetSending(): void {
    this.inFlight.clear();
    this.transfers.reset();
    this.pacing.reset();
    this.queue.rewind();
    this.schedulePump();
  }

  private schedulePump(): void {
    if (this.sending) this.pump.schedule();
  }

  /** A command's answer into the queue; resolves once it is synced there. */
  private readonly queueResponse = (response: ResponsePayload): Promise<void> => this.submit('response', response).then(() => this.queue.durable());

  /** Drop-oldest dropped these records (counted there): a file record's file goes with it, a command's answer is kept and queued again. */
  private onDropped(dropped: readonly QueuedMessage[]): void {
    for (const seq of dropFilesOf(dropped, this.transfers, this.outbox, this.log)) this.inFlight.delete(seq);
    this.commands.answersDropped(dropped, this.queueResponse, this.log);
  }

  /**
   * A file's transfer ended (every chunk committed, its file set aside or gone), its file out of the
   * outbox: its queue record goes too, and is written down as finished until ack.json's watermark
   * passes it (the next start would read it back otherwise, and take the file for lost).
   */
  private onFileDone(seq: number, transferId: string, setAside?: boolean): void {
    this.inFlight.delete(seq);
    this.queue.commitRanges([[seq, seq]]);
    this.finishedFiles.add(transferId, seq, this.queue.persistedThrough);
    if (setAside) this.rejected.measure(); // counts now, as it left the outbox's count
  }

  private onFrame(frame: DownlinkFrame): void {
    switch (frame.type) {
      case 'ack':
        this.answers.onAck(frame.messageIds);
        return;
      case 'commit':
        this.answers.onCommit(frame);
        return;
      case 'error':
        this.answers.onError(frame);
        return;
      case 'command':
        // queueResponse resolves once the answer is synced, not only written: the journal then records the
        // command as answered (synced), and with FIELD_QUEUE_SYNC at an interval a power cut
        // between the two lost the answer while the journal said it was queued, its next
        // delivery refused as a replay.
        void this.commands.answer(frame, this.queueResponse, this.log);
        return;
      case 'welcome':
        // Only a connection's first counts: each sends the window again. Ignored, not closed on:
        // a close would hand a hostile gateway a reconnect (a handshake, the window again) per
        // welcome; ignoring costs nothing, and the first welcome's limits and clock hold.
        if (this.welcome) {
          this.gatewayLog.write({ code: 'FIELD_GATEWAY_WELCOME_REPEATED', gatewayId: frame.gatewayId.slice(0, 128) }, 'ignored a second welcome on one connection');
          return;
        }
        this.welcome = frame;
        this.frameChunkBytes = chunkBytesForFrame(frame.limits.frameMaxBytes);
        this.frames.welcomed(frame.serverTime);
        this.receipts?.welcomed(this.queue.now());
        // Sending started already (the wait for the welcome ended): what was sent meanwhile is on
        // its way and will be answered on this connection; started again from the first
        // unacknowledged message, all of it went twice. Its limits and clock hold from the next frame.
        if (this.sending) {
          this.schedulePump();
          return;
        }
        this.sending = true;
        this.resetSending();
        return;
    }
  }

  /**
   * Messages and chunks whose receipt is overdue go out again, and those in flight as long that the
   * gateway never answered; only those (CommitReceipts.expire), not everything else in flight: that
   * is still on its way and will be answered. Offline, they go once the next connection is welcomed.
   */
  private expireOverdue(): void {
    if (!this.receipts) return;
    const now = this.queue.now();
    const wait = this.receipts.waitMs;
    const resent = this.receipts.expire(now, this.connection.isOpen);
    // The frames that carried what is given up on unanswered no longer hold the pacing's budget.
    if (this.pacing.giveUp(now - wait, now) || resent > 0) this.schedulePump();
    const resends = this.connection.urlCount > 1 ? LIMITS.receiptsSilentMoveResends : 2 * LIMITS.receiptsSilentMoveResends;
    if (resent > 0 && this.receipts.receiptsSilent(resends)) {
      this.connection.moveOn(
        { code: 'FIELD_RECEIPTS_SILENT', resends, waitMs: wait },
        'the gateway takes messages but no commit receipt comes back through it; connecting again (the next gateway URL, if several)',
      );
    }
  }

  /** bytes set aside (rejected.jsonl, rejected/), counted against maxBytes */
  get rejectedBytes(): number {
    return this.rejected.bytes;
  }

  /** refused messages held in the queue for lack of room to set them aside */
  get heldRefusals(): number {
    return this.rejected.heldCount;
  }

  /** Messages in the durable queue not yet let go of (not committed; cheap: no disk read). */
  get unacknowledged(): number {
    return this.queue.depth;
  }

  /** For the local status endpoint and `fieldstream doctor`. */
  status(): ClientStatus {
    return clientStatus({
      deviceId: this.options.deviceId,
      connected: this.connection.isOpen,
      gatewayId: this.welcome?.gatewayId,
      stats: this.stats,
      queue: this.queue,
      outbox: this.outbox,
      receipts: this.receipts,
      rejected: this.rejected,
      transfers: this.transfers,
      commands: this.commands,
      pacing: this.pacing,
    });
  }
}
