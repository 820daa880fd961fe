import { AwaitingFifo } from './awaiting-fifo.ts';
import { AWAITING, COMMITTED, IN_FLIGHT, SeqStates, UNSENT } from './seq-states.ts';

/** Inclusive ranges of sequence numbers, as a commit receipt names them. */
export type SeqRanges = readonly (readonly [number, number])[];

/**
 * Where every record stands between "appended" and "gone":
 *
 *   unsent → in flight (handed out by `next`) → awaiting its receipt (the gateway's ack) → committed
 *
 * Committed is final: the database holds the record. The committed watermark (at or below it
 * everything is committed or dropped) is what ack.json keeps; the states above it live in memory
 * only, so after a restart everything not committed is sent again (the internal side's replay
 * window makes copies harmless). Without receipts, the gateway's ack commits at once.
 *
 * Acks and receipts come out of order, and a receipt may overtake its ack.
 */
export class AckBook {
  private readonly states: SeqStates;
  /** records committed above the watermark */
  private committedAbove = 0;
  private readonly fifo = new AwaitingFifo();
  private awaitingCount = 0;
  private awaitingBytes = 0;
  /** the highest sequence number handed out since the last rewind: in-flight records are at or below it */
  private highestOut = 0;
  /** true for a live entry of the FIFO (one that a commit, drop or expiry did not make stale) */
  private readonly live = (seq: number) => seq > this.watermark && this.states.get(seq) === AWAITING;

  constructor(
    watermark: number,
    /** with receipts, the gateway's ack only moves a record to awaiting; else it commits it */
    private readonly receipts: boolean,
  ) {
    this.states = new SeqStates(watermark + 1);
  }

  /** at or below it every record is committed (or dropped) */
  get watermark(): number {
    return this.states.first - 1;
  }

  /** Moves the watermark up to `seq` (recovery: nothing is left below the oldest segment). */
  raiseWatermark(seq: number): void {
    if (seq > this.watermark) this.states.advanceTo(seq + 1);
  }

  /** Records not committed among the `nextSeq - 1` numbered so far. */
  depth(nextSeq: number): number {
    return nextSeq - 1 - this.watermark - this.committedAbove;
  }

  get awaiting(): { count: number; bytes: number; oldestAt: number | undefined } {
    return { count: this.awaitingCount, bytes: this.awaitingBytes, oldestAt: this.awaitingCount > 0 ? this.fifo.headAt() : undefined };
  }

  /** true while `seq` is not committed */
  isOpen(seq: number): boolean {
    return seq > this.watermark && this.states.get(seq) !== COMMITTED;
  }

  /**
   * The first sequence number from `from` on (and above the watermark) that is neither committed
   * nor `skip`ped; nextSeq when there is none. A record never turns open again once committed, so a
   * caller may pass the last answer as `from` and pay only for what was committed since.
   */
  firstOpen(skip: (seq: number) => boolean, from: number, nextSeq: number): number {
    for (let s = Math.max(from, this.watermark + 1); s < nextSeq; s++) if (this.states.get(s) !== COMMITTED && !skip(s)) return s;
    return nextSeq;
  }

  /** The send cursor's question: only unsent records are sent; with receipts, one sent is then in flight. */
  take(seq: number, bytes: number): boolean {
    if (seq <= this.watermark || this.states.get(seq) !== UNSENT) return false;
    if (this.receipts) {
      this.states.set(seq, IN_FLIGHT);
      this.states.setSize(seq, bytes);
      if (seq > this.highestOut) this.highestOut = seq;
    }
    return true;
  }

  /** The sender starts again: what was in flight is unsent again (what awaits its receipt stays so). */
  rewind(): void {
    if (!this.receipts) return;
    for (let s = this.watermark + 1; s <= this.highestOut; s++) if (this.states.get(s) === IN_FLIGHT) this.states.set(s, UNSENT);
    this.highestOut = this.watermark;
  }

  /** How many records at or below `through` are unsent (sent before, and to be sent again: overdue, or after a rewind). */
  unsentThrough(through: number): number {
    let n = 0;
    for (let s = this.watermark + 1; s <= through; s++) if (this.states.get(s) === UNSENT) n++;
    return n;
  }

