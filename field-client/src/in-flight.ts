/** The time of a file's record in flight: never overdue (its chunks are what is sent, each timed on its own: files/transfers.ts). */
const UNTIMED = Number.POSITIVE_INFINITY;

/**
 * Queue sequence numbers handed to the connection and not yet answered (acked, refused for good, or
 * committed by a receipt that overtook the ack), each with when it was handed over, on the queue's
 * clock (durable-queue.ts, now()). The pump adds, the gateway's answers take out, a new connection
 * or a rewind clears.
 *
 * With receipts, one the gateway never answers on a connection that stays up is overdue once the
 * commit timeout has passed since it was sent, as one whose receipt did not come is (`overdue`):
 * only such messages go again, not everything in flight.
 */
export class InFlight {
  /** seq → when it was handed over; in the order handed over (a seq sent again is deleted first), so the oldest come first */
  private readonly at = new Map<number, number>();
  /** how many of them are files' records */
  private fileRecords = 0;

  get size(): number {
    return this.at.size;
  }

  /** messages in flight, files' records aside: what FIELD_WINDOW bounds */
  get messages(): number {
    return this.at.size - this.fileRecords;
  }

  /** files' records in flight: their transfers run, or wait their turn (files/transfers.ts) */
  get files(): number {
    return this.fileRecords;
  }

  /** A message handed to the connection at `now`. */
  add(seq: number, now: number): void {
    this.delete(seq);
    this.at.set(seq, now);
  }

  /** A file's record, in flight for as long as its transfer runs: never overdue itself. */
  addFile(seq: number): void {
    this.delete(seq);
    this.at.set(seq, UNTIMED);
    this.fileRecords++;
  }

  has(seq: number): boolean {
    return this.at.has(seq);
  }

  /** true when `seq` was in flight */
  delete(seq: number): boolean {
    const at = this.at.get(seq);
    if (at === undefined) return false;
    if (at === UNTIMED) this.fileRecords--;
    return this.at.delete(seq);
  }

  clear(): void {
    this.at.clear();
    this.fileRecords = 0;
  }

  keys(): IterableIterator<number> {
    return this.at.keys();
  }

  /**
   * Takes out, and returns, the messages handed over at least `timeoutMs` before `now` and still
   * unanswered. Stops at the first younger one: the rest were handed over after it.
   */
  overdue(now: number, timeoutMs: number): number[] {
    const out: number[] = [];
    for (const [seq, at] of this.at) {
      if (at === UNTIMED) continue;
      if (now - at < timeoutMs) break;
      out.push(seq);
    }
    for (const seq of out) this.at.delete(seq);
    return out;
  }
}
