import { MAD_SCALE, MEAN_AD_SCALE, robustStats } from './rolling.ts';

/**
 * What the Isolation Forest of one device sees, and why (docs/anomaly-detection.md).
 *
 * A row (of the training buffer, or the reading being scored) holds two raw values per forest field f:
 *   - level_f = x_f - ref_f (ref_f: the field's first value, so that Float32 rows keep their precision);
 *   - drift_f = the field's rolling median (over the spike window) minus what that median usually
 *     is at this time of day (field.ts DailyProfile). The median averages the noise away (its
 *     spread is about a sixth of the noise's over 64 independent values) and the daily profile
 *     takes the daily cycle out, so a slow drift that no single value betrays stands out against
 *     drift_f's usual range.
 * Each raw column is centred and scaled robustly (median, 1.4826 MAD) over the training rows and
 * clipped to +-featureClip; a missing value is the centre.
 *
 * The forest's features are then:
 *   - for each pair of fields whose levels are correlated (|r| >= forestPairMinCorrelation over the
 *     training rows, and over their older and their newer half alike: two fields that wander slowly
 *     are often correlated over a day by chance, a physical relation holds throughout), the residual
 *     u_i - sign(r) u_j of the standardised levels: the distance from the line the pair normally lies
 *     on. Trees split one feature at a time, so a point off a diagonal is hard for them to isolate;
 *     the residual turns the diagonal into an axis. At most forestMaxPairs, strongest first.
 *   - drift_f, for each field in no pair: a paired field's drift shows in its residual, and a field
 *     tied to another mostly wanders with it (a warm day is no drift). Drift features wait until
 *     the buffer holds forestDriftMinRows rows: one day cannot tell a field that wanders from day
 *     to day from a steady one.
 * Levels themselves are no features: a field that wanders over days leaves any one day's range, and
 * a forest fed its level takes every such move for an anomaly; a level far from the usual is the
 * spike detector's. A feature whose median differs by more than forestMaxShift of its scales
 * between quarters of the buffer is left out of that forest: it wanders by itself (weather,
 * seasons), and the forest would take its next move for an anomaly.
 *
 * Feature layout: drifts first (model.drifts), then pair residuals (model.pairs).
 */
export interface PairFeature {
  /** fields (level columns) */
  i: number;
  j: number;
  sign: 1 | -1;
  meanI: number;
  sdI: number;
  meanJ: number;
  sdJ: number;
  /** robust centre and scale of the residual */
  center: number;
  scale: number;
}

export interface FeatureModel {
  /** forest fields F; raw width 2F */
  fields: number;
  /** centre and scale of the raw columns */
  center: Float64Array;
  scale: Float64Array;
  /** the fields whose drift is a feature */
  drifts: number[];
  pairs: PairFeature[];
  /** drifts + pairs */
  dims: number;
  clip: number;
  /** scratch: the normalised raw columns of the row being transformed */
  z: Float64Array;
}

export type FeatureKind = 'drift' | 'pair';

export interface FeatureOptions {
  /** whether single-field drift features may be used (the buffer spans enough days to tell) */
  drifts: boolean;
  clip: number;
  maxPairs: number;
  minCorrelation: number;
  maxShift: number;
}

/** Fits the normalisation and picks the features on `rows` raw rows of width 2F, oldest first (NaN = missing). */
export function fitFeatures(raw: Float32Array, rows: number, fields: number, opts: FeatureOptions): FeatureModel {
  const width = 2 * fields;
  const column = new Float64Array(rows);
  const center = new Float64Array(width);
  const scale = new Float64Array(width);
  for (let c = 0; c < width; c++) {
    for (let r = 0; r < rows; r++) column[r] = raw[r * width + c] as number;
    const st = robustStats(column, rows);
    center[c] = Number.isFinite(st.median) ? st.median : 0;
    scale[c] = robustScale(st.mad, st.meanAbsDev, st.median);
  }
  const model: FeatureModel = { fields, center, scale, drifts: [], pairs: [], dims: 0, clip: opts.clip, z: new Float64Array(width) };
  // Every row normalised once: z[r * width + c].
  const z = new Float64Array(rows * width);
  const row = new Float64Array(width);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < width; c++) row[c] = raw[r * width + c] as number;
    normaliseRaw(model, row, model.z);
    z.set(model.z, r * width);
  }
  const paired = new Set<number>();
  if (opts.maxPairs > 0) {
    for (const p of correlatedPairs(z, rows, fields, opts.minCorrelation)) {
      if (model.pairs.length >= opts.maxPairs) break;
      for (let r = 0; r < rows; r++) column[r] = pairResidual(p, z, r * width);
      const st = robustStats(column, rows);
      p.center = st.median;
      p.scale = robustScale(st.mad, st.meanAbsDev, st.median);
      if (!steady(column, rows, p.scale, opts.maxShift)) continue;
      model.pairs.push(p);
      paired.add(p.i).add(p.j);
    }
  }
  for (let f = 0; opts.drifts && f < fields; f++) {
    if (paired.has(f)) continue;
    for (let r = 0; r < rows; r++) column[r] = z[r * width + fields + f] as number;
    if (steady(column, rows, 1, opts.maxShift)) model.drifts.push(f);
  }
  model.dims = model.drifts.length + model.pairs.length;
  return model;
}

