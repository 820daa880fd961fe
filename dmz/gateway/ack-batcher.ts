import { LIMITS } from '../../shared/limits.ts';

/** What the batcher needs of its device's session. */
export interface AckSink {
  /** Writes one ack frame of at most batchMaxMessages ids. */
  sendAck(messageIds: string[]): void;
}

export interface AckBatcherOptions {
  /** most ids in one ack frame (the device's batchMaxMessages) */
  batchMaxMessages: number;
  /** milliseconds a small ack may wait for the device's next commit receipt (GATEWAY_ACK_HOLD_MS; 0: never) */
  ackHoldMs: number;
  /** whether acks may be held at all: the session writes to a socket it can cork (see DeviceSession) */
  canHold: boolean;
}

/**
 * One device's acks, gathered and, while its commit receipts flow, held to leave with the next one.
 *
 * Acks are gathered until the microtasks of this turn have run: the frames that joined one
 * envelope are settled by its one PUBACK, in one turn, and leave as one ack frame (at most
 * batchMaxMessages ids each) instead of one per frame. For a device sending a reading per frame
 * that was one WebSocket message out, and one in at the device, per reading.
 *
 * A device that signs its frames as a group gets a commit receipt for them (from the distributor,
 * through this gateway) soon after their ack. For a device sending a reading a second, ack and
 * receipt were two writes to the device and two TLS records, each read by Caddy and by the device
 * (system calls are a large share of the gateway's and Caddy's CPU at a small frame per device:
 * docs/performance.md, "Acks with their commit receipts"). So while receipts reach this device, a
 * small ack (LIMITS.ackHoldMaxMessages) is held until the next receipt, and both leave in one write
 * (DeviceSession.sendCommit), for at most GATEWAY_ACK_HOLD_MS. Nothing waits on it for safety: the
 * device deletes only at a receipt, and a receipt may overtake its ack. Only the device's room to
 * send waits; hence acks of a later PUBACK release the held ones at once (a device sending faster
 * than receipts come back is held back by one PUBACK at most), and a large batch is never held.
 */
export class AckBatcher {
  /** message ids settled this turn, not yet acked */
  private pending: string[] = [];
  /** acks held back to leave with this device's next commit receipt */
  private held: string[] = [];
  private holdTimer: NodeJS.Timeout | undefined;
  /** whether commit receipts reach this device: one came since a hold last ran out */
  private receiptsFlowing = false;

  constructor(
    private readonly sink: AckSink,
    private readonly o: AckBatcherOptions,
  ) {}

  /** Messages the broker took: acked at the end of this turn, with the others settled in it. */
  ack(messageIds: readonly string[]): void {
    if (this.pending.length === 0) queueMicrotask(() => this.flush());
    for (const id of messageIds) this.pending.push(id);
  }

  /** Whether acks are held now (to go before a receipt or an error: releaseHeld). */
  get holding(): boolean {
    return this.held.length > 0;
  }

  /** A commit receipt reached the device: small acks may be held for the next. */
  receiptSeen(): void {
    this.receiptsFlowing = true;
  }

  /** Sends the held acks now. */
  releaseHeld(): void {
    clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    const ids = this.held;
    this.held = [];
    this.send(ids);
  }

  /** The connection closed: nothing more is sent. */
  close(): void {
    clearTimeout(this.holdTimer);
  }

  private flush(): void {
    const ids = this.pending;
    this.pending = [];
    if (this.held.length > 0) {
      for (const id of ids) this.held.push(id);
      this.releaseHeld();
    } else if (this.receiptsFlowing && this.o.canHold && this.o.ackHoldMs > 0 && ids.length <= LIMITS.ackHoldMaxMessages) {
      this.held = ids;
      this.holdTimer = setTimeout(() => this.holdRanOut(), this.o.ackHoldMs);
    } else {
      this.send(ids);
    }
  }

  /**
   * No receipt within the hold: the ack goes alone, and acks are not held until a receipt comes again.
   * A method, not an arrow in a field: under tsx (which keeps functions' names) such an arrow is
   * named at each construction, 0.2 µs and a dictionary of properties (~300 bytes) per connection.
   */
  private holdRanOut(): void {
    this.holdTimer = undefined;
    this.receiptsFlowing = false;
    this.releaseHeld();
  }

  private send(ids: readonly string[]): void {
    for (let i = 0; i < ids.length; i += this.o.batchMaxMessages) this.sink.sendAck(ids.slice(i, i + this.o.batchMaxMessages));
  }
}
