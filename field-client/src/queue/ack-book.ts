/**
 * What the gateway acknowledged: the watermark at or below which every record is acked (the one
 * persisted in ack.json), and the acked sequence numbers above it (acks may come out of order).
 */
export class AckBook {
  private readonly ackedAbove = new Set<number>();

  constructor(
    /** at or below it every record is acked (or dropped) */
    public watermark: number,
  ) {}

  /** Records not acked among the `nextSeq - 1` numbered so far. */
  depth(nextSeq: number): number {
    return nextSeq - 1 - this.watermark - this.ackedAbove.size;
  }

  /** true while `seq` (> watermark) still waits for its ack */
  isOpen(seq: number): boolean {
    return seq > this.watermark && !this.ackedAbove.has(seq);
  }

  /** The send cursor's question: every record still open is sent. */
  take(seq: number, _bytes: number): boolean {
    return this.isOpen(seq);
  }

  /** Records the acks of `seqs` (below nextSeq; repeated or unknown ones ignored); returns how many were new. */
  ack(seqs: Iterable<number>, nextSeq: number): number {
    let n = 0;
    for (const seq of seqs) {
      if (seq <= this.watermark || seq >= nextSeq || this.ackedAbove.has(seq)) continue;
      this.ackedAbove.add(seq);
      n++;
    }
    while (this.ackedAbove.delete(this.watermark + 1)) this.watermark++;
    return n;
  }

  /**
   * Forgets everything up to `lastSeq` (a dropped segment from firstSeq): returns how many of those
   * records were still open, i.e. lost.
   */
  dropThrough(firstSeq: number, lastSeq: number): number {
    let lost = 0;
    for (let s = Math.max(firstSeq, this.watermark + 1); s <= lastSeq; s++) if (!this.ackedAbove.has(s)) lost++;
    for (let s = firstSeq; s <= lastSeq; s++) this.ackedAbove.delete(s);
    this.watermark = Math.max(this.watermark, lastSeq);
    return lost;
  }
}
