import { hash32, Mulberry32 } from './prng.ts';
import { PROFILES, type Profile, type ProfileState } from './profiles.ts';
import type { ScoredReading } from './types.ts';

/**
 * A labelled data set for measuring the detectors (seeded: the same options give the same set).
 *
 * Devices of three kinds (profiles.ts: weather station, power meter, pump) send one reading every
 * intervalMs: correlated fields with a daily cycle, slow weather-like wandering and sensor noise,
 * rounded to each sensor's resolution. After `warmupDays` (the detectors learn), events are
 * injected at random times, one at a time per device:
 *   - spike: one value off by 3 to 15 of the field's units (its typical spread within an hour);
 *   - drift: an offset growing linearly to 4 to 10 units over 4 to 10 hours, then gone at once
 *     (the sensor is recalibrated);
 *   - stuck: the field repeats its last value exactly for 1 to 4 hours;
 *   - correlation: for 1 to 4 hours the dependent field of the device (humidity, power, pump
 *     pressure) reacts to its driver (temperature, current, flow) the wrong way round, as if the
 *     driver were mirrored about its usual level: each field stays within its range, their
 *     relation inverts.
 * Every reading is labelled: 'normal', the kind of the event it belongs to (with the field), or
 * 'aftermath': the AFTERMATH_READINGS readings after a drift, stuck or correlation event, when the
 * field jumps back to its true value. Flagging that jump is not wrong, nor is missing it; the
 * evaluation counts those readings neither way.
 */
export type InjectedKind = 'spike' | 'drift' | 'stuck' | 'correlation';
export type Label = 'normal' | InjectedKind | 'aftermath';

export const INJECTED_KINDS: readonly InjectedKind[] = ['spike', 'drift', 'stuck', 'correlation'];

/** readings. Half the spike window: the time a rolling median takes to accept a step. */
export const AFTERMATH_READINGS = 32;

export interface LabelledReading extends ScoredReading {
  label: Label;
  /** the field the event was injected into */
  labelField?: string;
  /** index into the set's events */
  event?: number;
}

export interface InjectedEvent {
  device: string;
  kind: InjectedKind;
  field: string;
  /** epoch milliseconds, first and last reading of the event */
  start: number;
  end: number;
  readings: number;
  /** in the field's units: a spike's offset, a drift's final offset; 0 for stuck and correlation */
  magnitude: number;
}

export interface DatasetOptions {
  seed: number;
  /** devices; the profiles take turns */
  devices: number;
  days: number;
  /** milliseconds between a device's readings */
  intervalMs: number;
  /** epoch milliseconds of the first reading (midnight UTC, so the daily cycles line up) */
  start: number;
  /** days without events at the start */
  warmupDays: number;
  /** events per device per day, by kind */
  rates: Record<InjectedKind, number>;
}

export const DEFAULT_DATASET_OPTIONS: Readonly<DatasetOptions> = Object.freeze({
  seed: 1,
  devices: 24,
  days: 7,
  intervalMs: 60_000,
  start: Date.UTC(2026, 0, 5),
  warmupDays: 2,
  rates: { spike: 6, drift: 0.5, stuck: 0.5, correlation: 0.5 },
});

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** The length of each kind of event, in hours (uniform between the two). */
const DURATION_H: Record<InjectedKind, [number, number]> = { spike: [0, 0], drift: [4, 10], stuck: [1, 4], correlation: [1, 4] };

export function generateDataset(options: Partial<DatasetOptions> = {}): { readings: LabelledReading[]; events: InjectedEvent[]; options: DatasetOptions } {
  const o: DatasetOptions = { ...DEFAULT_DATASET_OPTIONS, ...options, rates: { ...DEFAULT_DATASET_OPTIONS.rates, ...options.rates } };
  const perDevice = Math.floor((o.days * DAY_MS) / o.intervalMs);
  const streams: LabelledReading[][] = [];
  const events: InjectedEvent[] = [];
  for (let d = 0; d < o.devices; d++) {
    const profile = PROFILES[d % PROFILES.length] as Profile;
    const id = `${profile.name}-${String(d + 1).padStart(3, '0')}`;
    const rng = new Mulberry32(hash32(id, o.seed));
    // Devices do not all report on the same millisecond.
    const offset = Math.floor(rng.next() * o.intervalMs);
    const times = Array.from({ length: perDevice }, (_, i) => o.start + offset + i * o.intervalMs);
    const plan = planEvents(id, profile, times, o, rng, events);
    streams.push(simulate(id, profile, times, plan, events, rng));
  }
  // One stream, in time order, as the console would receive it.
  const readings = streams.flat().sort((a, b) => a.time - b.time || (a.device < b.device ? -1 : 1));
  return { readings, events, options: o };
}

