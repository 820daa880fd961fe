/** One reading as the scorer takes it: a device's numeric fields at one time. */
export interface ScoredReading {
  device: string;
  /** epoch milliseconds */
  time: number;
  /** numeric fields; a value that is not a finite number is ignored (counted) */
  fields: Record<string, number>;
}

/** Which detector found an anomaly (docs/anomaly-detection.md). */
export type AnomalyDetector = 'mad' | 'stuck' | 'iforest';

/**
 * What an anomaly looks like, a hint, not a verdict: 'spike' (one value far from its field's
 * rolling median), 'stuck' (a lively field repeating one value), and for the forest the feature
 * that lay furthest out: 'drift' (a field's short-term median away from what it usually is at that
 * time of day), 'correlation' (two correlated fields off their usual relation).
 */
export type AnomalyKind = 'spike' | 'stuck' | 'drift' | 'correlation';

export interface Anomaly {
  device: string;
  /** the field, or '*' when the device's fields together are anomalous (the forest) */
  field: string;
  detector: AnomalyDetector;
  /** mad: the robust z-score |x - median| / scale; stuck: the run of identical values, in
   * readings; iforest: the score s in (0, 1) */
  score: number;
  /** the field's value (mad, stuck) */
  value?: number;
  /** the reading's time, epoch milliseconds */
  time: number;
  kind: AnomalyKind;
  /** iforest: the fields of the feature that lay furthest out (one, or a correlated pair) */
  fields?: string[];
}
