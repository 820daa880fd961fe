import type { Mulberry32 } from './prng.ts';

/**
 * The three kinds of device of the labelled data set. Each has correlated fields driven by a daily
 * cycle, slow wandering (first-order autoregressive processes, AR(1)) and white sensor noise, and
 * rounds each field to its sensor's resolution (so exact repeats happen where a real sensor has them).
 *
 * `units` is each field's typical spread within an hour (what its rolling window sees); injected
 * spikes and drifts are sized in these units. `dependent` is the field whose relation to the
 * others a correlation event breaks; `injectable` are the fields spikes, drifts and stuck runs go
 * into (all fields that vary continuously: the battery gauge, which moves one percent at a time,
 * gets none).
 */
export interface Profile {
  name: string;
  fields: string[];
  dependent: string;
  injectable: string[];
  units: Record<string, number>;
  init(rng: Mulberry32): ProfileState;
  /** The next reading at time t; `broken`: the dependent field follows its driver mirrored. */
  step(state: ProfileState, t: number, rng: Mulberry32, broken: boolean): Record<string, number>;
  round(fields: Record<string, number>): void;
}

export type ProfileState = Record<string, number>;

const HOUR_MS = 3_600_000;
const hourOfDay = (t: number) => (t % (24 * HOUR_MS)) / HOUR_MS;
const bump = (h: number, centre: number, width: number) => Math.exp(-(((h - centre) / width) ** 2));

/** One step of an AR(1) process with stationary standard deviation sd and per-step correlation phi. */
function ar(x: number, phi: number, sd: number, rng: Mulberry32): number {
  return phi * x + sd * Math.sqrt(1 - phi * phi) * rng.normal();
}

function rounder(resolution: Record<string, number>) {
  return (fields: Record<string, number>) => {
    for (const [k, r] of Object.entries(resolution)) {
      const v = fields[k];
      if (v !== undefined) fields[k] = Math.round(v / r) * r;
    }
  };
}

/** Temperature with a daily cycle; humidity falling as it rises; slow pressure; a solar battery. */
const weather: Profile = {
  name: 'weather',
  fields: ['temperature', 'humidity', 'pressure', 'battery'],
  dependent: 'humidity',
  injectable: ['temperature', 'humidity', 'pressure'],
  units: { temperature: 0.5, humidity: 2, pressure: 0.3 },
  init: (rng) => ({ mean: 15 + 3 * rng.normal(), amp: 4 + rng.normal(), arT: 0, arH: 0, arP: 0, battery: 80 + 10 * rng.next() }),
  step(s, t, rng, broken) {
    s.mean = 15 + ar((s.mean as number) - 15, 0.9995, 3, rng); // wanders over days around 15 degrees C
    s.amp = Math.max(1, ar((s.amp as number) - 4, 0.999, 1, rng) + 4);
    s.arT = ar(s.arT as number, 0.995, 0.4, rng);
    s.arH = ar(s.arH as number, 0.99, 1.5, rng);
    s.arP = ar(s.arP as number, 0.9995, 4, rng);
    const h = hourOfDay(t);
    const cycle = (s.amp as number) * Math.sin((2 * Math.PI * (h - 9)) / 24);
    const trueT = (s.mean as number) + cycle + (s.arT as number);
    // Mirrored: humidity answers a temperature as far below the day's mean as the real one is above.
    const driver = broken ? 2 * (s.mean as number) - trueT : trueT;
    const sun = Math.max(0, Math.sin((2 * Math.PI * (h - 6)) / 24));
    s.battery = Math.min(100, Math.max(20, (s.battery as number) + 0.06 * sun - 0.02));
    const fields = {
      temperature: trueT + 0.1 * rng.normal(),
      humidity: Math.min(100, Math.max(5, 60 - 2.5 * (driver - 15) + (s.arH as number) + 0.5 * rng.normal())),
      pressure: 1013 + (s.arP as number) + 0.1 * rng.normal(),
      battery: s.battery as number,
    };
    this.round(fields);
    return fields;
  },
  round: rounder({ temperature: 0.01, humidity: 0.1, pressure: 0.01, battery: 1 }),
};

/** Current following a household load curve; power = voltage x current x power factor; mains frequency. */
const power: Profile = {
  name: 'power',
  fields: ['voltage', 'current', 'power', 'frequency'],
  dependent: 'power',
  injectable: ['voltage', 'current', 'power', 'frequency'],
  units: { voltage: 1, current: 0.3, power: 80, frequency: 0.02 },
  init: () => ({ arV: 0, arI: 0, arF: 0 }),
  step(s, t, rng, broken) {
    s.arV = ar(s.arV as number, 0.98, 0.8, rng);
    s.arI = ar(s.arI as number, 0.99, 0.1, rng);
    s.arF = ar(s.arF as number, 0.9, 0.02, rng);
    const h = hourOfDay(t);
    const evening = bump(h, 19.5, 2);
    const load = 2 + 3 * evening + 1.5 * bump(h, 7.5, 1.5);
    const voltage = 230 - 3 * evening + (s.arV as number) + 0.3 * rng.normal();
    const current = Math.max(0.2, load * (1 + (s.arI as number)) + 0.05 * rng.normal());
    // Mirrored about 3.5 A, the middle of the load curve's range.
    const driver = broken ? Math.max(0.2, 7 - current) : current;
    const fields = {
      voltage,
      current,
      power: voltage * driver * 0.95 + 10 * rng.normal(),
      frequency: 50 + (s.arF as number) + 0.005 * rng.normal(),
    };
    this.round(fields);
    return fields;
  },
  round: rounder({ voltage: 0.1, current: 0.01, power: 1, frequency: 0.001 }),
};

/** Flow following the daily demand; pressure rising with the square of the flow; a motor warming with it. */
const pump: Profile = {
  name: 'pump',
  fields: ['flow', 'pressure', 'motor_temp'],
  dependent: 'pressure',
  injectable: ['flow', 'pressure', 'motor_temp'],
  units: { flow: 0.5, pressure: 0.05, motor_temp: 0.5 },
  init: () => ({ arQ: 0, heat: 10 }),
  step(s, t, rng, broken) {
    s.arQ = ar(s.arQ as number, 0.99, 0.05, rng);
    const h = hourOfDay(t);
    const demand = 0.5 + 0.35 * Math.sin((2 * Math.PI * (h - 8)) / 24) + 0.15 * bump(h, 7, 1);
    const flow = 6 + 8 * demand * (1 + (s.arQ as number)) + 0.2 * rng.normal();
    // The motor follows the flow with a 30-minute lag (one-minute steps).
    s.heat = (s.heat as number) + ((flow - (s.heat as number)) / 30);
    // Mirrored about 10 (the middle of the flow's range).
    const driver = broken ? 20 - flow : flow;
    const fields = {
      flow,
      pressure: 1.5 + 0.02 * driver * driver + 0.03 * rng.normal(),
      motor_temp: 35 + 2 * (s.heat as number) + 0.2 * rng.normal(),
    };
    this.round(fields);
    return fields;
  },
  round: rounder({ flow: 0.01, pressure: 0.001, motor_temp: 0.1 }),
};

export const PROFILES: readonly Profile[] = [weather, power, pump];
