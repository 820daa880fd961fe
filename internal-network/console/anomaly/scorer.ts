import { DeviceModel, type DeviceCounters } from './device.ts';
import { anomalyParams, type AnomalyParams } from './params.ts';
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

/**
 * The one entry point: `score` takes a device's reading and returns what is anomalous in it (often
 * nothing). Pure computation over the state it keeps: no I/O, no clock (time is the readings'
 * own), no randomness but its seed; memory bounded by its parameters (params.ts).
 *
 * Detectors (docs/anomaly-detection.md): 'mad', a spike in one field against its rolling median
 * and MAD; 'stuck', a lively field repeating one value; 'iforest', the device's fields together
 * unusual for its Isolation Forest (a broken correlation, a slow drift).
 */
export class AnomalyScorer {
  readonly params: Readonly<AnomalyParams>;
  /** In order of last reading: the first entry is the least recently seen. */
  private readonly devices = new Map<string, DeviceModel>();
  private readonly counters: AnomalyScorerStats = {
    devices: 0,
    readings: 0,
    devicesRefused: 0,
    devicesEvicted: 0,
    fieldsRefused: 0,
    valuesIgnored: 0,
    forestsTrained: 0,
  };

  constructor(params: Partial<AnomalyParams> = {}) {
    this.params = anomalyParams(params);
  }

  score(reading: ScoredReading): Anomaly[] {
    const out: Anomaly[] = [];
    let d = this.devices.get(reading.device);
    if (d === undefined) {
      d = this.admit(reading.device, reading.time);
      if (d === undefined) return out;
    } else {
      // Move to the end: the map's order is the order of last reading.
      this.devices.delete(reading.device);
      this.devices.set(reading.device, d);
    }
    if (reading.time > d.lastSeen) d.lastSeen = reading.time;
    this.counters.readings++;
    d.score(reading.time, reading.fields, out, this.counters);
    return out;
  }

  /** Forgets a device (e.g. one removed from the fleet); true if it was tracked. */
  forget(device: string): boolean {
    return this.devices.delete(device);
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

  private admit(id: string, time: number): DeviceModel | undefined {
    if (this.devices.size >= this.params.maxDevices) {
      // The least recently seen device gives its place only if it has been idle long enough; a
      // fleet larger than maxDevices keeps the devices it has rather than thrash.
      const first = this.devices.entries().next();
      if (first.done) return undefined;
      const [oldId, old] = first.value;
      if (!(time - old.lastSeen >= this.params.deviceIdleMs)) {
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
