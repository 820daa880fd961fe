import { describeFeature, fitFeatures, transform, type FeatureModel } from './features.ts';
import { DailyProfile, FieldState } from './field.ts';
import { IsolationForest } from './iforest.ts';
import type { AnomalyParams } from './params.ts';
import { hash32 } from './prng.ts';
import { decodeArray, encodeArray, finiteOrNull, type DeviceState } from './state.ts';
import type { Anomaly, AnomalyKind } from './types.ts';

/** What a device reports back to the scorer's counters. */
export interface DeviceCounters {
  fieldsRefused: number;
  /** fields forgotten: not sent for fieldForgetMs and windowSize readings (AnomalyParams) */
  fieldsForgotten: number;
  valuesIgnored: number;
  forestsTrained: number;
}

/** No forest's threshold is higher, so one whose own rows score high still flags its clearest outliers. */
const MAX_THRESHOLD = 0.99;
const KIND_OF_FEATURE = { drift: 'drift', pair: 'correlation' } as const satisfies Record<string, AnomalyKind>;

/**
 * Everything the scorer keeps about one device: its fields (in the order first seen, at most
 * maxFieldsPerDevice), the daily baselines of its first forestMaxFields fields, the training buffer
 * of its forest and the forest itself.
 *
 * The buffer takes at most one row per forestSampleIntervalMs (reading time), and only once the
 * daily baselines are a day old. A row of a reading that was anomalous (by any detector) is kept
 * out, and teaches the daily baselines nothing, so a drift does not teach the forest that drifting
 * is normal; once such rows outnumber the rows taken since by forestAdaptAfter (forestAdaptAfter of
 * them in a row, or more among a few taken) the device is taken to have a new normal and its rows
 * are taken again. The forest is trained once the buffer holds forestMinTrain rows and
 * again after every forestRetrainEvery new rows, with a seed from the scorer's seed, the device id
 * and the training's number: the same stream gives the same forests. Each forest gets its own
 * threshold from the scores of its training rows (train()).
 */
export class DeviceModel {
  readonly fields = new Map<string, FieldState>();
  /** fields in the order first seen; the first forestMaxFields are the forest's */
  readonly list: FieldState[] = [];
  /** when its last reading arrived, on the scorer's clock (never the reading's own time: scorer.ts) */
  lastArrival = -Infinity;
  private readings = 0;
  private buffer: Float32Array | null = null;
  private bufferFields = 0;
  private bufferHead = 0;
  private bufferCount = 0;
  private lastSampleTime = -Infinity;
  /**
   * The reading time that began the present run of readings dated before lastSampleTime (the
   * device's clock stepped back), NaN when the last reading was not: see score(). Not saved: after
   * a restart such a run starts again (a row an interval later at most).
   */
  private backSince = NaN;
  /** the reading time of the row before the last (-Infinity: none); not saved, as backSince */
  private prevSampleTime = -Infinity;
  /** whether a reading dated at or after the last row came since it (a step back is no stray's end then) */
  private onSinceRow = false;
  private rowsSinceTrain = 0;
  private keptOut = 0;
  private trainings = 0;
  private forest: IsolationForest | null = null;
  /** restored with a forest (fromState): grown again from the buffer at the next row */
  private regrow = false;
  private threshold = 1;
  private model: FeatureModel | null = null;
  private raw = new Float64Array(0);
  private x = new Float64Array(0);
  private readonly seed: number;

  constructor(
    readonly id: string,
    private readonly p: AnomalyParams,
  ) {
    this.seed = hash32(id, p.seed);
  }

  /** What is kept of the device across a restart (state.ts): all it learnt, but its forest. */
  toState(): DeviceState {
    return {
      id: this.id,
      readings: this.readings,
      lastSampleTime: finiteOrNull(this.lastSampleTime),
      rowsSinceTrain: this.rowsSinceTrain,
      keptOut: this.keptOut,
      trainings: this.trainings,
      forest: this.forest !== null || this.regrow,
      buffer: this.buffer === null ? null : { fields: this.bufferFields, head: this.bufferHead, count: this.bufferCount, rows: encodeArray(this.buffer) },
      fields: this.list.map((f) => f.toState()),
    };
  }

