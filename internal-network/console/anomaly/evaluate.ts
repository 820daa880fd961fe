import { INJECTED_KINDS, type InjectedEvent, type InjectedKind, type LabelledReading } from './dataset.ts';
import type { AnomalyScorer, AnomalyScorerStats } from './scorer.ts';
import type { AnomalyDetector } from './types.ts';

/**
 * Runs a scorer over a labelled data set and measures each detector, counting readings: a
 * reading is flagged by a detector when that detector reports at least one anomaly in it (any
 * field). A stuck run is reported once, at the reading it becomes stuck, and lasts until the value
 * changes: the readings after the report that repeat the field's value are the reported run's, and
 * count as flagged by `stuck` (the grouping a consumer makes of the report). Precision: of the
 * flagged readings, the share labelled with an injected kind. Recall per kind: of the readings
 * labelled with that kind, the share flagged. Event recall: of the events of a kind, the share
 * with at least one flagged reading while they lasted. Readings labelled 'aftermath' count
 * neither way (dataset.ts). 'any' is the union of the detectors.
 */
export const DETECTORS: readonly AnomalyDetector[] = ['mad', 'stuck', 'iforest'];
export type DetectorName = AnomalyDetector | 'any';

export interface DetectorResult {
  detector: DetectorName;
  flagged: number;
  truePositives: number;
  falsePositives: number;
  precision: number;
  recall: Record<InjectedKind, number>;
  eventRecall: Record<InjectedKind, number>;
  /** false positives per device per day */
  falseAlarmsPerDeviceDay: number;
  /** flags on readings labelled 'aftermath' (not counted) */
  aftermathFlags: number;
}

export interface Evaluation {
  readings: number;
  devices: number;
  days: number;
  events: Record<InjectedKind, number>;
  labelled: Record<InjectedKind | 'normal' | 'aftermath', number>;
  results: DetectorResult[];
  /** readings from an event's start to its first flag (any detector), median over detected events */
  medianDelay: Record<InjectedKind, number>;
  /** spike recall (any detector) by size, in the field's units */
  spikeRecallBySize: Array<{ from: number; to: number; events: number; recall: number }>;
  stats: AnomalyScorerStats;
}

const BIT: Record<AnomalyDetector, number> = { mad: 1, stuck: 2, iforest: 4 };

export function evaluate(scorer: AnomalyScorer, readings: readonly LabelledReading[], events: readonly InjectedEvent[]): Evaluation {
  const flags = new Uint8Array(readings.length);
  // Per device, the fields in a run reported stuck, and the value repeated.
  const stuckRuns = new Map<string, Map<string, number>>();
  for (let i = 0; i < readings.length; i++) {
    const r = readings[i] as LabelledReading;
    const runs = stuckRuns.get(r.device);
    if (runs !== undefined) {
      for (const [field, value] of runs) {
        if (r.fields[field] === value) flags[i] = (flags[i] as number) | BIT.stuck;
        else runs.delete(field);
      }
    }
    for (const a of scorer.score(r)) {
      flags[i] = (flags[i] as number) | BIT[a.detector];
      if (a.detector === 'stuck' && a.value !== undefined) {
        let m = stuckRuns.get(r.device);
        if (m === undefined) stuckRuns.set(r.device, (m = new Map()));
        m.set(a.field, a.value);
      }
    }
  }
  const devices = new Set(readings.map((r) => r.device)).size;
  const first = readings[0]?.time ?? 0;
  const last = readings[readings.length - 1]?.time ?? 0;
  const days = (last - first) / 86_400_000 || 1;
  const labelled = { normal: 0, aftermath: 0, spike: 0, drift: 0, stuck: 0, correlation: 0 };
  for (const r of readings) labelled[r.label]++;
  const eventCount = zeroKinds();
  for (const e of events) eventCount[e.kind]++;

  const results: DetectorResult[] = [...DETECTORS, 'any' as const].map((detector) => {
    const mask = detector === 'any' ? 7 : BIT[detector];
    let tp = 0;
    let fp = 0;
    let aftermath = 0;
    const hits = zeroKinds();
    const detected = new Set<number>();
    readings.forEach((r, i) => {
      if (((flags[i] as number) & mask) === 0) return;
      if (r.label === 'aftermath') aftermath++;
      else if (r.label === 'normal') fp++;
      else {
        tp++;
        hits[r.label]++;
        if (r.event !== undefined) detected.add(r.event);
      }
    });
    const detectedByKind = zeroKinds();
    for (const e of detected) detectedByKind[(events[e] as InjectedEvent).kind]++;
    return {
      detector,
      flagged: tp + fp,
      truePositives: tp,
      falsePositives: fp,
      precision: tp + fp === 0 ? 0 : tp / (tp + fp),
      recall: mapKinds((k) => (labelled[k] === 0 ? 0 : hits[k] / labelled[k])),
      eventRecall: mapKinds((k) => (eventCount[k] === 0 ? 0 : detectedByKind[k] / eventCount[k])),
      falseAlarmsPerDeviceDay: fp / devices / days,
      aftermathFlags: aftermath,
    };
  });

  // Delays and spike sizes, for any detector.
  const firstFlag = new Map<number, number>();
  const seen = new Map<number, number>();
  readings.forEach((r, i) => {
    if (r.event === undefined) return;
    const n = seen.get(r.event) ?? 0;
    seen.set(r.event, n + 1);
    if ((flags[i] as number) !== 0 && !firstFlag.has(r.event)) firstFlag.set(r.event, n);
  });
  const medianDelay = mapKinds((k) => median(events.flatMap((e, i) => (e.kind === k && firstFlag.has(i) ? [firstFlag.get(i) as number] : []))));
  const sizes = [3, 6, 9, 12, 15];
  const spikeRecallBySize = sizes.slice(0, -1).map((from, b) => {
    const to = sizes[b + 1] as number;
    const inBin = events.map((e, i) => ({ e, i })).filter(({ e }) => e.kind === 'spike' && Math.abs(e.magnitude) >= from && Math.abs(e.magnitude) < to);
    return { from, to, events: inBin.length, recall: inBin.length === 0 ? 0 : inBin.filter(({ i }) => firstFlag.has(i)).length / inBin.length };
  });
  return { readings: readings.length, devices, days, events: eventCount, labelled, results, medianDelay, spikeRecallBySize, stats: scorer.stats() };
}

