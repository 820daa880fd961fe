import type { UplinkEnvelope } from '../../../shared/contract/envelope.ts';
import type { StoredPoint } from '../points.ts';
import type { ReplayWindows } from './replay-window.ts';
import type { RefusalTally, TalliedRefusal } from './refusal-tally.ts';
import type { WriteClaim } from './writes-in-flight.ts';

/** A message the device provably sent, by its identity: what a commit receipt names. */
export interface SignedId {
  epoch: string;
  seq: number;
}

export interface Verdict {
  /** the envelope holding only the messages that may be written */
  accepted: UplinkEnvelope | undefined;
  /** when each accepted message was sent, in its order (epoch ms): its signature time, or unsigned, its arrival at the gateway */
  sentAt: number[];
  /** each accepted message's key, in its order (points.ts uplinkKey): its signed (epoch, seq), or unsigned, its message id */
  keys: string[];
  /** one security event per refused message of a known device (registered or revoked) */
  events: StoredPoint[];
  /** refused messages counted rather than stored one each (refusal-tally.ts), added to the counts at commit */
  tallied: readonly TalliedRefusal[];
  /**
   * What the device may be told is durable once this verdict's writes succeed: the accepted
   * messages and the copies of messages accepted before. Never a message whose signature failed:
   * its (epoch, seq) is only a claim, and a receipt for it could make the device delete the genuine
   * message it names. A stale message gets none either: the device sends it again, freshly signed.
   * Only messages signed as a group (version 2) get receipts: that is how a device says it keeps
   * its messages until their receipt. One signed alone (version 1, what a simple device sends) is
   * answered by its ack only; a receipt it would never read cost every hop from here to the device
   * a message per reading (measured in the fleet benchmark: docs/performance.md).
   */
  receipts: SignedId[];
  /**
   * Each accepted message's identity when it gets a receipt (signed as a group), in its order;
   * undefined for one that gets none: its device does not wait for one to let it go.
   */
  receiptIds: Array<SignedId | undefined>;
  /**
   * Takes accepted messages that were not stored, and that their devices keep until their receipt,
   * out of the receipts and of what commit records: a copy sent again later is then new, not a
   * duplicate (receipted unstored). Call before commit.
   */
  withhold(ids: readonly SignedId[]): void;
  /**
   * Records the accepted sequence numbers, and counts the tallied refusals; call once their writes succeeded. With `persist: false`
   * they are journalled at the next {@link MessageVerifier.persist} (one append for the sections of
   * a gateway's envelope, before the envelope is acknowledged).
   */
  commit(o?: { persist: boolean }): void;
  /**
   * Lets a copy of the accepted messages, waiting meanwhile (MessageVerifier.copyInFlight), be
   * checked: call once their write settled, after the commit of a write that succeeded.
   */
  release(): void;
}

/** A check's verdict; its commit a method, not a closure made by each check (see MessageVerifier.refuse). */
export class CheckedVerdict implements Verdict {
  constructor(
    readonly accepted: UplinkEnvelope | undefined,
    readonly sentAt: number[],
    readonly keys: string[],
    readonly events: StoredPoint[],
    readonly tallied: TalliedRefusal[],
    readonly receipts: SignedId[],
    readonly receiptIds: Array<SignedId | undefined>,
    private readonly tally: RefusalTally,
    private readonly replay: ReplayWindows,
    private readonly deviceId: string,
    /** the accepted (epoch, seq), recorded at commit */
    private readonly toRecord: SignedId[],
    /** the accepted messages, marked as being written until release */
    private readonly claim: WriteClaim,
  ) {}

  release(): void {
    this.claim.release();
  }

  withhold(ids: readonly SignedId[]): void {
    const held = (r: SignedId) => ids.some((i) => i.epoch === r.epoch && i.seq === r.seq);
    for (const list of [this.receipts, this.toRecord]) {
      const kept = list.filter((r) => !held(r));
      list.length = 0;
      list.push(...kept);
    }
  }

  commit(o = { persist: true }): void {
    if (this.tallied.length > 0) {
      // Counted when written, like the events stored one each: a message retried while the
      // database is down is not counted at each attempt.
      const now = Date.now();
      for (const r of this.tallied) this.tally.add(r, now);
    }
    for (const r of this.toRecord) this.replay.record(this.deviceId, r.epoch, r.seq);
    // Even with nothing recorded now: a retry after the journal refused what an earlier attempt
    // recorded (ENOSPC) finds its numbers "seen" in memory, and would otherwise be acknowledged,
    // and its device sent a receipt, with the window on disk still without them.
    if (o.persist) this.replay.persist();
  }
}