  /**
   * A device as saved, checked beforehand (deviceStateProblem). A device that had a forest grows it
   * again from the buffer at its next row, as a retraining (the forest is not saved: it is most of
   * a device's memory, and the buffer it was grown from is kept): until then its readings are
   * scored by the spike and stuck detectors only, for at most forestSampleIntervalMs of its time.
   * At that row whether or not the row enters the buffer: one kept out (the device anomalous at the
   * restart, a sensor stuck) or incomplete left it without a forest for up to forestAdaptAfter rows
   * (12 hours), where the forest before the restart went on scoring.
   */
  static fromState(s: DeviceState, p: AnomalyParams): DeviceModel {
    const d = new DeviceModel(s.id, p);
    for (const fs of s.fields) {
      const f = FieldState.fromState(fs, p);
      d.fields.set(f.name, f);
      d.list.push(f);
    }
    d.readings = s.readings;
    d.lastSampleTime = s.lastSampleTime ?? -Infinity;
    d.rowsSinceTrain = s.rowsSinceTrain;
    d.regrow = s.forest;
    // At most forestAdaptAfter, as live: it goes down by one a row taken, and a larger count (saved
    // under a larger forestAdaptAfter, which may change across a restart) let anomalous rows into
    // the buffer until as many rows had been taken.
    d.keptOut = Math.min(s.keptOut, p.forestAdaptAfter);
    d.trainings = s.trainings;
    if (s.buffer !== null) {
      d.buffer = decodeArray(Float32Array, s.buffer.rows) as Float32Array;
      d.bufferFields = s.buffer.fields;
      d.bufferHead = s.buffer.head;
      d.bufferCount = s.buffer.count;
    }
    return d;
  }

  /** Scores one reading, appending what it finds to `out`. */
  score(time: number, values: Record<string, number>, out: Anomaly[], counters: DeviceCounters): void {
    const p = this.p;
    const reading = ++this.readings;
    let anomalous = false;
    for (const name in values) {
      const x = values[name];
      if (typeof x !== 'number' || !Number.isFinite(x)) {
        counters.valuesIgnored++;
        continue;
      }
      let f = this.fields.get(name);
      if (f === undefined) {
        if (this.list.length >= p.maxFieldsPerDevice) {
          counters.fieldsRefused++;
          continue;
        }
        f = new FieldState(name, p.windowSize);
        this.fields.set(name, f);
        this.list.push(f);
      }
      f.observe(x, p);
      f.lastReading = reading;
      f.lastTime = time;
      if (f.z > p.madThreshold) {
        out.push({ device: this.id, field: name, detector: 'mad', score: f.z, value: x, time, kind: 'spike' });
        anomalous = true;
      }
      // Reported once a run; every reading of it stays anomalous for the forest's rows, so a stuck
      // field does not teach the forest and its baselines that it is normal (forestAdaptAfter aside).
      if (f.stuckStart) out.push({ device: this.id, field: name, detector: 'stuck', score: f.run, value: x, time, kind: 'stuck' });
      if (f.stuck) anomalous = true;
    }

    if (this.forest !== null && this.model !== null) {
      const model = this.model;
      this.rawRow(model.fields, reading, time, this.raw);
      transform(model, this.raw, this.x);
      const s = this.forest.scoreIfAtLeast(this.x, this.threshold);
      if (s > 0) {
        out.push(this.forestAnomaly(model, s, time));
        anomalous = true;
      }
    }

    // A row every forestSampleIntervalMs of the device's time. A reading dated before the last row
    // (the device's clock stepped back) takes one only when no reading since that row was dated
    // after it and it lies an interval past the row before (the last row's date was a stray ahead
    // of the device's clock: it is passed over), or once the readings have stayed back for an
    // interval of their own time (the clock set again, followed from then). A row at every step
    // back (as it was) gave a device whose readings' times jump back and forth, a reading in two,
    // a row at every reading and a training every forestRetrainEvery readings instead of every
    // forestRetrainEvery rows (tested: ten times the trainings of the same readings in order).
    let take: boolean;
    if (time >= this.lastSampleTime) {
      this.backSince = NaN;
      take = time - this.lastSampleTime >= p.forestSampleIntervalMs;
      if (!take) this.onSinceRow = true;
    } else if (!this.onSinceRow && time - this.prevSampleTime >= p.forestSampleIntervalMs) take = true;
    else {
      if (Number.isNaN(this.backSince)) this.backSince = time;
      take = time - this.backSince >= p.forestSampleIntervalMs;
    }
    if (take) {
      this.backSince = NaN;
      this.onSinceRow = false;
      this.prevSampleTime = this.lastSampleTime;
      this.lastSampleTime = time;
      // Looked at here, once per row at most: not a walk over every field on every reading.
      this.forgetIdleFields(reading, time, counters);
      this.sample(reading, time, anomalous, counters);
      if (this.regrow && this.bufferCount >= p.forestMinTrain && this.train()) counters.forestsTrained++;
      this.regrow = false;
    }
  }

