import type { CommitFrame } from '../../shared/contract/downlink.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { rangesSize, verifyReceipt } from '../../shared/security/receipt-auth.ts';
import type { FileTransfers } from './files/transfers.ts';
import type { InFlight } from './in-flight.ts';
import type { DurableQueue } from './queue/durable-queue.ts';

export interface CommitOptions {
  /** milliseconds after the gateway's ack before a message without its receipt is sent again */
  timeoutMs: number;
  /** messages: how far the newest message sent may run ahead of the oldest not committed */
  windowMessages: number;
  /** bytes of messages awaiting their receipt at most */
  windowBytes: number;
  /** milliseconds after a reconnect before what awaited receipts from before is sent again (TIMINGS.reconnectReceiptGraceMs) */
  reconnectGraceMs?: number | undefined;
}

/**
 * The device's side of commit receipts (docs/end-to-end-commit.md): a receipt came through the
 * DMZ, so it is verified under this device's key before anything is deleted. A forged or altered
 * one is refused and deletes nothing; a genuine one that names nothing still held (a replay, or the
 * receipt of a copy) is counted and changes nothing. What waits too long for its receipt is handed
 * back to be sent again, and the window of what awaits receipts is bounded.
 */
export function noReceiptStats() {
  return {
    lastCommitAt: 0,
    /** receipts that committed something */
    receipts: 0,
    /** receipts refused: their MAC did not verify */
    receiptsInvalid: 0,
    /** genuine receipts that committed nothing */
    receiptsReplayed: 0,
    /** messages and chunks sent again because their receipt was overdue (or, never answered by the gateway, they were as long in flight) */
    resentForReceipt: 0,
  };
}
export type ReceiptStats = ReturnType<typeof noReceiptStats>;

/** For the status endpoint: what the device still holds for lack of a receipt (all 0 with receipts off). */
export function commitStatus(receipts: CommitReceipts | undefined, queue: DurableQueue) {
  const stats = receipts?.stats ?? noReceiptStats();
  const awaiting = queue.awaiting;
  return {
    /** false: the device deletes at the gateway's ack (no signing key to verify receipts with) */
    receipts: receipts !== undefined,
    awaitingReceipt: awaiting.count,
    awaitingBytes: awaiting.bytes,
    // oldestAt is on the queue's monotonic clock: told on the wall clock as that long ago.
    oldestAwaitingSince: awaiting.oldestAt !== undefined ? new Date(Date.now() - (queue.now() - awaiting.oldestAt)).toISOString() : null,
    committed: queue.stats.committed,
    lastCommitAt: stats.lastCommitAt ? new Date(stats.lastCommitAt).toISOString() : null,
    receiptsInvalid: stats.receiptsInvalid,
    receiptsReplayed: stats.receiptsReplayed,
    resentForReceipt: stats.resentForReceipt,
  };
}

export class CommitReceipts {
  /** where the last look for the oldest open record (transfers aside) found it */
  private openFrom = 0;
  /** resends in a row that brought no receipt: each doubles the wait before the next (capped) */
  private fruitlessResends = 0;
  /** of those, the ones made on the current connection since its welcome (receiptsSilent) */
  private fruitlessHere = 0;
  /** when the connection was lost, on the queue's clock (undefined while connected). The times
   * here are all on that clock (durable-queue.ts, now()), which setting the device's clock does not move. */
  private disconnectedAt: number | undefined;
  /** after a reconnect: records acked before `before` are sent again at `at` unless committed */
  private afterReconnect: { before: number; at: number } | undefined;
  /** the last resend for lack of a receipt (-Infinity: none yet) */
  private lastResendAt = Number.NEGATIVE_INFINITY;
  /** the last receipt that committed something (-Infinity: none yet); stats.lastCommitAt is its wall-clock time, for display */
  private lastCommitAt = Number.NEGATIVE_INFINITY;
  readonly stats: ReceiptStats = noReceiptStats();

  constructor(
    private readonly deviceId: string,
    private readonly key: Buffer,
    readonly options: CommitOptions,
    private readonly queue: DurableQueue,
    private readonly transfers: FileTransfers,
    private readonly log: Logger,
    /** the client's messages handed to the connection and not yet answered (none: only what awaits receipts is looked at) */
    private readonly inFlight?: InFlight,
  ) {}

  /**
   * How many more messages may be sent: bounded in bytes awaiting receipts, and in sequence
   * numbers, not in a count: the internal side recognises a copy only within its replay window
   * behind the newest it accepted, so nothing sent may run further ahead of the oldest message still
   * to be committed (LIMITS.replayWindowSeqs bounds windowMessages).
   */
  room(highestSent: number): number {
    if (this.queue.awaiting.bytes >= this.options.windowBytes) return 0;
    const window = this.options.windowMessages;
    let oldest = this.queue.committedThrough + 1;
    if (highestSent - oldest + 1 >= window && this.transfers.size > 0) {
      // A file's queue record stays open until its last chunk is committed, hours for a large
      // file on a slow link; it is never sent under its own sequence number, so it does not count.
      // Scanned on from the last answer: it only ever moves up.
      oldest = this.openFrom = this.queue.firstOpen((seq) => this.transfers.holdsRecord(seq), this.openFrom);
    }
    return window - Math.max(0, highestSent - oldest + 1);
  }

