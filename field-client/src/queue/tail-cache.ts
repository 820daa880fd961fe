import type { OutgoingMessage } from './queue-types.ts';

/** A record kept in memory: where it is in its segment, and the message it holds. */
export interface CachedRecord {
  /** offset of the record in its segment */
  start: number;
  /** offset just past it */
  end: number;
  /** bytes of its body */
  bytes: number;
  message: OutgoingMessage;
}

/**
 * bytes a cached record costs beyond its body: the message object, its strings' headers and the
 * record itself (an estimate for V8 on 64 bits, so that the budget bounds memory, not only text)
 */
const RECORD_OVERHEAD_BYTES = 200;
const cost = (r: CachedRecord) => r.bytes + RECORD_OVERHEAD_BYTES;

/**
 * The newest records written to the active segment, oldest first, within a memory budget. The
 * sender takes them in order from where its cursor is; what it passed, and the oldest when the
 * budget is exceeded, are let go. Adding and taking cost O(1) amortised: an array with a moving
 * head, compacted once the head passes half of it.
 */
export class TailCache {
  private segment: unknown;
  private records: CachedRecord[] = [];
  private head = 0;
  private used = 0;

  constructor(
    /** bytes of memory */
    private readonly budgetBytes: number,
  ) {}

  /** bytes of memory held now (estimated) */
  get bytes(): number {
    return this.used;
  }

  /** Keeps a record just written at the end of `segment` (records of an earlier segment are let go). */
  add(segment: unknown, record: CachedRecord): void {
    if (segment !== this.segment) {
      this.segment = segment;
      this.records = [];
      this.head = 0;
      this.used = 0;
    }
    this.records.push(record);
    this.used += cost(record);
    while (this.used > this.budgetBytes && this.head < this.records.length) this.used -= cost(this.records[this.head++] as CachedRecord);
    this.compact();
  }

  /** The record at `start` of `segment`, if kept; it and every record before it are let go. */
  take(segment: unknown, start: number): CachedRecord | undefined {
    if (segment !== this.segment) return undefined;
    const i = this.indexOf(start);
    if (i === undefined) return undefined;
    const record = this.records[i] as CachedRecord;
    while (this.head <= i) this.used -= cost(this.records[this.head++] as CachedRecord);
    this.compact();
    return record;
  }

  /** Where the record at `start` is: most often the oldest kept (a sender in step), else by bisection. */
  private indexOf(start: number): number | undefined {
    let lo = this.head;
    let hi = this.records.length - 1;
    if (lo > hi || start < (this.records[lo] as CachedRecord).start) return undefined;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const at = (this.records[mid] as CachedRecord).start;
      if (at === start) return mid;
      if (at < start) lo = mid + 1;
      else hi = mid - 1;
    }
    return undefined;
  }

  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.records.length) {
      this.records = this.records.slice(this.head);
      this.head = 0;
    }
  }
}
