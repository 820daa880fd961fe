import { DeviceModel, type DeviceCounters } from './device.ts';
import { anomalyParams, type AnomalyParams } from './params.ts';
import { deviceStateProblem, type DeviceState } from './state.ts';
import type { Anomaly, ScoredReading } from './types.ts';

export interface AnomalyScorerStats extends DeviceCounters {
  /** devices tracked now (at most maxDevices) */
  devices: number;
  /** readings scored */
  readings: number;
  /** readings of a new device refused because maxDevices were tracked and none was idle */
  devicesRefused: number;
  /** devices forgotten to make room for a new one (idle for deviceIdleMs or longer) */
  devicesEvicted: number;
}

export interface AnomalyScorerOptions {
  /**
   * milliseconds on a clock that does not go back: when a reading reaches the scorer. Only whether
   * a device is idle (deviceIdleMs) is judged on it; everything else goes by the readings' own
   * times. Default: the process's monotonic clock (performance.now()). Tests pass their own.
   */
  clock?: () => number;
  /**
   * epoch milliseconds, the wall clock: only to carry when each device was last heard from across
   * a restart (the monotonic clock starts again at each process). Default Date.now. Tests pass their own.
   */
  wallClock?: () => number;
}

/** The process's monotonic clock: a wall clock stepped back by NTP would make every device look
 * freshly heard from, or (stepped forward) idle. */
const monotonicMs = (): number => performance.now();

/**
 * The one entry point: `score` takes a device's reading and returns what is anomalous in it (often
 * nothing). Pure computation over the state it keeps: no I/O, no randomness but its seed, memory
 * bounded by its parameters (params.ts). Time is the readings' own, except for one question: whether
 * a device is idle and may give its place to a new one, which is judged by when its readings
 * arrived, on the scorer's clock (AnomalyScorerOptions.clock). A reading's time is the device's
 * clock, anything the contract allows: judged by it, a new device whose clock runs ahead would
 * take the place of a device that is sending, and a device that once sent a time in the future
 * would never be idle, and refuse every new device for good.
 *
 * Detectors (docs/anomaly-detection.md): 'mad', a spike in one field against its rolling median
 * and MAD; 'stuck', a lively field repeating one value; 'iforest', the device's fields together
 * unusual for its Isolation Forest (a broken correlation, a slow drift).
 */
export class AnomalyScorer {
  readonly params: Readonly<AnomalyParams>;
  /** In order of last reading's arrival: the first entry is the least recently heard from, and its
   * lastArrival the smallest (the clock never goes back, see now()). */
  private readonly devices = new Map<string, DeviceModel>();
  private readonly clock: () => number;
  private readonly wallClock: () => number;
  /** the latest time the clock gave */
  private clockMs = -Infinity;
  /** the lastArrival of the map's last device (the latest arrival) */
  private latestArrival = -Infinity;
  private readonly counters: AnomalyScorerStats = {
    devices: 0,
    readings: 0,
    devicesRefused: 0,
    devicesEvicted: 0,
    fieldsRefused: 0,
    fieldsForgotten: 0,
    valuesIgnored: 0,
    forestsTrained: 0,
  };

  constructor(params: Partial<AnomalyParams> = {}, options: AnomalyScorerOptions = {}) {
    this.params = anomalyParams(params);
    this.clock = options.clock ?? monotonicMs;
    this.wallClock = options.wallClock ?? Date.now;
  }

  score(reading: ScoredReading): Anomaly[] {
    const out: Anomaly[] = [];
    const now = this.now();
    let d = this.devices.get(reading.device);
    if (d === undefined) {
      d = this.admit(reading.device, now);
      if (d === undefined) return out;
    } else {
      // Move to the end: the map's order is the order of arrival of each device's last reading.
      this.devices.delete(reading.device);
      this.devices.set(reading.device, d);
    }
    d.lastArrival = now;
    this.latestArrival = now;
    this.counters.readings++;
    d.score(reading.time, reading.fields, out, this.counters);
    return out;
  }