  /** Verifies a receipt and commits what it names; returns how many messages or chunks it let go. */
  receive(frame: CommitFrame): number {
    if (!verifyReceipt(this.key, this.deviceId, frame.epoch, frame.ranges, frame.mac)) {
      this.stats.receiptsInvalid++;
      this.log.warn(
        { code: 'FIELD_RECEIPT_INVALID', epoch: frame.epoch, seqs: rangesSize(frame.ranges), refused: this.stats.receiptsInvalid },
        "refused a commit receipt that does not verify under this device's key; nothing deleted",
      );
      return 0;
    }
    const committed = this.queue.commitReceipt(frame.epoch, frame.ranges) ?? this.transfers.onReceipt(frame.epoch, frame.ranges) ?? 0;
    if (committed === 0) {
      this.stats.receiptsReplayed++;
      this.log.info({ code: 'FIELD_RECEIPT_REPLAYED', epoch: frame.epoch, seqs: rangesSize(frame.ranges) }, 'a genuine receipt for nothing still held; nothing deleted');
      return 0;
    }
    this.stats.receipts++;
    this.stats.lastCommitAt = Date.now();
    this.lastCommitAt = this.queue.now();
    this.fruitlessResends = 0;
    this.fruitlessHere = 0;
    return committed;
  }

  disconnected(now: number): void {
    this.disconnectedAt ??= now;
  }

  /** The gateway welcomed a new connection: what awaited receipts from before gets a grace. */
  welcomed(now: number): void {
    if (this.disconnectedAt !== undefined) this.afterReconnect = { before: this.disconnectedAt, at: now + (this.options.reconnectGraceMs ?? TIMINGS.reconnectReceiptGraceMs) };
    this.disconnectedAt = undefined;
    this.fruitlessHere = 0;
  }

  /**
   * Whether the current connection has had `resends` resends for want of a receipt, none answered
   * by one, since its welcome: its gateway takes messages, and the receipts of what it took do not
   * come back through it (its DMZ server's bridge down since it connected: the DMZ broker holds the
   * messages for the bridge's session). Another server's path may work. The doubling of the wait
   * spaces these out, on every connection, for as long as no receipt comes from anywhere.
   */
  receiptsSilent(resends: number): boolean {
    return this.fruitlessHere >= resends;
  }

  /**
   * milliseconds: how long what is sent waits for its receipt (or, unanswered, for the gateway's
   * answer) before it is overdue. Doubled after each resend that brought no receipt: while the
   * internal side is down for long, the window is not sent again every timeout, piling copies up
   * in both brokers.
   */
  get waitMs(): number {
    return Math.min(this.options.timeoutMs * 2 ** this.fruitlessResends, Math.max(this.options.timeoutMs, LIMITS.commitTimeoutMaxMs));
  }

  /**
   * Hands back what waited too long for its receipt; returns how many (to be sent again). Only
   * those: what else is in flight is not sent again with them (copies, recognised downstream, that
   * cost the link and the gateway). A message or chunk sent that long ago and never answered by the
   * gateway on a connection that stays up is overdue too: it is handed back as well.
   */
  expire(now: number, connected: boolean): number {
    const timeout = this.waitMs;
    let n = this.queue.expireAwaiting(now, timeout) + this.transfers.expire(now, timeout);
    if (this.inFlight) n += this.queue.sendAgain(this.inFlight.overdue(now, timeout));
    const r = this.afterReconnect;
    if (r && now >= r.at && connected) {
      this.afterReconnect = undefined;
      // A reconnect brings the resend forward, but is one of the resends the doubling spaces out:
      // only once the current wait has passed since the last one. A gateway that acks everything
      // and closes the connection every few seconds would otherwise have the device send all that
      // awaits receipts again after each reconnect, however long the internal side has been silent.
      if (now - this.lastResendAt >= timeout) n += this.queue.expireAwaiting(now, now - r.before) + this.transfers.expire(now, now - r.before);
    }
    if (n > 0) {
      this.lastResendAt = now;
      if (now - this.lastCommitAt > timeout) {
        this.fruitlessResends++;
        if (connected) this.fruitlessHere++;
      }
      this.stats.resentForReceipt += n;
      this.log.warn({ code: 'FIELD_COMMIT_TIMEOUT', messages: n, timeoutMs: timeout }, 'no commit receipt in time; sending again');
    }
    return n;
  }
}