/** Raw values (width 2F, NaN = missing) to the feature vector `out` (length dims). */
export function transform(model: FeatureModel, raw: ArrayLike<number>, out: Float32Array | Float64Array): void {
  const F = model.fields;
  const z = model.z;
  normaliseRaw(model, raw, z);
  const clip = model.clip;
  const D = model.drifts.length;
  for (let k = 0; k < D; k++) out[k] = z[F + (model.drifts[k] as number)] as number;
  for (let k = 0; k < model.pairs.length; k++) {
    const p = model.pairs[k] as PairFeature;
    const v = (pairResidual(p, z, 0) - p.center) / p.scale;
    out[D + k] = v > clip ? clip : v < -clip ? -clip : v;
  }
}

/** Which feature a column is, and which forest fields (by index) it concerns. */
export function describeFeature(model: FeatureModel, c: number): { kind: FeatureKind; fields: number[] } {
  const D = model.drifts.length;
  if (c < D) return { kind: 'drift', fields: [model.drifts[c] as number] };
  const p = model.pairs[c - D] as PairFeature;
  return { kind: 'pair', fields: [p.i, p.j] };
}

/** Whether the medians of the quarters of `v` (in time order) lie within maxShift x scale of one another. */
function steady(v: Float64Array, rows: number, scale: number, maxShift: number): boolean {
  let lo = Infinity;
  let hi = -Infinity;
  for (let q = 0; q < SEGMENTS; q++) {
    const m = robustStats(v.subarray(Math.floor((q * rows) / SEGMENTS), Math.floor(((q + 1) * rows) / SEGMENTS))).median;
    if (m < lo) lo = m;
    if (m > hi) hi = m;
  }
  return hi - lo <= maxShift * scale;
}

/** A feature is steady when the medians of the buffer's quarters agree (four looks, so a slow
 * wander that returns by the end is still seen). */
const SEGMENTS = 4;

/** A scale that is never zero: 1.4826 MAD; if more than half the values are equal, 1.2533 x the
 * mean absolute deviation; if all are, a token scale (such a column never splits a tree anyway). */
function robustScale(mad: number, meanAbsDev: number, median: number): number {
  let s = MAD_SCALE * mad;
  if (!(s > 0)) s = MEAN_AD_SCALE * meanAbsDev;
  const floor = 1e-9 * Math.max(1, Math.abs(median) || 0);
  return s > floor ? s : floor;
}

function normaliseRaw(model: FeatureModel, raw: ArrayLike<number>, out: Float32Array | Float64Array): void {
  const width = 2 * model.fields;
  const clip = model.clip;
  for (let c = 0; c < width; c++) {
    const v = raw[c] as number;
    if (!Number.isFinite(v)) {
      out[c] = 0;
      continue;
    }
    const z = (v - (model.center[c] as number)) / (model.scale[c] as number);
    out[c] = z > clip ? clip : z < -clip ? -clip : z;
  }
}

/** The residual of pair p in the normalised row starting at z[off] (levels first). */
function pairResidual(p: PairFeature, z: ArrayLike<number>, off: number): number {
  return ((z[off + p.i] as number) - p.meanI) / p.sdI - (p.sign * ((z[off + p.j] as number) - p.meanJ)) / p.sdJ;
}

/** Pairs of fields whose levels are correlated throughout the rows (z: normalised rows of width 2F), strongest first. */
function correlatedPairs(z: Float64Array, rows: number, F: number, minCorrelation: number): PairFeature[] {
  const half = rows >> 1;
  const candidates: Array<PairFeature & { r: number }> = [];
  for (let i = 0; i < F; i++) {
    for (let j = i + 1; j < F; j++) {
      const all = correlation(z, 2 * F, i, j, 0, rows);
      const older = correlation(z, 2 * F, i, j, 0, half);
      const newer = correlation(z, 2 * F, i, j, half, rows);
      const weakest = Math.min(Math.abs(all.r), Math.abs(older.r), Math.abs(newer.r));
      if (!(weakest >= minCorrelation) || Math.sign(older.r) !== Math.sign(all.r) || Math.sign(newer.r) !== Math.sign(all.r)) continue;
      candidates.push({ i, j, sign: all.r >= 0 ? 1 : -1, meanI: all.meanI, sdI: all.sdI, meanJ: all.meanJ, sdJ: all.sdJ, center: 0, scale: 1, r: Math.abs(all.r) });
    }
  }
  // Ties in the order of the fields, so the choice is deterministic.
  candidates.sort((a, b) => b.r - a.r || a.i - b.i || a.j - b.j);
  return candidates.map(({ r: _r, ...p }) => p);
}

/** Pearson correlation of columns i and j of z (rows of width F) over rows [from, to). */
function correlation(z: Float64Array, F: number, i: number, j: number, from: number, to: number): { r: number; meanI: number; sdI: number; meanJ: number; sdJ: number } {
  const n = to - from;
  let si = 0;
  let sj = 0;
  for (let r = from; r < to; r++) {
    si += z[r * F + i] as number;
    sj += z[r * F + j] as number;
  }
  const meanI = si / n;
  const meanJ = sj / n;
  let vi = 0;
  let vj = 0;
  let cov = 0;
  for (let r = from; r < to; r++) {
    const a = (z[r * F + i] as number) - meanI;
    const b = (z[r * F + j] as number) - meanJ;
    vi += a * a;
    vj += b * b;
    cov += a * b;
  }
  const sdI = Math.sqrt(vi / n);
  const sdJ = Math.sqrt(vj / n);
  return { r: sdI > 0 && sdJ > 0 ? cov / n / (sdI * sdJ) : 0, meanI, sdI, meanJ, sdJ };
}