  /** Forgets the fields the device stopped sending (AnomalyParams.fieldForgetMs). The forest's
   * columns are the first forestMaxFields fields in order: if one of them goes, the order shifts,
   * and the buffer, the features and the forest start again from the fields sent now. */
  private forgetIdleFields(reading: number, time: number, counters: DeviceCounters): void {
    const p = this.p;
    let restartForest = false;
    for (let k = this.list.length - 1; k >= 0; k--) {
      const f = this.list[k] as FieldState;
      if (!(time - f.lastTime >= p.fieldForgetMs && reading - f.lastReading >= p.windowSize)) continue;
      this.list.splice(k, 1);
      this.fields.delete(f.name);
      counters.fieldsForgotten++;
      if (k < p.forestMaxFields) restartForest = true;
    }
    if (!restartForest) return;
    this.buffer = null;
    this.bufferFields = 0;
    this.bufferHead = 0;
    this.bufferCount = 0;
    this.rowsSinceTrain = 0;
    this.keptOut = 0;
    this.forest = null;
    this.model = null;
    this.threshold = 1;
  }

  /** Levels (x - ref; NaN when absent from this reading) and drifts (NaN while there is no
   * baseline for this time of day) of the first `fields` fields. */
  private rawRow(fields: number, reading: number, time: number, into: Float64Array): void {
    for (let k = 0; k < fields; k++) {
      const f = this.list[k] as FieldState;
      into[k] = f.lastReading === reading ? f.last - f.ref : NaN;
      into[fields + k] = f.profile === null ? NaN : f.window.median() - f.ref - f.profile.at(time);
    }
  }

  private forestAnomaly(model: FeatureModel, s: number, time: number): Anomaly {
    // The feature furthest from its centre says what kind of anomaly this looks like.
    let best = 0;
    for (let c = 1; c < model.dims; c++) if (Math.abs(this.x[c] as number) > Math.abs(this.x[best] as number)) best = c;
    const { kind, fields } = describeFeature(model, best);
    return { device: this.id, field: '*', detector: 'iforest', score: s, time, kind: KIND_OF_FEATURE[kind], fields: fields.map((k) => (this.list[k] as FieldState).name) };
  }

  private sample(reading: number, time: number, anomalous: boolean, counters: DeviceCounters): void {
    const p = this.p;
    const fields = Math.min(this.list.length, p.forestMaxFields);
    if (fields === 0) return;
    const row = new Float64Array(2 * fields);
    this.rawRow(fields, reading, time, row);
    // keptOut: the rows kept out, less the rows taken since (never below 0). Reset by any row taken,
    // it was a run: a lasting change (a relation inverted for good) is flagged on most readings, not
    // all, and the one row in thirty let pass started the run again, so the device never took its
    // new normal, nor trained again (only taken rows count towards forestRetrainEvery), and was
    // flagged at nearly every reading for six days (tested). Counted net, a change flagged on most
    // rows is taken after about forestAdaptAfter of them; one flagged on fewer than half never
    // is, and its rows taken meanwhile teach the forest anyway.
    if (anomalous) {
      if (this.keptOut < p.forestAdaptAfter) {
        this.keptOut++;
        return;
      }
    } else if (this.keptOut > 0) this.keptOut--;
    // The daily baselines learn after the row is taken (it holds what scoring saw), and only from
    // what is not kept out.
    let complete = true;
    for (let k = 0; k < fields; k++) {
      const f = this.list[k] as FieldState;
      const m = f.window.median();
      if (Number.isNaN(row[fields + k] as number)) complete = false;
      if (Number.isNaN(m)) continue;
      f.profile ??= new DailyProfile(p.driftBins, p.driftHorizon);
      f.profile.update(time, m - f.ref);
    }
    // A row enters the buffer once every field has a baseline for its time of day (from the
    // second day on): a forest trained on rows without drifts would take the first drifts for anomalies.
    if (!complete) return;
    // Made (or widened) at the first row that enters it, not at the device's first reading: a
    // device's first day (and a fleet's, all at once) holds no buffer it cannot fill yet.
    if (fields !== this.bufferFields) this.widenBuffer(fields);
    const buf = this.buffer as Float32Array;
    buf.set(row, this.bufferHead * 2 * fields);
    this.bufferHead = (this.bufferHead + 1) % p.forestBufferSize;
    if (this.bufferCount < p.forestBufferSize) this.bufferCount++;
    this.rowsSinceTrain++;
    if (this.bufferCount >= p.forestMinTrain && (this.trainings === 0 || this.rowsSinceTrain >= p.forestRetrainEvery)) {
      if (this.train()) counters.forestsTrained++;
    }
  }

