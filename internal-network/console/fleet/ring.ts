/**
 * The newest `capacity` items, each with a sequence number, so that a reader who saw up to `seq`
 * asks for what came after it. Memory stays bounded whatever arrives.
 */
export class Ring<T> {
  private readonly items: T[] = [];
  private first = 0;
  /** sequence number of the newest item (0: none yet) */
  seq = 0;

  constructor(private readonly capacity: number) {}

  push(item: T): void {
    this.items.push(item);
    this.seq++;
    if (this.items.length > this.capacity) {
      this.items.shift();
      this.first++;
    }
  }

  /** The items after sequence number `seq` (at most the capacity), oldest first. */
  since(seq: number): T[] {
    const from = Math.max(0, seq - this.first);
    return from >= this.items.length ? [] : this.items.slice(from);
  }

  /** The newest `n`, newest first. */
  newest(n: number): T[] {
    return this.items.slice(-n).reverse();
  }
}