  /** Forgets a device (e.g. one removed from the fleet); true if it was tracked. */
  forget(device: string): boolean {
    return this.devices.delete(device);
  }

  /**
   * The devices, the least recently heard from first, each made into its state (state.ts) when a
   * save reaches it: what a restart keeps. A copy of the list: a save that takes its time sees each
   * device once, however many are heard from (moved to the end of the map) meanwhile.
   */
  devicesState(): ReadonlyArray<{ toState(): DeviceState }> {
    // When each was last heard from, carried as a wall-clock time (heardAt): the monotonic clock's
    // readings mean nothing to the next process. Both clocks read once, so the devices' times keep
    // the order of their arrivals. A device heard from while the save runs is saved with its new
    // arrival (it is read when its line is made): later, never earlier, than the truth.
    const wall = this.wallClock();
    const mono = this.now();
    return [...this.devices.values()].map((d) => ({
      toState: (): DeviceState => {
        const { id, ...rest } = d.toState();
        return Number.isFinite(d.lastArrival) ? { id, heardAt: Math.round(wall - (mono - d.lastArrival)), ...rest } : { id, ...rest };
      },
    }));
  }

  /**
   * Takes back a device as saved, as the most recently heard from (restore them in the order
   * devicesState gave). Its arrival is when it was last heard from (`heardAt`, on the wall clock),
   * put on this process's clock: a device silent since long before the restart is idle as soon as
   * its deviceIdleMs have passed, not deviceIdleMs after the restart. Never in the future (a wall
   * clock stepped back across the restart: heard from now), never before the device restored
   * before it (the map's order stays the order of arrival), and now for a state saved without it.
   * The reason it was not taken (it does not fit the parameters, it is tracked already, or
   * maxDevices are), else undefined.
   */
  restoreDevice(state: DeviceState): string | undefined {
    const problem = deviceStateProblem(state, this.params);
    if (problem !== undefined) return problem;
    if (this.devices.has(state.id)) return 'the device is tracked already';
    if (this.devices.size >= this.params.maxDevices) return 'maxDevices are tracked';
    const d = DeviceModel.fromState(state, this.params);
    const now = this.now();
    if (state.heardAt === undefined) d.lastArrival = now;
    else {
      const silentFor = Math.max(0, this.wallClock() - state.heardAt);
      d.lastArrival = Math.max(now - silentFor, this.latestArrival);
    }
    this.latestArrival = d.lastArrival;
    this.devices.set(state.id, d);
    return undefined;
  }

  stats(): AnomalyScorerStats {
    return { ...this.counters, devices: this.devices.size };
  }

  /** bytes held in typed arrays by every device (object overhead aside) */
  get bytes(): number {
    let b = 0;
    for (const d of this.devices.values()) b += d.bytes;
    return b;
  }

  /** whether a device's forest is trained yet (undefined for a device not tracked) */
  forestReady(device: string): boolean | undefined {
    return this.devices.get(device)?.forestReady;
  }

  /** The scorer's clock, held from going back: the map's order stays the order of lastArrival. */
  private now(): number {
    const t = this.clock();
    if (t > this.clockMs) this.clockMs = t;
    return this.clockMs;
  }

  private admit(id: string, now: number): DeviceModel | undefined {
    if (this.devices.size >= this.params.maxDevices) {
      // The least recently heard from device gives its place only if it has been idle long enough;
      // a fleet larger than maxDevices keeps the devices it has rather than thrash.
      const first = this.devices.entries().next();
      if (first.done) return undefined;
      const [oldId, old] = first.value;
      if (!(now - old.lastArrival >= this.params.deviceIdleMs)) {
        this.counters.devicesRefused++;
        return undefined;
      }
      this.devices.delete(oldId);
      this.counters.devicesEvicted++;
    }
    const d = new DeviceModel(id, this.params);
    this.devices.set(id, d);
    return d;
  }
}