  /** A new field joined the forest's: the rows so far get NaN (missing) in its columns. */
  private widenBuffer(fields: number): void {
    const p = this.p;
    const next = new Float32Array(p.forestBufferSize * 2 * fields).fill(NaN);
    const old = this.buffer;
    const was = this.bufferFields;
    if (old !== null) {
      for (let r = 0; r < p.forestBufferSize; r++) {
        for (let k = 0; k < was; k++) {
          next[r * 2 * fields + k] = old[r * 2 * was + k] as number;
          next[r * 2 * fields + fields + k] = old[r * 2 * was + was + k] as number;
        }
      }
    }
    this.buffer = next;
    this.bufferFields = fields;
  }

  /** Fits the features and grows the forest on the buffer; false if nothing was steady enough to learn. */
  private train(): boolean {
    const p = this.p;
    this.trainings++;
    this.regrow = false;
    const fields = this.bufferFields;
    const rows = this.bufferCount;
    const width = 2 * fields;
    const buf = this.buffer as Float32Array;
    // Oldest row first (the pair features compare the older and the newer half).
    const raw = new Float32Array(rows * width);
    if (rows < p.forestBufferSize) raw.set(buf.subarray(0, rows * width));
    else {
      raw.set(buf.subarray(this.bufferHead * width));
      raw.set(buf.subarray(0, this.bufferHead * width), (rows - this.bufferHead) * width);
    }
    const model = fitFeatures(raw, rows, fields, { drifts: rows >= p.forestDriftMinRows, clip: p.featureClip, maxPairs: p.forestMaxPairs, minCorrelation: p.forestPairMinCorrelation, maxShift: p.forestMaxShift });
    this.rowsSinceTrain = 0;
    if (model.dims === 0) {
      // Nothing steady to learn from: no forest until a later training finds something.
      this.forest = null;
      this.model = null;
      return false;
    }
    const matrix = new Float32Array(rows * model.dims);
    const row = new Float64Array(2 * fields);
    const x = new Float64Array(model.dims);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < 2 * fields; c++) row[c] = raw[r * 2 * fields + c] as number;
      transform(model, row, x);
      matrix.set(x, r * model.dims);
    }
    this.forest = IsolationForest.train(matrix, rows, model.dims, {
      trees: p.forestTrees,
      sampleSize: p.forestSampleSize,
      seed: (this.seed ^ Math.imul(this.trainings, 0x9e3779b9)) >>> 0,
      rangeAware: p.forestRangeAware,
    });
    this.model = model;
    // This forest's threshold: its scores shift with its number of features and the shape of the
    // data, so one threshold for every device would be too strict for some and too lax for others.
    // A reading must be isolated forestMarginDepth levels sooner than all but the most isolated
    // (1 - forestCalibrationQuantile) of the forest's own training rows: s_q x 2^(margin / c(psi)).
    const scores = new Float64Array(rows);
    for (let r = 0; r < rows; r++) scores[r] = this.forest.score(matrix.subarray(r * model.dims, (r + 1) * model.dims));
    scores.sort();
    const sq = scores[Math.min(rows - 1, Math.floor(p.forestCalibrationQuantile * rows))] as number;
    this.threshold = Math.min(MAX_THRESHOLD, Math.max(p.forestMinThreshold, sq * 2 ** (p.forestMarginDepth / this.forest.cPsi)));
    this.raw = new Float64Array(2 * fields);
    this.x = new Float64Array(model.dims);
    return true;
  }

  /** bytes in typed arrays (windows, buffer, forest) */
  get bytes(): number {
    let b = (this.buffer?.byteLength ?? 0) + (this.forest?.bytes ?? 0);
    for (const f of this.list) b += f.window.capacity * 16 + (f.profile?.bytes ?? 0);
    return b;
  }

  /** whether the forest is trained (for tests and the console's status) */
  get forestReady(): boolean {
    return this.forest !== null;
  }
}
