import { Mulberry32 } from './prng.ts';

/**
 * Isolation Forest (Liu, Ting and Zhou, "Isolation Forest", ICDM 2008).
 *
 * Each tree is grown on a random subsample of psi rows: a node picks a feature at random and a
 * split value uniformly between that feature's minimum and maximum in the node, until a node holds
 * one row, all its rows are equal, or the height limit ceil(log2 psi) is reached. An anomaly, few
 * and different, is isolated close to the root. The path length of x in a tree is the depth of its
 * leaf plus c(size of the leaf), the average depth the unbuilt subtree would have added; the score
 * is s(x) = 2^(-E[h(x)] / c(psi)): near 1 anomalous, well below 0.5 normal.
 *
 * Splits look at one feature's range at a time, so the forest is blind to each feature's scale:
 * normalising the features (features.ts) is for clipping and storage, not for the trees.
 *
 * One addition, off unless asked for (`rangeAware`): a point beyond the whole subsample on a
 * feature follows the outermost branch at every split on that feature and ends in the leaf of
 * the most extreme training rows, so however far out it lies it scores no higher than they do (the
 * scores of clear anomalies and of the edges of normal data bunch up around 0.65 to 0.7). With
 * rangeAware, each tree also keeps its subsample's range [lo, hi] of every feature, and at each
 * split on a feature q where x lies outside that range by a gap g, x is taken to be isolated there
 * with probability g / (g + hi - lo): the chance that a split drawn over the range the data and x
 * span together would fall between x and the data, as the paper's tree would have drawn it had x
 * been in the subsample (a lower bound: the node's own range is at most the tree's). The path
 * length is the expectation over those chances. A point inside the range scores exactly as in the
 * paper.
 *
 * Storage: the nodes of every tree in pre-order (a node's left child follows it), each a Uint8
 * feature index (LEAF for a leaf), a Float32 value (the split, or a leaf's size) and a Uint16
 * index of its right child within the tree: 7 bytes a node, no objects. A tree has at most
 * 2 psi - 1 nodes (511); grown on the data set it has about a quarter of that, and the arrays are
 * cut to what the trees use.
 */
const LEAF = 255;
/** features. A Uint8 holds the feature index; 255 marks a leaf. */
export const MAX_FEATURES = 255;

const EULER_GAMMA = 0.5772156649015329;

/**
 * c(n): the average path length of an unsuccessful search in a binary search tree of n keys,
 * 2 H(n-1) - 2 (n-1) / n, with c(0) = c(1) = 0 and c(2) = 1. H is summed exactly up to 1024 and
 * approximated by ln(i) + gamma + 1/(2i) - 1/(12i^2) beyond (error below 1e-12 there).
 */
export function averagePathLength(n: number): number {
  if (n <= 1024) return C_TABLE[n <= 0 ? 0 : n] as number;
  return cFromHarmonic(n);
}

function cFromHarmonic(n: number): number {
  if (n <= 1) return 0;
  if (n === 2) return 1;
  return 2 * harmonic(n - 1) - (2 * (n - 1)) / n;
}

const HARMONIC_TABLE = (() => {
  const t = new Float64Array(1025);
  for (let i = 1; i <= 1024; i++) t[i] = (t[i - 1] as number) + 1 / i;
  return t;
})();

/** c(n) for n up to 1024: a leaf's size is looked up, not computed, on every tree of every score. */
const C_TABLE = (() => {
  const t = new Float64Array(1025);
  for (let n = 0; n <= 1024; n++) t[n] = cFromHarmonic(n);
  return t;
})();

function harmonic(i: number): number {
  if (i <= 1024) return HARMONIC_TABLE[i] as number;
  return Math.log(i) + EULER_GAMMA + 1 / (2 * i) - 1 / (12 * i * i);
}

export interface IsolationForestOptions {
  /** trees */
  trees: number;
  /** rows per tree (psi); fewer if the data has fewer rows */
  sampleSize: number;
  /** uint32 */
  seed: number;
  /** score points beyond a tree's subsample as isolated in proportion to how far out they are (above) */
  rangeAware?: boolean;
}

export class IsolationForest {
  /** rows each tree was grown on (psi, or all rows when there were fewer) */
  readonly sampleSize: number;
  /** ceil(log2 psi) */
  readonly heightLimit: number;
  /** c(psi): the normaliser of the score */
  readonly cPsi: number;
  readonly rangeAware: boolean;
  private feature: Uint8Array;
  private value: Float32Array;
  private right: Uint16Array;
  /** index of each tree's root in the node arrays */
  private readonly start: Uint32Array;
  /** per tree, the subsample's minimum and maximum of every feature (rangeAware only) */
  private readonly lo: Float32Array;
  private readonly hi: Float32Array;
  private used = 0;

