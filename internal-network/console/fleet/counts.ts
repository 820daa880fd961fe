import { CONSOLE } from '../../../shared/limits.ts';

/**
 * Which keys changed after a sequence number, without looking at the keys that did not: a log of
 * (key, sequence number) in order, one entry per change; compacted to the last change of each key
 * when it holds more than twice as many entries as there are keys (and CONSOLE.securityCountLogMin),
 * so it stays bounded by the keys, which its owner bounds (`keys()`: the devices it tracks, the
 * reasons there are). The counts below and the fleet's rows (entries.ts) each keep one: a live
 * stream asks it every second, and a scan of every key instead was, for 200 streams and 100,000
 * devices, 20 million checks a second.
 */
export class ChangeLog {
  private keys: string[] = [];
  private seqs: number[] = [];
  /** sequence number of the last change (0: none yet) */
  seq = 0;

  /** @param distinct how many different keys there are (what the log is compacted down to) */
  constructor(private readonly distinct: () => number) {}

  /** Records a change of `key`; its sequence number. */
  add(key: string): number {
    this.keys.push(key);
    this.seqs.push(++this.seq);
    if (this.keys.length > Math.max(CONSOLE.securityCountLogMin, 2 * this.distinct())) this.compact();
    return this.seq;
  }

  /** The keys changed after sequence number `seq`, each once. */
  changedSince(seq: number): string[] {
    const out = new Set<string>();
    for (let i = this.firstAfter(seq); i < this.keys.length; i++) out.add(this.keys[i] as string);
    return [...out];
  }

  /** The log's length (for tests: it stays bounded). */
  get length(): number {
    return this.keys.length;
  }

  /** Index of the first entry after `seq` (the log is in sequence order). */
  private firstAfter(seq: number): number {
    let lo = 0;
    let hi = this.seqs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.seqs[mid] as number) <= seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Keeps only the last change of each key, in order: what changedSince needs, whatever `seq`. */
  private compact(): void {
    const seen = new Set<string>();
    const keys: string[] = [];
    const seqs: number[] = [];
    for (let i = this.keys.length - 1; i >= 0; i--) {
      const key = this.keys[i] as string;
      if (seen.has(key)) continue;
      seen.add(key);
      keys.push(key);
      seqs.push(this.seqs[i] as number);
    }
    this.keys = keys.reverse();
    this.seqs = seqs.reverse();
  }
}

/** Whether count `a` goes before `b`: the larger first, equal ones by key (no two keys are equal). */
const before = (a: readonly [string, number], b: readonly [string, number]): boolean => a[1] > b[1] || (a[1] === b[1] && a[0] < b[0]);

/**
 * Counts per key (security events per device, per reason) that can tell which keys changed after a
 * sequence number, so a live stream is sent only those (web/live.ts), not every count again: with
 * 100,000 devices, every count at every update of every browser was megabytes a second. The keys
 * counted are bounded by the caller (the devices it tracks, the reasons there are), and so is the
 * change log (ChangeLog).
 */
export class ChangeCounts {
  // A Map: a key such as `constructor` or `__proto__` is a device id like any other.
  private readonly counts = new Map<string, number>();
  private readonly log = new ChangeLog(() => this.counts.size);

  /** sequence number of the last change (0: none yet) */
  get seq(): number {
    return this.log.seq;
  }

  add(key: string, n: number): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + n);
    this.log.add(key);
  }

  get(key: string): number | undefined {
    return this.counts.get(key);
  }

  get size(): number {
    return this.counts.size;
  }

  /** Every count (own properties only, whatever the keys are called). */
  all(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }

  /**
   * The `n` largest counts, largest first (equal ones by key), in one pass over them with the `n`
   * kept in order: a live stream's snapshot names the devices with most security events, not the
   * whole fleet's counts (docs/console.md), and sorting 100,000 at every stream opened is not needed.
   */
  top(n: number): Array<[string, number]> {
    const kept: Array<[string, number]> = [];
    if (n <= 0) return kept;
    for (const entry of this.counts) {
      if (kept.length === n && !before(entry, kept[n - 1] as [string, number])) continue;
      let lo = 0;
      let hi = kept.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (before(kept[mid] as [string, number], entry)) lo = mid + 1;
        else hi = mid;
      }
      kept.splice(lo, 0, entry);
      if (kept.length > n) kept.pop();
    }
    return kept;
  }

  /**
   * Every count, largest first (equal ones by key): what a page lists of them a page at a time (GET
   * /api/security/devices). Worked out again only when one changed since, and at most once a
   * CONSOLE.securityDevicesRankEveryMs (`now`, epoch ms): under an attack a count changes with every
   * event, and a sort of 110,000 counts at every request was some 50 ms of the console's one thread
   * per request, one any logged-in viewer could repeat without end. A ranking that old at most is
   * what the page asked for anyway: the counts as they were then.
   */
  ranked(now = Date.now()): ReadonlyArray<readonly [string, number]> {
    if (this.rankedList === undefined || (this.rankedAt !== this.seq && now - this.rankedTime >= CONSOLE.securityDevicesRankEveryMs)) {
      this.rankedList = [...this.counts].sort((a, b) => (before(a, b) ? -1 : 1));
      this.rankedAt = this.seq;
      this.rankedTime = now;
    }
    return this.rankedList;
  }

  /**
   * Up to `n` counts of the ranking (ranked) that come after `after` ([key, count]: the last one a
   * page listed) in its order: a keyset page. Counts that change between two pages move keys about
   * the ranking, so a page read from an offset repeated a key or skipped one; read after a key and
   * count, it holds none that the order puts before them, and every one it puts after them.
   * `more`: some come after those.
   */
  rankedAfter(after: readonly [string, number] | undefined, n: number, now = Date.now()): { page: Array<readonly [string, number]>; more: boolean } {
    const ranked = this.ranked(now);
    let lo = 0;
    if (after !== undefined) {
      let hi = ranked.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (before(after, ranked[mid] as readonly [string, number])) hi = mid;
        else lo = mid + 1;
      }
    }
    return { page: ranked.slice(lo, lo + n), more: lo + n < ranked.length };
  }

  private rankedList: Array<[string, number]> | undefined;
  /** the sequence number the ranking was worked out at */
  private rankedAt = 0;
  /** epoch ms it was worked out at */
  private rankedTime = 0;

  /** The counts (their totals) of the keys changed after sequence number `seq`. */
  changedSince(seq: number): Record<string, number> {
    return Object.fromEntries(this.log.changedSince(seq).map((key) => [key, this.counts.get(key) ?? 0]));
  }

  /** The log's length (for tests: it stays bounded). */
  get logLength(): number {
    return this.log.length;
  }
}