/** The evaluation as markdown tables (docs/anomaly-detection.md quotes them). */
export function evaluationMarkdown(ev: Evaluation): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
  const lines: string[] = [];
  lines.push(
    `${ev.readings.toLocaleString('en')} readings from ${ev.devices} devices over ${ev.days.toFixed(1)} days; ` +
      `events: ${INJECTED_KINDS.map((k) => `${ev.events[k]} ${k}`).join(', ')}; ` +
      `readings labelled: ${INJECTED_KINDS.map((k) => `${ev.labelled[k].toLocaleString('en')} ${k}`).join(', ')}, ` +
      `${ev.labelled.normal.toLocaleString('en')} normal, ${ev.labelled.aftermath.toLocaleString('en')} aftermath.`,
    '',
    `| detector | precision | false alarms / device / day | ${INJECTED_KINDS.map((k) => `recall ${k}`).join(' | ')} | ${INJECTED_KINDS.map((k) => `events ${k}`).join(' | ')} |`,
    `|---|---|---|${INJECTED_KINDS.map(() => '---|').join('')}${INJECTED_KINDS.map(() => '---|').join('')}`,
  );
  for (const r of ev.results) {
    lines.push(
      `| ${r.detector} | ${pct(r.precision)} | ${r.falseAlarmsPerDeviceDay.toFixed(2)} | ${INJECTED_KINDS.map((k) => pct(r.recall[k])).join(' | ')} | ${INJECTED_KINDS.map((k) => pct(r.eventRecall[k])).join(' | ')} |`,
    );
  }
  lines.push(
    '',
    `Median readings from an event's start to its first flag (any detector): ${INJECTED_KINDS.map((k) => `${k} ${Number.isNaN(ev.medianDelay[k]) ? '-' : ev.medianDelay[k]}`).join(', ')}.`,
    '',
    '| spike size (units) | spikes | caught |',
    '|---|---|---|',
    ...ev.spikeRecallBySize.map((b) => `| ${b.from} to ${b.to} | ${b.events} | ${pct(b.recall)} |`),
  );
  return lines.join('\n');
}

function zeroKinds(): Record<InjectedKind, number> {
  return { spike: 0, drift: 0, stuck: 0, correlation: 0 };
}

function mapKinds(f: (k: InjectedKind) => number): Record<InjectedKind, number> {
  return { spike: f('spike'), drift: f('drift'), stuck: f('stuck'), correlation: f('correlation') };
}

function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length & 1 ? (s[h] as number) : ((s[h - 1] as number) + (s[h] as number)) / 2;
}
