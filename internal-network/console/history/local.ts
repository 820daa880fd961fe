import { CONSOLE } from '../../../shared/limits.ts';
import { MEASUREMENTS, type StoredPoint } from '../../distributor/points.ts';
import { scanLocalStore } from '../../distributor/sinks/local-store.ts';
import { downsample, type HistoryReader, type Series } from './history.ts';
import { knownFirst, type LastPresences } from './presences.ts';

/** History from the local store of `npm start` (TIMESERIES_LOCAL_PATH): the day files of the window, a day either side. */
export class LocalHistory implements HistoryReader {
  readonly description: string;

  constructor(private readonly dir: string) {
    this.description = `local store ${dir}`;
  }

  async series(device: string, field: string, fromMs: number, toMs: number): Promise<Series> {
    // A redelivered message appended its points again: one value per time, as InfluxDB keeps it.
    const byTime = new Map<number, number>();
    for await (const p of scanLocalStore(this.dir, fromMs)) {
      if (p.measurement !== 'readings' || p.tags.device !== device || p.time < fromMs || p.time > toMs) continue;
      const v = p.fields[field];
      if (typeof v === 'number') byTime.set(p.time, v);
    }
    return downsample([...byTime], fromMs, toMs);
  }

  /** The last presence of each (device, gateway) pair and (gateway, state) from `fromMs` on, as the
   * database readers answer (presences.ts), within the same bounds, the `known` devices' pairs kept
   * apart from the others' so that these cannot take their places; of one time, the later line. */
  async lastPresences(fromMs: number, known: ReadonlySet<string>, maxPairs: number = CONSOLE.lastPresenceMaxPairs): Promise<LastPresences> {
    const theirs = new Map<string, StoredPoint>();
    const others = new Map<string, StoredPoint>();
    const gateways = new Map<string, StoredPoint>();
    const keep = (into: Map<string, StoredPoint>, key: string, p: StoredPoint, max: number) => {
      const held = into.get(key);
      if (held ? p.time >= held.time : into.size < max) into.set(key, p);
    };
    for await (const p of scanLocalStore(this.dir, fromMs)) {
      if (p.time < fromMs || (p.fields.state !== 'online' && p.fields.state !== 'offline')) continue;
      if (p.measurement === MEASUREMENTS.status && p.tags.device !== undefined) keep(known.has(p.tags.device) ? theirs : others, JSON.stringify([p.tags.device, p.tags.gateway ?? '']), p, maxPairs);
      else if (p.measurement === MEASUREMENTS.gatewayStatus && p.tags.gateway !== undefined) keep(gateways, JSON.stringify([p.tags.gateway, p.fields.state]), p, 2 * CONSOLE.lastPresenceMaxGateways);
    }
    return { devices: knownFirst([...theirs.values(), ...others.values()], known, maxPairs), gateways: [...gateways.values()] };
  }
}