  /**
   * Records in flight the gateway never answered (overdue: in-flight.ts) are unsent again; others
   * (answered meanwhile, committed) are left as they are. Returns how many, and the lowest of them.
   */
  unsend(seqs: Iterable<number>): { count: number; lowest: number } {
    let count = 0;
    let lowest = Infinity;
    for (const seq of seqs) {
      if (seq <= this.watermark || this.states.get(seq) !== IN_FLIGHT) continue;
      this.states.set(seq, UNSENT);
      count++;
      if (seq < lowest) lowest = seq;
    }
    return { count, lowest };
  }

  /** The gateway's acks (below nextSeq; repeated or unknown ones ignored); returns how many were new. */
  ack(seqs: Iterable<number>, nextSeq: number, now: number): number {
    if (!this.receipts) return this.commit(seqs, nextSeq);
    let n = 0;
    for (const seq of seqs) {
      if (!(seq > this.watermark && seq < nextSeq && Number.isInteger(seq))) continue;
      const state = this.states.get(seq);
      if (state === AWAITING || state === COMMITTED) continue;
      this.states.set(seq, AWAITING);
      this.fifo.push(seq, now);
      this.awaitingCount++;
      this.awaitingBytes += this.states.size(seq);
      n++;
    }
    return n;
  }

  /** Commits `seqs` (below nextSeq; already committed or unknown ones ignored); returns how many were new. */
  commit(seqs: Iterable<number>, nextSeq: number): number {
    let n = 0;
    for (const seq of seqs) if (seq > this.watermark && seq < nextSeq && Number.isInteger(seq) && this.commitOne(seq)) n++;
    if (n > 0) this.settle();
    return n;
  }

  /** Commits every sequence number of the inclusive ranges; returns how many were new. */
  commitRanges(ranges: SeqRanges, nextSeq: number): number {
    let n = 0;
    for (const [from, to] of ranges) {
      if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to)) continue;
      const last = Math.min(to, nextSeq - 1);
      for (let seq = Math.max(from, this.watermark + 1); seq <= last; seq++) if (this.commitOne(seq)) n++;
    }
    if (n > 0) this.settle();
    return n;
  }

  private commitOne(seq: number): boolean {
    const state = this.states.get(seq);
    if (state === COMMITTED) return false;
    if (state === AWAITING) this.leaveAwaiting(seq);
    this.states.set(seq, COMMITTED);
    this.committedAbove++;
    return true;
  }

  private leaveAwaiting(seq: number): void {
    this.awaitingCount--;
    this.awaitingBytes -= this.states.size(seq);
  }

  /** Moves the watermark over the committed records at its head, and drops stale FIFO entries. */
  private settle(): void {
    let to = this.watermark + 1;
    while (this.states.get(to) === COMMITTED) {
      to++;
      this.committedAbove--;
    }
    this.states.advanceTo(to);
    while (this.fifo.length > 0 && !this.live(this.fifo.headSeq())) this.fifo.shift();
    // entries committed behind a head that waits: compacted once they outnumber the live ones
    if (this.fifo.length > 2 * this.awaitingCount + 1024) this.fifo.compact(this.live);
  }

  /**
   * Records acknowledged longer than `timeoutMs` before `now` go back to unsent, oldest first.
   * Returns how many, and the lowest sequence number among them (for the cursor to go back to).
   */
  expire(now: number, timeoutMs: number): { count: number; lowest: number } {
    let count = 0;
    let lowest = Infinity;
    while (this.fifo.length > 0) {
      const seq = this.fifo.headSeq();
      if (this.live(seq)) {
        if (now - this.fifo.headAt() <= timeoutMs) break;
        this.leaveAwaiting(seq);
        this.states.set(seq, UNSENT); // its size stays known: it is the same record when sent again
        count++;
        if (seq < lowest) lowest = seq;
      }
      this.fifo.shift();
    }
    return { count, lowest };
  }

  /**
   * Forgets records firstSeq..lastSeq (a dropped segment): returns how many of them were not yet
   * committed, i.e. lost, including any that awaited their receipt.
   */
  dropThrough(firstSeq: number, lastSeq: number): number {
    let lost = 0;
    for (let s = Math.max(firstSeq, this.watermark + 1); s <= lastSeq; s++) {
      const state = this.states.get(s);
      if (state === COMMITTED) this.committedAbove--;
      else {
        lost++;
        if (state === AWAITING) this.leaveAwaiting(s);
      }
    }
    if (lastSeq > this.watermark) this.states.advanceTo(lastSeq + 1);
    if (this.highestOut < this.watermark) this.highestOut = this.watermark;
    this.settle();
    return lost;
  }
}
