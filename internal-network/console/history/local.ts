import { join } from 'node:path';
import { CONSOLE, DAY_MS } from '../../../shared/limits.ts';
import { MEASUREMENTS, type StoredPoint } from '../../distributor/points.ts';
import { dayFiles, scanDayFile, scanLocalStore } from '../../distributor/sinks/local-store.ts';
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

  /**
   * The last presence of each (device, gateway) pair and (gateway, state) from `fromMs` on, as the
   * database readers answer (presences.ts), within the same bounds, the `known` devices' pairs kept
   * apart from the others' so that these cannot take their places; of one time, the later line.
   *
   * Not every line of the window: the distributor dates a presence no later than its arrival
   * (message-handler.ts), so each is in the file of the day it came or of a later one
   * (CONSOLE.lastPresenceWriteSlackMs aside). Files are read newest first, a file whose day ended
   * before the window not at all; after each, every line left is older than its day. Once each
   * known device has a pair whose last presence is `online` through a gateway and no older than
   * that, the lines left change nothing of the known devices' states: the device is online through
   * that gateway whatever came before, and all that came after has been read. The read stops there;
   * ids without a row (kept as pending presences, bounded anyway) are those of the files read. Lines
   * that cannot be a presence are not parsed.
   */
  async lastPresences(fromMs: number, known: ReadonlySet<string>, maxPairs: number = CONSOLE.lastPresenceMaxPairs): Promise<LastPresences> {
    // Each key's point, and the file it was read from (0 the newest).
    const theirs = new Map<string, { p: StoredPoint; file: number }>();
    const others = new Map<string, { p: StoredPoint; file: number }>();
    const gateways = new Map<string, { p: StoredPoint; file: number }>();
    const keep = (into: typeof theirs, key: string, p: StoredPoint, file: number, max: number) => {
      const held = into.get(key);
      // Of one time, the later line: further down its file, or in a newer file (read before it).
      if (held ? p.time > held.p.time || (p.time === held.p.time && file === held.file) : into.size < max) into.set(key, { p, file });
    };
    // The known devices online through a gateway as of `after` or later: nothing older can change them.
    const settled = (after: number) => {
      const online = new Set<string>();
      for (const { p } of theirs.values()) if (p.fields.state === 'online' && p.tags.gateway !== undefined && p.time >= after) online.add(p.tags.device as string);
      return online.size === known.size;
    };
    const files = dayFiles(this.dir).reverse();
    for (let n = 0; n < files.length; n++) {
      const file = files[n] as string;
      const dayStart = Date.parse(`${file.slice(0, 10)}T00:00:00Z`);
      if (dayStart + DAY_MS + CONSOLE.lastPresenceWriteSlackMs <= fromMs) break;
      for await (const p of scanDayFile(join(this.dir, file), mayBePresence)) {
        if (p.time < fromMs || (p.fields.state !== 'online' && p.fields.state !== 'offline')) continue;
        if (p.measurement === MEASUREMENTS.status && p.tags.device !== undefined) keep(known.has(p.tags.device) ? theirs : others, JSON.stringify([p.tags.device, p.tags.gateway ?? '']), p, n, maxPairs);
        else if (p.measurement === MEASUREMENTS.gatewayStatus && p.tags.gateway !== undefined) keep(gateways, JSON.stringify([p.tags.gateway, p.fields.state]), p, n, 2 * CONSOLE.lastPresenceMaxGateways);
      }
      // With no device known, none tells when to stop: every file of the window is read.
      if (known.size > 0 && settled(dayStart + CONSOLE.lastPresenceWriteSlackMs)) break;
    }
    const points = (m: typeof theirs) => Array.from(m.values(), (h) => h.p);
    return { devices: knownFirst([...points(theirs), ...points(others)], known, maxPairs), gateways: points(gateways) };
  }
}

/** A line that may hold a presence: its measurement, `device_status` or `gateway_status`, is in it as written (others are not parsed). */
const mayBePresence = (line: string) => line.includes('_status"');
