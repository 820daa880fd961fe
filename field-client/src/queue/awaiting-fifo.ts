/**
 * Sequence numbers in the order they were acknowledged, with when: the oldest is first, so finding
 * what waited too long for its receipt stops at the first that did not. A record committed out of
 * order stays in place, recognised as gone by its owner and passed over when it reaches the head
 * (or at a compaction). Two typed arrays in a ring: no allocation per record.
 */
export class AwaitingFifo {
  private seqs = new Float64Array(1024);
  private ats = new Float64Array(1024);
  private head = 0;
  private count = 0;

  get length(): number {
    return this.count;
  }

  push(seq: number, at: number): void {
    if (this.count === this.seqs.length) this.resize(this.seqs.length * 2);
    const i = (this.head + this.count) % this.seqs.length;
    this.seqs[i] = seq;
    this.ats[i] = at;
    this.count++;
  }

  /** the oldest entry's sequence number (length > 0) */
  headSeq(): number {
    return this.seqs[this.head] as number;
  }

  /** when the oldest entry was acknowledged (length > 0) */
  headAt(): number {
    return this.ats[this.head] as number;
  }

  shift(): void {
    this.head = (this.head + 1) % this.seqs.length;
    this.count--;
  }

  /** Keeps only the entries `keep` says are still live, in order. */
  compact(keep: (seq: number) => boolean): void {
    const n = this.seqs.length;
    let w = 0;
    for (let r = 0; r < this.count; r++) {
      const i = (this.head + r) % n;
      const seq = this.seqs[i] as number;
      if (!keep(seq)) continue;
      const j = (this.head + w) % n;
      this.seqs[j] = seq;
      this.ats[j] = this.ats[i] as number;
      w++;
    }
    this.count = w;
  }

  private resize(slots: number): void {
    const seqs = new Float64Array(slots);
    const ats = new Float64Array(slots);
    for (let r = 0; r < this.count; r++) {
      const i = (this.head + r) % this.seqs.length;
      seqs[r] = this.seqs[i] as number;
      ats[r] = this.ats[i] as number;
    }
    this.seqs = seqs;
    this.ats = ats;
    this.head = 0;
  }
}