/** Per reading index: the event in progress (index into events) or -1; aftermath marked as -2. */
function planEvents(device: string, profile: Profile, times: number[], o: DatasetOptions, rng: Mulberry32, events: InjectedEvent[]): Int32Array {
  const plan = new Int32Array(times.length).fill(-1);
  const total = INJECTED_KINDS.reduce((s, k) => s + o.rates[k], 0);
  if (total <= 0) return plan;
  const meanGap = DAY_MS / total / o.intervalMs; // readings
  let i = Math.ceil((o.warmupDays * DAY_MS) / o.intervalMs) + Math.floor(-Math.log(1 - rng.next()) * meanGap);
  while (i < times.length) {
    let pick = rng.next() * total;
    let kind: InjectedKind = 'spike';
    for (const k of INJECTED_KINDS) {
      kind = k;
      pick -= o.rates[k];
      if (pick < 0) break;
    }
    const [lo, hi] = DURATION_H[kind];
    const n = kind === 'spike' ? 1 : Math.round((rng.uniform(lo, hi) * HOUR_MS) / o.intervalMs);
    const after = kind === 'spike' ? 0 : AFTERMATH_READINGS;
    if (i + n + after > times.length) break;
    const field = kind === 'correlation' ? profile.dependent : (profile.injectable[rng.int(profile.injectable.length)] as string);
    const magnitude = kind === 'spike' ? rng.uniform(3, 15) * (rng.next() < 0.5 ? -1 : 1) : kind === 'drift' ? rng.uniform(4, 10) * (rng.next() < 0.5 ? -1 : 1) : 0;
    const e = events.push({ device, kind, field, start: times[i] as number, end: times[i + n - 1] as number, readings: n, magnitude }) - 1;
    for (let k = i; k < i + n; k++) plan[k] = e;
    for (let k = i + n; k < i + n + after; k++) plan[k] = -2;
    i += n + after + 1 + Math.floor(-Math.log(1 - rng.next()) * meanGap);
  }
  return plan;
}

function simulate(device: string, profile: Profile, times: number[], plan: Int32Array, events: InjectedEvent[], rng: Mulberry32): LabelledReading[] {
  const state: ProfileState = profile.init(rng);
  const out: LabelledReading[] = [];
  let frozen: Record<string, number> = {};
  for (let i = 0; i < times.length; i++) {
    const t = times[i] as number;
    const e = plan[i] as number;
    const ev = e >= 0 ? (events[e] as InjectedEvent) : undefined;
    const fields = profile.step(state, t, rng, ev?.kind === 'correlation');
    if (ev !== undefined) {
      const unit = profile.units[ev.field] as number;
      const f = ev.field;
      if (ev.kind === 'spike') fields[f] = (fields[f] as number) + ev.magnitude * unit;
      else if (ev.kind === 'drift') fields[f] = (fields[f] as number) + ((t - ev.start + 1) / (ev.end - ev.start + 1)) * ev.magnitude * unit;
      else if (ev.kind === 'stuck') {
        if (t === ev.start) frozen = { ...out[out.length - 1]?.fields };
        fields[f] = frozen[f] ?? (fields[f] as number);
      }
      profile.round(fields);
    }
    const reading: LabelledReading = { device, time: t, fields, label: ev?.kind ?? (e === -2 ? 'aftermath' : 'normal') };
    if (ev !== undefined) {
      reading.labelField = ev.field;
      reading.event = e;
    }
    out.push(reading);
  }
  return out;
}
