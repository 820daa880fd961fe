import { z } from 'zod';
import { FieldStreamError } from '../../../shared/errors.ts';
import { LIMITS } from '../../../shared/limits.ts';

/**
 * Every parameter of the anomaly scorer, with its unit and the reason for its default. The
 * console may take some of them from its configuration, so they are checked by a zod schema like
 * any setting; the defaults are the ones docs/anomaly-detection.md measures.
 *
 * Memory is bounded by these alone: at most `maxDevices` devices, each with at most
 * `maxFieldsPerDevice` fields of `windowSize` values, one training buffer of `forestBufferSize`
 * rows and one forest of `forestTrees` trees. `worstCaseBytesPerDevice` adds them up.
 */
export const AnomalyParamsSchema = z
  .object({
    // -- Bounds ---------------------------------------------------------------------------------
    /** devices. Most devices tracked at once: the fleet the console is sized for. Past it a new
     * device takes the place of the least recently heard from one only if that one has been silent for
     * `deviceIdleMs`; otherwise the new device is refused (counted), so a burst of new ids cannot
     * wipe the baselines of the devices that are sending. */
    maxDevices: z.number().int().min(1).max(1_000_000),
    /** milliseconds, of arrival (the scorer's clock, AnomalyScorerOptions.clock), never of the
     * readings' own times: those are the devices' clocks. A device none of whose readings has
     * arrived for this long may give its place to a new one. */
    deviceIdleMs: z.number().int().min(0),
    /** fields. Most numeric fields scored per device; further fields are refused (counted). The
     * contract allows LIMITS.readingMaxFields (256) per reading; 32 covers every real sensor set
     * we know of at an eighth of the memory. */
    maxFieldsPerDevice: z.number().int().min(1).max(LIMITS.readingMaxFields),
    /** milliseconds (reading time). A field a device has not sent for this long, and in none of
     * its last windowSize readings, is forgotten: its slot (maxFieldsPerDevice) goes to the fields
     * it sends now, and if it was one of the forest's, the forest starts again from the fields it
     * sends now. A firmware that renames a field otherwise left the old name holding its slot and
     * its forest column for good. The buffer's span (3.6 days by default): by then no row of the
     * buffer holds the field. Both conditions, so that neither a field sent once an hour among
     * readings of every minute nor a device's clock jumping ahead forgets a field it still sends. */
    fieldForgetMs: z.number().int().min(0),

    // -- Per-field robust baseline (rolling median and MAD) --------------------------------------
    /** readings. Values per field in the rolling window. On 64 values the MAD's standard error is
     * about 15 % on Gaussian noise, and the window follows a slow daily cycle closely enough (the median lags by
     * half a window) for a 1-minute device; a larger window costs memory and adapts more slowly. */
    windowSize: z.number().int().min(8).max(4096),
    /** readings. A field is not scored before its window holds this many values. */
    madMinSamples: z.number().int().min(3),
    /** robust z (|x - median| / (1.4826 MAD)). A value beyond this is a spike. Gaussian noise
     * passes 7 once in 400 billion values; what passes it in practice is the data's own tails,
     * slow wandering within the window and the MAD's error on 64 values: 7 keeps the false alarms
     * of the measured data set to about one every two days per device (docs/anomaly-detection.md). */
    madThreshold: z.number().positive(),

    // -- Stuck sensor ----------------------------------------------------------------------------
    /** readings. Shortest run of identical values that can count as stuck, however lively the field. */
    stuckMinRun: z.number().int().min(2),
    /** probability. A run is stuck when a field changing as often as this one did before the run
     * would repeat itself that long with less than this probability: (1 - p)^run < stuckProbability. */
    stuckProbability: z.number().gt(0).lt(1),
    /** readings. Horizon of the field's change rate p (an average over about this many readings). */
    stuckRateHorizon: z.number().int().min(2),
    /** readings. A stuck run's repeats stay out of the window until the run is this much longer
     * than it had to be to be stuck; from then on it is taken as the field's new level (a pump
     * switched off for the night) and its repeats enter the window, so the median accepts it. Until
     * then a sensor stuck for a while keeps its baseline, and its first real value afterwards is
     * not taken for a spike. 256 is over four hours at one reading a minute, past the data set's
     * stuck sensors (1 to 4 hours); one window (64) raised the forest's false alarms on the test's
     * set by a third (0.93 to 1.27 per device per day): the baseline held the stuck value when the
     * sensor came back. */
    stuckLevelAfter: z.number().int().min(0),

    // -- Isolation Forest (per device) -----------------------------------------------------------
    /** trees per forest. Liu et al. use 100; on the data set 64 and 100 trees give the precision
     * and recall of 32 within a point, at twice and three times the memory and time. A score varies
     * between seeds by about 0.02 (standard deviation, test/unit/anomaly.test.ts), well inside the
     * margin of each forest's threshold. */
    forestTrees: z.number().int().min(1).max(1024),
    /** rows (psi). Subsample per tree; 256 as in the paper. The height limit is ceil(log2 psi). */
    forestSampleSize: z.number().int().min(2).max(32_768),
    /** rows. The rolling training buffer of each device. */
    forestBufferSize: z.number().int().min(2).max(65_536),
    /** milliseconds (reading time). At most one row per this interval enters the buffer, so the
     * buffer spans forestBufferSize x this (3.6 days by default) whatever the device's reading
     * rate: several days, so that what wanders over days (the weather) is seen wandering, and the
     * forest does not take tomorrow for an anomaly. Every reading is scored, whatever this is. */
    forestSampleIntervalMs: z.number().int().min(0),
    /** rows. The forest is first trained when the buffer holds this many rows: a day's (the
     * buffer only starts filling once the daily baselines are a day old, so a device's forest
     * speaks after two days). */
    forestMinTrain: z.number().int().min(2),
    /** rows. The forest is trained again after this many new rows (12 h by default): often enough
     * to follow a device's slow changes; training costs a few milliseconds (bench/anomaly.ts). */
    forestRetrainEvery: z.number().int().min(1),
    /** rows. A device whose rows kept out of the buffer (they were anomalous) outnumber the rows
     * taken since by this many (12 h of anomalous rows in a row, by default) is taken to have a new
     * normal: its rows enter the buffer again. Counted net, not in a row: a lasting change is
     * flagged on most readings, rarely all, and one row let pass ended the run, so the device
     * never adapted (device.ts). */
    forestAdaptAfter: z.number().int().min(1),
    /** fields. The forest looks at a device's first fields only (in the order first seen). */
    forestMaxFields: z.number().int().min(1).max(64),
    /** pairs. Most pairs of correlated fields given a residual feature (features.ts). */
    forestMaxPairs: z.number().int().min(0).max(64),
    /** |Pearson r|. A pair of fields this correlated over the training buffer (and over each of its
     * halves) gets a residual feature. Physically bound fields (power and current, a pump's flow and
     * pressure) correlate above 0.95; below 0.9 the residual is too wide for a break to stand out. */
    forestPairMinCorrelation: z.number().min(0).max(1),
    /** rows. Single-field drift features join the forest once the buffer holds this many rows (two
     * days by default): whether a field wanders from day to day by itself cannot be told from one. */
    forestDriftMinRows: z.number().int().min(2),
    /** robust scales. A feature whose median differs by more than this between quarters of the
     * buffer is left out of that forest (features.ts): it wanders by itself. */
    forestMaxShift: z.number().positive(),
    /** Score points beyond a tree's subsample by how far out they lie (iforest.ts). false: the
     * paper's scoring, under which clear anomalies score no higher than the training data's edges. */
    forestRangeAware: z.boolean(),
    /** quantile. Each forest's threshold is set above this quantile of its own training rows' scores... */
    forestCalibrationQuantile: z.number().min(0).max(1),
    /** path length (tree levels). ...by this much: a reading must be isolated this many levels
     * sooner than all but the most isolated 1 % of the training rows. */
    forestMarginDepth: z.number().min(0),
    /** score s in (0, 1). No forest's threshold is lower (the paper: s well below 0.5 is normal). */
    forestMinThreshold: z.number().gt(0).lt(1),
    /** bins. The drift feature is a field's short-term median minus what it usually is at that time
     * of day: one baseline per bin of 24 h / driftBins (30 minutes by default). */
    driftBins: z.number().int().min(1).max(1440),
    /** rows per bin. Each bin's baseline averages about this many rows: 9 is three days of
     * 10-minute rows in a 30-minute bin, enough to smooth one odd day, short enough to follow the
     * seasons. At most 255. */
    driftHorizon: z.number().int().min(1).max(255),
    /** robust z. Features are clipped to +-this before training and scoring, so one absurd value
     * cannot stretch a feature's range. */
    featureClip: z.number().positive(),
    /** uint32. Seed of every random choice (subsamples, split features and values). */
    seed: z.number().int().min(0).max(0xffff_ffff),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.madMinSamples > p.windowSize) ctx.addIssue({ code: 'custom', path: ['madMinSamples'], message: 'must not exceed windowSize' });
    if (p.forestMinTrain > p.forestBufferSize) ctx.addIssue({ code: 'custom', path: ['forestMinTrain'], message: 'must not exceed forestBufferSize' });
  });