  private constructor(readonly trees: number, readonly dims: number, sampleSize: number, rangeAware: boolean) {
    this.sampleSize = sampleSize;
    this.heightLimit = Math.max(1, Math.ceil(Math.log2(sampleSize)));
    this.cPsi = averagePathLength(sampleSize);
    this.rangeAware = rangeAware;
    const most = trees * (2 * sampleSize - 1);
    this.feature = new Uint8Array(most);
    this.value = new Float32Array(most);
    this.right = new Uint16Array(most);
    this.start = new Uint32Array(trees);
    this.lo = new Float32Array(rangeAware ? trees * dims : 0);
    this.hi = new Float32Array(rangeAware ? trees * dims : 0);
  }

  /**
   * Grows a forest on `rows` rows of `dims` features, stored row after row in `data`. The same
   * data, options and seed give the same forest.
   */
  static train(data: Float32Array | Float64Array, rows: number, dims: number, opts: IsolationForestOptions): IsolationForest {
    if (rows < 2) throw new RangeError('an isolation forest needs at least 2 rows');
    if (dims < 1 || dims > MAX_FEATURES) throw new RangeError(`dims must be in 1..${MAX_FEATURES}`);
    if (data.length < rows * dims) throw new RangeError('data holds fewer than rows x dims values');
    if (opts.sampleSize > 32_768) throw new RangeError('sampleSize must be at most 32768 (node indices are 16 bits)');
    const psi = Math.min(opts.sampleSize, rows);
    const forest = new IsolationForest(opts.trees, dims, psi, opts.rangeAware ?? false);
    const rng = new Mulberry32(opts.seed);
    const perm = new Int32Array(rows);
    for (let i = 0; i < rows; i++) perm[i] = i;
    const idx = new Int32Array(psi);
    const order = new Int32Array(dims);
    for (let t = 0; t < opts.trees; t++) {
      // A partial Fisher-Yates shuffle: psi distinct rows, uniformly.
      for (let i = 0; i < psi; i++) {
        const j = i + rng.int(rows - i);
        const tmp = perm[i] as number;
        perm[i] = perm[j] as number;
        perm[j] = tmp;
        idx[i] = perm[i] as number;
      }
      if (forest.rangeAware) {
        for (let d = 0; d < dims; d++) {
          let a = Infinity;
          let b = -Infinity;
          for (let i = 0; i < psi; i++) {
            const v = data[(idx[i] as number) * dims + d] as number;
            if (v < a) a = v;
            if (v > b) b = v;
          }
          forest.lo[t * dims + d] = a;
          forest.hi[t * dims + d] = b;
        }
      }
      forest.start[t] = forest.used;
      forest.grow(forest.used, idx, 0, psi, 0, data, rng, order);
    }
    // Keep only what the trees use.
    forest.feature = forest.feature.slice(0, forest.used);
    forest.value = forest.value.slice(0, forest.used);
    forest.right = forest.right.slice(0, forest.used);
    return forest;
  }

