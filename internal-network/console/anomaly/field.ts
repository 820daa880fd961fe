import type { AnomalyParams } from './params.ts';
import { MAD_SCALE, MEAN_AD_SCALE, RollingWindow } from './rolling.ts';
import { decodeArray, encodeArray, finiteOrNull, type DailyProfileState, type FieldStateData } from './state.ts';

/**
 * robust z. The highest spike score reported. A value the contract allows can lie anywhere up to
 * 1.8e308 (a firmware's DBL_MAX "no reading", a hostile device), and its distance over a field's
 * resolution is then Infinity, which line protocol cannot carry: InfluxDB refused the whole batch
 * of the console's points with it. Past 10^9 scales a score says nothing more; how far out the
 * value lies is in the anomaly's `value`.
 */
export const MAX_SPIKE_SCORE = 1e9;

/**
 * One field of one device: its robust baseline (spikes) and its run of repeated values (stuck).
 *
 * Spike: the value is compared with the window as it was before the value arrived (a value never
 * vouches for itself): z = |x - median| / scale, scale = 1.4826 MAD. When more than half the
 * window is one value the MAD is 0; the scale is then 1.2533 x the mean absolute deviation from
 * the median, and never less than the smallest step the field has ever made (its resolution: a
 * sensor that reports whole percent is not spiking when it moves by one percent). A field that has
 * never changed has no scale at all: its first change is not judged (a slow gauge's first step is
 * no spike), it gives the field its resolution.
 *
 * Stuck: a field is stuck when it repeats one value for longer than its own history makes
 * believable. p is the share of readings in which the field changed (an average over about
 * stuckRateHorizon readings, frozen when the run starts); a run of r repeats has probability
 * (1 - p)^r, and the field is stuck once that falls below stuckProbability, and the run is at
 * least stuckMinRun long. A lively float sensor (p = 1) is stuck after stuckMinRun repeats; one that
 * changes every other reading after 20; a battery gauge that changes once an hour never is, within
 * the hour. A run is reported once, at the reading it becomes stuck (`stuckStart`): reported on every
 * reading, a pump switched off for the night was thousands of flags.
 *
 * While stuck, the repeats are not scored for spikes (one value, reported once as stuck), and they
 * stay out of the window until the run is stuckLevelAfter readings longer than requiredRun, so that
 * a sensor stuck for a while keeps its baseline's real spread and its first real value afterwards
 * is not taken for a spike. A run that lasts longer than that is a new level (a pump switched off,
 * a setpoint changed): its repeats then enter the window and the median accepts them, as it
 * accepts any lasting step. Kept out for good, they froze the window with the step half in it: the
 * spike detector fired on every repeat all night, or not, by how many had entered before, and on
 * every value near the new level that was not an exact repeat.
 */
export class FieldState {
  readonly window: RollingWindow;
  /** the last spike score: the robust z when above madThreshold, 0 when at most that (not
   * computed: see spikeScore), NaN when not scored (the window warming up, a repeat of a stuck run) */
  z = NaN;
  /** whether the field is stuck after the last value */
  stuck = false;
  /** whether the last value made the run stuck: true once per run, when it is reported */
  stuckStart = false;
  /** readings of the current run of identical values (1 after a change) */
  run = 0;
  /** the first value seen: the origin of the training buffer's Float32 rows */
  ref = NaN;
  /** the forest's baseline of this field by time of day (drift feature; forest fields only) */
  profile: DailyProfile | null = null;
  /** the last value seen, and the reading (device-local counter) that carried it */
  last = NaN;
  lastReading = -1;
  /** the time of the last reading that carried it (its device's clock: see AnomalyParams.fieldForgetMs) */
  lastTime = -Infinity;
  private seen = 0;
  private rate = 0;
  private requiredRun = Infinity;
  private minStep = Infinity;

  constructor(
    readonly name: string,
    windowSize: number,
    window?: RollingWindow,
  ) {
    this.window = window ?? new RollingWindow(windowSize);
  }

