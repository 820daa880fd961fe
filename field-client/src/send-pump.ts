import { LIMITS } from '../../shared/limits.ts';
import type { WelcomeFrame } from '../../shared/contract/downlink.ts';
import type { FrameItem } from '../../shared/contract/uplink-frame.ts';
import type { Logger } from '../../shared/logger.ts';
import type { FieldClientOptions } from './client-options.ts';
import type { CommitReceipts } from './commit-receipts.ts';
import { startTransfer } from './files/file-records.ts';
import { FILE_TRANSFER, type FileTransfers } from './files/transfers.ts';
import type { FrameSender } from './frame-sender.ts';
import type { GatewayConnection } from './gateway-connection.ts';
import type { InFlight } from './in-flight.ts';
import type { Refusal } from './rejected.ts';
import type { SendPacing } from './send-pacing.ts';
import type { DurableQueue, OutgoingMessage } from './queue/durable-queue.ts';

/**
 * The field client's pump: takes from the queue what may go out now (the window of unacknowledged
 * messages, the bound on what awaits receipts, the pacing, the socket's buffer), groups it in frames
 * of one epoch within the gateway's limits, then sends file chunks. What the pump hands over goes
 * into the client's in-flight set; the client's answers (acks, receipts, refusals) take it out.
 */
export class SendPump {
  /** the highest queue sequence number ever sent (the receipt window is measured from it) */
  private highestSent = 0;
  private pumpScheduled = false;

  constructor(
    private readonly options: Pick<FieldClientOptions, 'window' | 'batchMax'>,
    private readonly queue: DurableQueue,
    private readonly connection: GatewayConnection,
    private readonly pacing: SendPacing,
    private readonly transfers: FileTransfers,
    private readonly frames: FrameSender,
    /** queue sequence numbers handed to the connection and not yet answered, with when (shared with the client) */
    private readonly inFlight: InFlight,
    private readonly receipts: CommitReceipts | undefined,
    private readonly h: {
      /** the connection's welcome (undefined before it), whose limits hold */
      welcome: () => WelcomeFrame | undefined;
      /** refused for good, held in the queue for room to set it aside (set-aside.ts) */
      isHeld: (seq: number) => boolean;
      /** sets aside what the frames found too large for any frame (frame-sender.ts, oversized) */
      refuseForGood: (ids: readonly string[], refusal: Refusal) => void;
      /** a file record's file was missing at its transfer's start (`transferId` undefined: the record was not one), its record let go (startTransfer) */
      fileGone: (seq: number, transferId: string | undefined) => void;
    },
    private readonly log: Logger,
  ) {}

  /** Runs the pump once this turn of the event loop is done (once, however often it is asked). */
  schedule(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    // setImmediate: everything accepted in this turn of the event loop goes out in one frame.
    setImmediate(() => {
      this.pumpScheduled = false;
      try {
        this.pump();
      } catch (err) {
        this.log.error({ err }, 'sending failed; retrying after a reconnect');
      } finally {
        for (const r of this.frames.takeRefusals()) this.h.refuseForGood(r.messageIds, r);
      }
    });
  }

  private pump(): void {
    // Never more per frame than the gateway said it accepts (its welcome's limits are at least 1
    // message and 1 KiB: downlink.ts; a frame takes at least one message whatever its size).
    const batchMax = Math.max(1, Math.min(this.options.batchMax, this.h.welcome()?.limits.batchMaxMessages ?? Infinity));
    const frameBytes = Math.min(LIMITS.fieldFrameMaxBytes, (this.h.welcome()?.limits.frameMaxBytes ?? Infinity) / 2);
    for (;;) {
      // While the socket holds more than LIMITS.fieldSendBufferMaxBytes unsent, nothing more is
      // taken from the queue: the connection's 'drain' (or an ack) brings the pump back. Nor while
      // what is not yet answered is more than the link carries in TIMINGS.fieldSendAheadMs (an
      // answer brings the pump back): a frame is signed now, and must not wait minutes behind others.
      if (!this.connection.canSend() || this.pacing.room() === 0) return;
      // Readings have FIELD_WINDOW to themselves: a file's record is in flight for as long as its
      // transfer runs (hours, on a slow link), and counted in it, a backlog of files (a camera after
      // an outage) held every reading back until one of them was done. Files' records have a bound
      // of their own (their records are kept in memory; a few send at once, the others wait their
      // turn: files/transfers.ts); past it nothing more is taken (a frame's worth at most over it).
      if (this.inFlight.files >= LIMITS.fieldFilesTakenMax) break;
      const windowRoom = this.options.window - this.inFlight.messages;
      let room = Math.min(windowRoom, this.receipts?.room(this.highestSent) ?? Infinity);
      // What goes again (its receipt overdue, or after a rewind) runs no further ahead of the oldest
      // message not committed than it ran already: the receipt window does not hold it back. It
      // did: full behind a message whose receipt never came (lost by a DMZ broker that crashed),
      // the window held back that message's resend, the one thing that would free it, and nothing
      // more went until the client was restarted. Only those: `next` hands them out first.
      if (room <= 0 && windowRoom > 0 && this.receipts) room = Math.min(windowRoom, this.queue.unsentThrough(this.highestSent));
      if (room <= 0) break;
      // And no more than the pacing has room for (at least one message): a frame goes whole, and a
      // backlog of large messages in one frame of 4 MiB took longer than DISTRIBUTOR_TRANSIT_MAX_S
      // to cross a slow link, refused as stale, the same frame sent again for ever.
      const items = this.queue.next(Math.min(room, batchMax), Math.min(frameBytes, this.pacing.room()));
      if (items.length === 0) break;
      let batch: FrameItem[] = [];
      // A frame names one epoch: after an unclean stop the queue holds messages of the old one too.
      let epoch = this.queue.epochOf((items[0] as OutgoingMessage).seq);
      const now = this.queue.now();
      for (const m of items) {
        if (this.h.isHeld(m.seq)) continue; // refused for good, awaiting room to be set aside: not sent again
        if (m.seq > this.highestSent) this.highestSent = m.seq;
        if (m.dataType === FILE_TRANSFER) {
          this.inFlight.addFile(m.seq);
          this.startTransfer(m);
          continue;
        }
        this.inFlight.add(m.seq, now);
        const its = this.queue.epochOf(m.seq);
        if (its !== epoch) {
          if (batch.length > 0) this.frames.sendFrame(epoch, batch);
          batch = [];
          epoch = its;
        }
        batch.push({ dataType: m.dataType, messageId: m.messageId, seq: m.seq, payloadJson: m.payloadJson });
      }
      if (batch.length > 0) this.frames.sendFrame(epoch, batch);
    }
    // A chunk is taken only when asked for (a generator): stopping leaves the rest for the next pump.
    // Messages went first: a reading waits behind at most the pacing's budget and one chunk, not a
    // file's whole window.
    if (!this.connection.canSend() || this.pacing.room() === 0) return;
    for (const chunk of this.transfers.chunks(this.queue.now())) {
      this.frames.sendFrame(chunk.epoch, [chunk.item]);
      if (!this.connection.canSend() || this.pacing.room() === 0) return;
    }
  }

  private startTransfer(m: OutgoingMessage): void {
    const r = startTransfer(this.transfers, m, this.log);
    if (r.started) return;
    this.inFlight.delete(m.seq);
    this.queue.commitRanges([[m.seq, m.seq]]);
    this.h.fileGone(m.seq, r.gone);
  }
}