  /** Grows the subtree of idx[from..to) at depth `depth`; its root is node `root` of the tree at `treeStart`. */
  private grow(
    treeStart: number,
    idx: Int32Array,
    from: number,
    to: number,
    depth: number,
    data: Float32Array | Float64Array,
    rng: Mulberry32,
    order: Int32Array,
  ): void {
    const node = this.used++;
    const size = to - from;
    const dims = this.dims;
    // A feature at random among those that vary in the node (the paper's choice), found by trying
    // the features in a random order and scanning only the one tried: a node costs one scan of one
    // feature, mostly, not of all of them. Rows all equal, or the height limit, make a leaf.
    let q = -1;
    let a = 0;
    let b = 0;
    if (depth < this.heightLimit && size > 1) {
      for (let d = 0; d < dims; d++) order[d] = d;
      for (let k = 0; k < dims && q < 0; k++) {
        const pick = k + rng.int(dims - k);
        const d = order[pick] as number;
        order[pick] = order[k] as number;
        order[k] = d;
        let lo = Infinity;
        let hi = -Infinity;
        for (let r = from; r < to; r++) {
          const v = data[(idx[r] as number) * dims + d] as number;
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
        if (hi > lo) {
          q = d;
          a = lo;
          b = hi;
        }
      }
    }
    if (q < 0) {
      this.feature[node] = LEAF;
      this.value[node] = size;
      return;
    }
    let p = Math.fround(a + (b - a) * rng.next());
    // Float32 rounding may carry the split onto the minimum; nudge it so that the minimum always
    // goes left and the maximum right (x < p left, as in the paper).
    if (p <= a) p = Math.fround(a + (b - a) / 2);
    if (p <= a || p > b) p = Math.fround(b);
    // Partition idx[from..to) on x[q] < p.
    let i = from;
    let j = to - 1;
    while (i <= j) {
      if ((data[(idx[i] as number) * dims + q] as number) < p) i++;
      else {
        const tmp = idx[i] as number;
        idx[i] = idx[j] as number;
        idx[j] = tmp;
        j--;
      }
    }
    this.feature[node] = q;
    this.value[node] = p;
    this.grow(treeStart, idx, from, i, depth + 1, data, rng, order);
    this.right[node] = this.used - treeStart;
    this.grow(treeStart, idx, i, to, depth + 1, data, rng, order);
  }

  /** E[h(x)]: the path length of x averaged over the trees (x holds `dims` features). */
  pathLength(x: ArrayLike<number>): number {
    return this.totalPath(x, Infinity) / this.trees;
  }

  /**
   * The sum over the trees of x's path length, given up (returning a partial sum above `stopAbove`)
   * as soon as the trees walked so far add up to more than `stopAbove`: path lengths are never
   * negative, so x is then known to be no anomaly and the remaining trees need not be walked.
   */
  private totalPath(x: ArrayLike<number>, stopAbove: number): number {
    const f = this.feature;
    const v = this.value;
    const right = this.right;
    const dims = this.dims;
    let total = 0;
    for (let t = 0; t < this.trees && total <= stopAbove; t++) {
      const base = this.start[t] as number;
      let node = base;
      let depth = 0;
      let q = f[node] as number;
      // Inside the tree's subsample range on every feature (most points), range-aware scoring is
      // the paper's: skip the per-node checks.
      let outside = false;
      if (this.rangeAware) {
        const r = t * dims;
        for (let d = 0; d < dims; d++) {
          const xd = x[d] as number;
          if (xd < (this.lo[r + d] as number) || xd > (this.hi[r + d] as number)) {
            outside = true;
            break;
          }
        }
      }
      if (!outside) {
        while (q !== LEAF) {
          node = (x[q] as number) < (v[node] as number) ? node + 1 : base + (right[node] as number);
          q = f[node] as number;
          depth++;
        }
        total += depth + averagePathLength(v[node] as number);
        continue;
      }
      // reach: the chance x got this far unisolated; isolated: its expected depth if isolated earlier.
      let reach = 1;
      let isolated = 0;
      const r = t * dims;
      while (q !== LEAF) {
        const xq = x[q] as number;
        const lo = this.lo[r + q] as number;
        const hi = this.hi[r + q] as number;
        const gap = xq > hi ? xq - hi : xq < lo ? lo - xq : 0;
        if (gap > 0) {
          const pi = gap / (gap + hi - lo);
          isolated += reach * pi * (depth + 1);
          reach *= 1 - pi;
        }
        node = xq < (v[node] as number) ? node + 1 : base + (right[node] as number);
        q = f[node] as number;
        depth++;
      }
      total += isolated + reach * (depth + averagePathLength(v[node] as number));
    }
    return total;
  }

  /**
   * s(x) if it is at least `threshold`, otherwise 0, often without walking every tree: the
   * scorer needs the score of anomalies only, and most readings are none.
   */
  scoreIfAtLeast(x: ArrayLike<number>, threshold: number): number {
    // s >= threshold  <=>  mean path <= -c(psi) log2(threshold)
    const limit = -this.cPsi * Math.log2(threshold) * this.trees;
    const total = this.totalPath(x, limit);
    return total <= limit ? 2 ** (-total / this.trees / this.cPsi) : 0;
  }

  /** s(x) = 2^(-E[h(x)] / c(psi)), in (0, 1]. */
  score(x: ArrayLike<number>): number {
    return 2 ** (-this.pathLength(x) / this.cPsi);
  }

  /** bytes held by the trees */
  get bytes(): number {
    return this.feature.byteLength + this.value.byteLength + this.right.byteLength + this.start.byteLength + this.lo.byteLength + this.hi.byteLength;
  }

  /** nodes (internal nodes and leaves) over all trees */
  get nodes(): number {
    return this.used;
  }
}