  /** What is kept of it across a restart (state.ts); the last spike score is not: it is the last reading's. */
  toState(): FieldStateData {
    return {
      name: this.name,
      window: encodeArray(this.window.values()),
      ref: this.ref,
      last: this.last,
      lastReading: this.lastReading,
      lastTime: this.lastTime,
      seen: this.seen,
      rate: this.rate,
      run: this.run,
      requiredRun: finiteOrNull(this.requiredRun),
      minStep: finiteOrNull(this.minStep),
      stuck: this.stuck,
      profile: this.profile?.toState() ?? null,
    };
  }

  /** A field as saved; its sizes checked beforehand (deviceStateProblem). */
  static fromState(s: FieldStateData, p: AnomalyParams): FieldState {
    const f = new FieldState(s.name, p.windowSize, RollingWindow.of(p.windowSize, decodeArray(Float64Array, s.window) as Float64Array));
    f.ref = s.ref;
    f.last = s.last;
    f.lastReading = s.lastReading;
    f.lastTime = s.lastTime;
    f.seen = s.seen;
    f.rate = s.rate;
    f.run = s.run;
    f.requiredRun = s.requiredRun ?? Infinity;
    f.minStep = s.minStep ?? Infinity;
    f.stuck = s.stuck;
    f.profile = s.profile === null ? null : DailyProfile.fromState(s.profile, p);
    return f;
  }

  /** Scores x, then takes it into the baseline. Sets z, stuck, stuckStart and run. */
  observe(x: number, p: AnomalyParams): void {
    const w = this.window;
    // Before the run and the resolution learn from x: a value never vouches for itself.
    const z = w.count >= p.madMinSamples ? this.spikeScore(x, p.madThreshold) : NaN;

    if (this.seen === 0) {
      this.run = 1;
      this.ref = x;
    } else {
      const changed = x !== this.last;
      if (changed) {
        const step = Math.abs(x - this.last);
        if (step < this.minStep) this.minStep = step;
        this.run = 1;
      } else {
        if (this.run === 1) this.requiredRun = this.seen >= p.madMinSamples ? requiredRun(this.rate, p) : Infinity;
        this.run++;
      }
      // The share of changes: a plain mean over the first readings, then an exponential average.
      const a = 1 / Math.min(this.seen, p.stuckRateHorizon);
      this.rate += a * ((changed ? 1 : 0) - this.rate);
    }
    this.seen++;
    this.last = x;
    this.stuck = this.run >= this.requiredRun;
    this.stuckStart = this.run === this.requiredRun;
    this.z = this.stuck ? NaN : z;
    if (!this.stuck || this.run >= this.requiredRun + p.stuckLevelAfter) w.push(x);
  }

  /**
   * The robust z of x against the window: |x - median| / scale. Most values are nowhere near a
   * spike, and for them it is enough to know that z <= threshold, which the window tells in two
   * binary searches (RollingWindow.madAtLeast); 0 stands for "at most the threshold" then. The
   * exact z is computed for the rest, at most MAX_SPIKE_SCORE.
   */
  spikeScore(x: number, threshold: number): number {
    const w = this.window;
    const med = w.median();
    const d = Math.abs(x - med);
    if (this.minStep === Infinity) return 0;
    const floor = Math.max(this.minStep, 1e-9 * Math.max(1, Math.abs(med)));
    if (d <= threshold * floor) return 0;
    if (w.madAtLeast(med, d / (threshold * MAD_SCALE))) return 0;
    let scale = MAD_SCALE * w.mad(med);
    if (!(scale > 0)) scale = MEAN_AD_SCALE * w.meanAbsDev(med);
    if (scale < floor) scale = floor;
    const z = d / scale;
    // Not below the cap: beyond it, or NaN (a distance and a spread that both overflowed to
    // Infinity, values near 1.8e308 of both signs: a spike all the same).
    return z < MAX_SPIKE_SCORE ? z : MAX_SPIKE_SCORE;
  }
}