export type AnomalyParams = z.infer<typeof AnomalyParamsSchema>;

export const DEFAULT_ANOMALY_PARAMS: Readonly<AnomalyParams> = Object.freeze({
  maxDevices: 10_000,
  deviceIdleMs: 3_600_000,
  maxFieldsPerDevice: 32,
  fieldForgetMs: 512 * 600_000,
  windowSize: 64,
  madMinSamples: 32,
  madThreshold: 7,
  stuckMinRun: 30,
  stuckProbability: 1e-6,
  stuckRateHorizon: 256,
  stuckLevelAfter: 256,
  forestTrees: 32,
  forestSampleSize: 256,
  forestBufferSize: 512,
  forestSampleIntervalMs: 600_000,
  forestMinTrain: 144,
  forestRetrainEvery: 72,
  forestAdaptAfter: 72,
  forestMaxFields: 8,
  forestMaxPairs: 4,
  forestPairMinCorrelation: 0.9,
  forestDriftMinRows: 288,
  forestMaxShift: 1.5,
  forestRangeAware: true,
  forestCalibrationQuantile: 0.99,
  forestMarginDepth: 1.5,
  forestMinThreshold: 0.6,
  driftBins: 48,
  driftHorizon: 9,
  featureClip: 20,
  seed: 0x5eed,
});

