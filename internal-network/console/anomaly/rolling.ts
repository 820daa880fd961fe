/** The consistency constant of the MAD: 1.4826 x MAD estimates the standard deviation of Gaussian data. */
export const MAD_SCALE = 1.4826;
/** sqrt(pi / 2): 1.2533 x the mean absolute deviation estimates the standard deviation of Gaussian data. */
export const MEAN_AD_SCALE = 1.2533;

/**
 * The last `capacity` values of one field, kept twice: in arrival order (a ring, to know which
 * value leaves) and sorted (so the median is one read and the MAD a walk over half the window).
 * A push costs two moves of at most `capacity` doubles; nothing is allocated after construction.
 */
export class RollingWindow {
  private readonly ring: Float64Array;
  private readonly sorted: Float64Array;
  private head = 0;
  private n = 0;

  constructor(readonly capacity: number) {
    this.ring = new Float64Array(capacity);
    this.sorted = new Float64Array(capacity);
  }

  get count(): number {
    return this.n;
  }

  /** Adds a finite value, dropping the oldest when full. */
  push(x: number): void {
    const s = this.sorted;
    if (this.n === this.capacity) {
      const old = this.ring[this.head] as number;
      const i = lowerBound(s, this.n, old);
      s.copyWithin(i, i + 1, this.n);
      this.n--;
    }
    const j = lowerBound(s, this.n, x);
    s.copyWithin(j + 1, j, this.n);
    s[j] = x;
    this.n++;
    this.ring[this.head] = x;
    this.head = this.head + 1 === this.capacity ? 0 : this.head + 1;
  }

  /** The values in arrival order, oldest first (a copy: what is saved of the window). */
  values(): Float64Array {
    const out = new Float64Array(this.n);
    const first = this.n === this.capacity ? this.head : 0;
    for (let i = 0; i < this.n; i++) out[i] = this.ring[(first + i) % this.capacity] as number;
    return out;
  }

  /** A window of `capacity` holding `values` (oldest first; at most the last `capacity` kept). */
  static of(capacity: number, values: ArrayLike<number>): RollingWindow {
    const w = new RollingWindow(capacity);
    for (let i = 0; i < values.length; i++) w.push(values[i] as number);
    return w;
  }

  /** The median (NaN when empty). */
  median(): number {
    return sortedMedian(this.sorted, this.n);
  }

  /** The median absolute deviation from `med` (unscaled); see sortedMad. */
  mad(med: number): number {
    return sortedMad(this.sorted, this.n, med);
  }

  /**
   * Whether the MAD from `med` is certainly at least d, decided in two binary searches instead of
   * the walk `mad` takes: the MAD is at least d when at most half the values lie strictly within d
   * of the median. false means "maybe not": compute it.
   */
  madAtLeast(med: number, d: number): boolean {
    const n = this.n;
    if (n === 0 || !(d > 0)) return false;
    const s = this.sorted;
    const within = lowerBound(s, n, med + d) - upperBound(s, n, med - d);
    // Deviations below d: `within`. The MAD is the (k+1)-th smallest deviation for odd n, the mean
    // of the k-th and (k+1)-th for even n (k = floor(n / 2)); both are >= d when fewer than k
    // (odd: k + 1) deviations are below d.
    return within <= (n & 1 ? n >> 1 : (n >> 1) - 1);
  }

  /** The mean absolute deviation from `med`: the fallback scale when more than half the window is one value. */
  meanAbsDev(med: number): number {
    const n = this.n;
    if (n === 0) return NaN;
    let sum = 0;
    for (let i = 0; i < n; i++) sum += Math.abs((this.sorted[i] as number) - med);
    return sum / n;
  }
}

/**
 * The median of s[0..n), sorted ascending (NaN when empty). The two middle values of an even count
 * are halved before they are added: their sum overflows for values past 9e307 (a field near
 * DBL_MAX, which the contract allows), and an Infinity median made every value's distance from it
 * Infinity, no value a spike. Halving is exact, so the result is the same as (a + b) / 2 otherwise.
 */
export function sortedMedian(s: Float64Array, n: number): number {
  if (n === 0) return NaN;
  const h = n >> 1;
  return n & 1 ? (s[h] as number) : (s[h - 1] as number) / 2 + (s[h] as number) / 2;
}

/**
 * The median absolute deviation from `med` of s[0..n), sorted ascending. The deviations left of
 * the median and those right of it are each sorted already, so their median is found by merging
 * the two from the middle outwards: n/2 steps, no sort, no allocation.
 */
export function sortedMad(s: Float64Array, n: number, med: number): number {
  if (n === 0) return NaN;
  let r = lowerBound(s, n, med); // first value >= med
  let l = r - 1;
  const k = n >> 1; // the (k+1)-th smallest deviation, and for even n also the k-th
  let prev = 0;
  let cur = 0;
  for (let step = 0; step <= k; step++) {
    const dl = l >= 0 ? med - (s[l] as number) : Infinity;
    const dr = r < n ? (s[r] as number) - med : Infinity;
    prev = cur;
    if (dl <= dr) {
      cur = dl;
      l--;
    } else {
      cur = dr;
      r++;
    }
  }
  return n & 1 ? cur : (prev + cur) / 2;
}

/** First index in s[0..n) whose value is > x (s sorted ascending). */
function upperBound(s: Float64Array, n: number, x: number): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((s[mid] as number) <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index in s[0..n) whose value is >= x (s sorted ascending). */
function lowerBound(s: Float64Array, n: number, x: number): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((s[mid] as number) < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Median, MAD and mean absolute deviation of the finite values among values[0..count) (for training). */
export function robustStats(values: ArrayLike<number>, count = values.length): { median: number; mad: number; meanAbsDev: number; n: number } {
  const s = new Float64Array(count);
  let n = 0;
  for (let i = 0; i < count; i++) {
    const v = values[i] as number;
    if (Number.isFinite(v)) s[n++] = v;
  }
  const sorted = s.subarray(0, n).sort();
  const median = sortedMedian(sorted, n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.abs((sorted[i] as number) - median);
  return { median, mad: sortedMad(sorted, n, median), meanAbsDev: n ? sum / n : NaN, n };
}