/**
 * What a field's short-term median usually is at each time of day: `bins` bins over 24 hours (UTC;
 * any fixed offset does, a device's cycle lands in the same bins every day), each an average of the
 * medians seen in that bin, over about `horizon` of them (a plain mean over the first ones). It
 * answers only once it is a day old: before that, a bin's baseline is a few minutes of today.
 *
 * Its age is that of the readings' times as they went on, not of the oldest time ever seen: a
 * device that restarts before its clock is set sends a reading or two dated 1970 (or a hostile one
 * any date the contract allows), and that one reading made the profile answer at once, from a few
 * minutes of data, on the device's first day: 115 false forest anomalies in 5 days where there were
 * none (test/unit/anomaly.test.ts). So a time more than a day before its start does not make it
 * older; and one not yet a day old that meets a time more than a day away from what it has seen
 * (the clock set after such readings, or a stray date before it was) starts its age again there.
 */
const DAY_MS = 86_400_000;
/** The largest finite Float32: what a daily baseline's bin can hold. */
const FLOAT32_MAX = 3.4028234663852886e38;

export class DailyProfile {
  private readonly value: Float32Array;
  private readonly count: Uint8Array;
  private readonly binMs: number;
  private since = NaN;
  /** the newest time it has learnt from */
  private latest = NaN;

  constructor(
    bins: number,
    private readonly horizon: number,
  ) {
    this.value = new Float32Array(bins);
    this.count = new Uint8Array(bins);
    this.binMs = 86_400_000 / bins;
  }

  /** The baseline for time t (epoch ms), relative to `ref`; NaN while the bin has none. */
  at(t: number): number {
    if (!(t - this.since >= DAY_MS)) return NaN;
    const b = this.bin(t);
    return (this.count[b] as number) > 0 ? (this.value[b] as number) : NaN;
  }

  /**
   * Takes the median m (relative to the field's ref, so Float32 keeps the precision) seen at t.
   * Held within a Float32's range, and a bin that is not finite (saved so by an earlier version)
   * starts again: a median beyond it (a field whose first value was DBL_MAX, a sensor's "no
   * reading") made the bin -Infinity, then NaN at its next update (-Infinity + Infinity) for good,
   * and a drift of NaN keeps every row of the device out of its forest's buffer (device.ts).
   */
  update(t: number, m: number): void {
    if (Number.isNaN(m)) return;
    const x = m > FLOAT32_MAX ? FLOAT32_MAX : m < -FLOAT32_MAX ? -FLOAT32_MAX : m;
    if (Number.isNaN(this.since) || (this.latest - this.since < DAY_MS && (t > this.latest + DAY_MS || t < this.since - DAY_MS))) this.since = this.latest = t;
    else if (t < this.since && this.since - t <= DAY_MS) this.since = t;
    if (t > this.latest) this.latest = t;
    const b = this.bin(t);
    if (!Number.isFinite(this.value[b] as number)) this.count[b] = 0;
    const n = Math.min((this.count[b] as number) + 1, this.horizon);
    const v = this.count[b] === 0 ? 0 : (this.value[b] as number);
    this.value[b] = v + (x - v) / n;
    if ((this.count[b] as number) < 255) this.count[b] = (this.count[b] as number) + 1;
  }

  get bytes(): number {
    return this.value.byteLength + this.count.byteLength;
  }

  toState(): DailyProfileState {
    return { value: encodeArray(this.value), count: encodeArray(this.count), since: finiteOrNull(this.since), latest: finiteOrNull(this.latest) };
  }

  /** A profile as saved; its sizes checked beforehand (deviceStateProblem). */
  static fromState(s: DailyProfileState, p: AnomalyParams): DailyProfile {
    const d = new DailyProfile(p.driftBins, p.driftHorizon);
    d.value.set(decodeArray(Float32Array, s.value) as Float32Array);
    d.count.set(decodeArray(Uint8Array, s.count) as Uint8Array);
    d.since = s.since ?? NaN;
    d.latest = s.latest ?? NaN;
    return d;
  }

  private bin(t: number): number {
    const ms = ((t % 86_400_000) + 86_400_000) % 86_400_000;
    return Math.min(this.count.length - 1, Math.floor(ms / this.binMs));
  }
}

/** The shortest run that (1 - rate)^run < stuckProbability allows, at least stuckMinRun. */
function requiredRun(rate: number, p: AnomalyParams): number {
  if (!(rate > 0)) return Infinity;
  if (rate >= 1) return p.stuckMinRun;
  return Math.max(p.stuckMinRun, Math.ceil(Math.log(p.stuckProbability) / Math.log1p(-rate)));
}