/** The defaults with `overrides` applied, checked; a bad value is a CONFIG_INVALID naming it. */
export function anomalyParams(overrides: Partial<AnomalyParams> = {}): Readonly<AnomalyParams> {
  const result = AnomalyParamsSchema.safeParse({ ...DEFAULT_ANOMALY_PARAMS, ...overrides });
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join('.') || '(parameters)'}: ${i.message.replace(/\s*\n\s*/g, ' ')}`);
    throw new FieldStreamError('CONFIG_INVALID', `Invalid anomaly parameters — ${problems.join('; ')}`, {
      parameters: result.error.issues.map((i) => i.path.join('.')),
    });
  }
  return Object.freeze(result.data);
}

/** bytes. What one device can hold at most under `p` (typed arrays; object overhead aside). */
export function worstCaseBytesPerDevice(p: AnomalyParams): number {
  const forestFields = Math.min(p.forestMaxFields, p.maxFieldsPerDevice);
  const windows = p.maxFieldsPerDevice * p.windowSize * 8 * 2; // ring and sorted copy, Float64
  const profiles = forestFields * p.driftBins * 5; // Float32 baseline + Uint8 count per bin
  const buffer = p.forestBufferSize * 2 * forestFields * 4; // Float32 rows: level and drift per field
  const psi = Math.min(p.forestSampleSize, p.forestBufferSize);
  const dims = forestFields + p.forestMaxPairs;
  // At most 2 psi - 1 nodes a tree, 7 bytes each (iforest.ts; real trees use about a quarter),
  // its root's index, and the subsample's range of every feature.
  const forest = p.forestTrees * ((2 * psi - 1) * 7 + 4 + (p.forestRangeAware ? dims * 8 : 0));
  return windows + profiles + buffer + forest;
}
