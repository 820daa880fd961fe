import type { CommitFrame, DownlinkFrame } from '../../shared/contract/downlink.ts';
import { isTransient } from '../../shared/errors.ts';
import type { LimitedLog } from '../../shared/limited-log.ts';
import type { BrokerWatch } from './broker-watch.ts';
import type { CommitReceipts } from './commit-receipts.ts';
import type { FileTransfers } from './files/transfers.ts';
import { gatewayText } from './gateway-log.ts';
import type { InFlight } from './in-flight.ts';
import type { LinkRateNote } from './link-rate.ts';
import type { DurableQueue } from './queue/durable-queue.ts';
import type { Refusal } from './rejected.ts';
import type { TransientRewind } from './rewind-backoff.ts';
import type { SendPacing } from './send-pacing.ts';
import type { SetAside } from './set-aside.ts';

/** What the gateway's answers act on: the field client's parts (field-client.ts). */
export interface AnswersHost {
  readonly queue: DurableQueue;
  /** queue sequence numbers handed to the connection and not yet answered */
  readonly inFlight: InFlight;
  readonly transfers: FileTransfers;
  readonly pacing: SendPacing;
  readonly linkRate: LinkRateNote;
  readonly stats: { lastAckAt: number };
  readonly receipts: CommitReceipts | undefined;
  readonly brokerWatch: BrokerWatch;
  readonly transientRewind: TransientRewind;
  readonly gatewayLog: LimitedLog;
  readonly rejected: SetAside;
  schedulePump(): void;
  /** a file's transfer ended, its file out of the outbox (FieldClient.onFileDone) */
  fileDone(seq: number, transferId: string): void;
}

/**
 * What comes back for what was sent: the gateway's acks and error frames, and the commit receipts
 * of the internal side; and what a refusal for good does to the messages it names.
 */
export class GatewayAnswers {
  constructor(private readonly h: AnswersHost) {}

  onAck(ids: readonly string[]): void {
    this.h.pacing.acked(ids, performance.now());
    this.h.linkRate.note(this.h.pacing.linkBytesPerSecond, Date.now());
    this.h.stats.lastAckAt = Date.now();
    // On the queue's clock, as every wait for a receipt (durable-queue.ts, now()).
    const now = this.h.queue.now();
    const seqs: number[] = [];
    // A file's chunk the gateway took is progress as a message is: a device sending a file alone
    // otherwise never started its transient pauses over, and left a gateway whose broker was briefly
    // unavailable while its chunks went through.
    let chunks = 0;
    for (const id of ids) {
      if (this.h.transfers.onAck(id, now)) {
        chunks++;
        continue;
      }
      const seq = this.h.queue.seqOf(id);
      if (seq !== undefined && this.h.inFlight.delete(seq)) seqs.push(seq);
    }
    // With receipts, this only moves them to "awaiting their receipt".
    this.h.queue.ack(seqs);
    if (seqs.length > 0 || chunks > 0) this.progress();
    this.h.schedulePump();
  }

  /** The gateway took something (an ack of ours, a receipt): the transient pauses start over. */
  private progress(): void {
    this.h.transientRewind.progress();
    this.h.brokerWatch.reset();
  }

  /** A commit receipt: what it names, once verified, is no longer held, nor in flight (it can overtake its ack). */
  onCommit(frame: CommitFrame): void {
    if (!this.h.receipts || this.h.receipts.receive(frame) === 0) return; // without a key, receipts cannot be told from forgeries
    this.progress();
    const own = this.h.queue.epochRange(frame.epoch);
    if (own) {
      for (const [a, b] of frame.ranges) {
        // only the numbers this epoch names: under another epoch the same number is another message
        const from = Math.max(a, own[0]);
        const to = Math.min(b, own[1]);
        if (from > to) continue;
        if (to - from < this.h.inFlight.size) for (let s = from; s <= to; s++) this.h.inFlight.delete(s);
        else for (const s of this.h.inFlight.keys()) if (s >= from && s <= to) this.h.inFlight.delete(s);
      }
    }
    this.h.schedulePump();
  }

  onError(frame: Extract<DownlinkFrame, { type: 'error' }>): void {
    // The message is the gateway's text (up to a whole downlink frame): cut, and lines bounded.
    this.h.gatewayLog.write({ code: frame.code, messages: frame.messageIds?.length ?? 0 }, gatewayText(frame.message));
    const ids = frame.messageIds ?? [];
    this.h.pacing.refused(ids, performance.now());
    if (isTransient(frame.code)) {
      if (frame.code === 'GATEWAY_BROKER_UNAVAILABLE' && this.h.brokerWatch.brokerGone()) return;
      // Sent again from the first unacknowledged message once the gateway had a moment, longer
      // after each rewind without progress.
      this.h.transientRewind.schedule();
      return;
    }
    // A refusal for good: the messages it names are set aside. It may be of a whole frame (a parse
    // that failed on one message, or on none) whose other messages it leaves neither acked nor
    // refused: they go again, as after a transient error (the same pause, growing without progress),
    // rather than stay in flight until a reconnect, holding the window (with receipts: all sending).
    if (ids.length > 0) this.refuseForGood(ids, { code: frame.code, message: frame.message, messageIds: ids });
    this.h.transientRewind.schedule();
  }

  /**
   * Refused for good (it breaks the contract): set aside whole on the device's disk, then let go,
   * so one bad message never blocks the queue. Only what is in flight on this connection can be
   * refused, and nothing is deleted on the gateway's word alone: a refusal forged by a
   * compromised DMZ moves messages aside (logged, counted), it loses none, and within
   * FIELD_QUEUE_MAX_BYTES: what finds no room there stays in the queue (set-aside.ts).
   */
  refuseForGood(ids: readonly string[], refusal: Refusal): void {
    const seqs = new Set<number>();
    let files = false;
    for (const id of ids) {
      const transfer = this.h.transfers.refused(id);
      if (transfer !== undefined) {
        // Moved from the outbox into rejected/ (a rename): no byte more on the disk, always room.
        files = true;
        this.h.fileDone(transfer.seq, transfer.transferId);
        continue;
      }
      const seq = this.h.queue.seqOf(id);
      if (seq !== undefined && this.h.inFlight.delete(seq)) seqs.add(seq);
    }
    if (seqs.size > 0) this.h.rejected.refuse(this.h.queue.read(seqs), refusal);
    else if (files) this.h.rejected.measure(); // a file set aside counts now
    this.h.schedulePump();
  }
}
