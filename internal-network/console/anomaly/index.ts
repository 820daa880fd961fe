/**
 * Anomaly detection for the console: a pure library (no I/O). See docs/anomaly-detection.md.
 */
export { AnomalyScorer, type AnomalyScorerOptions, type AnomalyScorerStats } from './scorer.ts';
export { AnomalyParamsSchema, DEFAULT_ANOMALY_PARAMS, anomalyParams, worstCaseBytesPerDevice, type AnomalyParams } from './params.ts';
export type { Anomaly, AnomalyDetector, AnomalyKind, ScoredReading } from './types.ts';
export { IsolationForest, averagePathLength, type IsolationForestOptions } from './iforest.ts';
export { RollingWindow, MAD_SCALE } from './rolling.ts';
export { MAX_SPIKE_SCORE } from './field.ts';
export { Mulberry32, hash32 } from './prng.ts';
