import { CONSOLE } from '../../../shared/limits.ts';
import { ChangeLog } from './counts.ts';
import { DeviceListing, type ListingFilter } from './listing.ts';
import { Ring } from './ring.ts';
import type { Anomaly, DeviceEvent, DeviceRow, SecurityEvent, TimedFields } from './types.ts';

/** What the console holds of one device with a row. */
export interface Entry {
  row: DeviceRow;
  /** the global version at the row's last change: a browser gets the rows changed since its last look */
  version: number;
  /** epoch ms (the console's clock) of the last sign of life: what staleness is measured from */
  heardAt: number;
  /** its place among the online devices (heard-order.ts; NaN: not online) */
  placedAt: number;
  /** epoch ms (the gateway's) of the presence the state comes from, so a late, older one is ignored */
  presenceAt: number;
  health: TimedFields | null;
  events: Ring<DeviceEvent>;
  /** the distributor's own findings about the device */
  security: Ring<SecurityEvent>;
  /** the gateways' reports about it (the DMZ's word), apart, so they cannot push out `security` */
  reports: Ring<SecurityEvent>;
  anomalies: Ring<Anomaly>;
  /** its anomalies let into the fleet-wide list in the current minute, and the minute's start (see Fleet.addAnomaly) */
  fleetAnomalies: { count: number; minuteAt: number };
  numericFields: Set<string>;
  /** in the device registry (or the revoked list); false: known only from data the distributor verified */
  registered: boolean;
}

/**
 * The fleet's entries (fleet.ts): made within their bounds, every change of a row versioned and
 * placed in the listing, and the rows read back by page or by change. Which device gets a row, and
 * what the stored points change in it, is the Fleet's.
 */
export class Entries {
  private readonly devices = new Map<string, Entry>();
  /** the devices' ids in order, all and by state and revoked flag, for the management API's pages (rowsPage) */
  private readonly listing = new DeviceListing();
  /** rows of devices not (yet) in the registry, bounded on their own (CONSOLE.maxUnregisteredDevices) */
  private unregisteredRows = 0;
  /** which rows changed, in order (the version is its sequence number): a live stream asks it every
   * second which rows changed since its last look, and a scan of every row instead was, for 200
   * streams and 100,000 devices, 20 million checks a second */
  private readonly log = new ChangeLog(() => this.devices.size);
  /** devices not tracked: past CONSOLE.maxDevices (registered) or CONSOLE.maxUnregisteredDevices (the others) */
  untracked = 0;

  /** `made`: called with each new entry's id once it is in place */
  constructor(private readonly made: (id: string) => void) {}

  get(id: string): Entry | undefined {
    return this.devices.get(id);
  }

  all(): IterableIterator<[string, Entry]> {
    return this.devices.entries();
  }

  values(): IterableIterator<Entry> {
    return this.devices.values();
  }

  get size(): number {
    return this.devices.size;
  }

  get currentVersion(): number {
    return this.log.seq;
  }

  rows(): DeviceRow[] {
    return [...this.devices.values()].map((e) => e.row);
  }

  /** the ids of the devices with a row */
  ids(): IterableIterator<string> {
    return this.devices.keys();
  }

  /** Up to `n` rows of the devices after `after` (from the first if undefined) that `filter` lets
   * through, in id order: a page costs a search and the rows it holds, not a sort of the fleet, nor
   * a look at the rows a filter leaves out. */
  rowsPage(n: number, after: string | undefined, filter: ListingFilter = {}): DeviceRow[] {
    const rows: DeviceRow[] = [];
    for (const id of this.listing.first(n, after, filter)) {
      const e = this.devices.get(id);
      if (e) rows.push(e.row);
    }
    return rows;
  }

  /** Rows changed after `version`, and the version to ask from next time: from the change log,
   * so the cost is that of the rows changed, not of the fleet. */
  changedSince(version: number): { rows: DeviceRow[]; version: number } {
    const rows: DeviceRow[] = [];
    for (const id of this.log.changedSince(version)) {
      const e = this.devices.get(id);
      if (e) rows.push(e.row);
    }
    return { rows, version: this.log.seq };
  }

  /** The version of one device's row (0: unknown device), to tell whether its page needs an update. */
  versionOf(id: string): number {
    return this.devices.get(id)?.version ?? 0;
  }

  /** Every change of a row goes through here: its place in the listing follows its state and flag
   * (nothing to do, and no cost but a look-up, when neither changed). */
  change(e: Entry, apply: () => void): void {
    apply();
    e.version = this.log.add(e.row.id);
    this.listing.place(e.row);
  }

  /**
   * The row of a device, made if need be: `registered` (the registry, the revoked list) or known
   * from verified data. Each kind has its own bound, so devices outside the registry can never take
   * the room of registered ones; a row of the second kind becomes registered when the registry lists
   * it (so the rows stay within CONSOLE.maxDevices + CONSOLE.maxUnregisteredDevices).
   */
  entry(id: string, registered: boolean): Entry | undefined {
    const found = this.devices.get(id);
    if (found) {
      if (registered && !found.registered) {
        found.registered = true;
        this.unregisteredRows--;
      }
      return found;
    }
    const full = registered ? this.devices.size - this.unregisteredRows >= CONSOLE.maxDevices : this.unregisteredRows >= CONSOLE.maxUnregisteredDevices;
    if (full) {
      this.untracked++;
      return undefined;
    }
    if (!registered) this.unregisteredRows++;
    const e: Entry = {
      row: { id, state: 'unknown', since: null, lastSeen: null, lastReading: null, backlog: null, certDaysLeft: null, revoked: false, gateway: null },
      version: 0,
      heardAt: 0,
      placedAt: NaN,
      presenceAt: 0,
      health: null,
      events: new Ring(CONSOLE.perDeviceRing),
      security: new Ring(CONSOLE.perDeviceRing),
      reports: new Ring(CONSOLE.perDeviceGatewayReports),
      anomalies: new Ring(CONSOLE.perDeviceRing),
      fleetAnomalies: { count: 0, minuteAt: 0 },
      numericFields: new Set(),
      registered,
    };
    this.devices.set(id, e);
    this.listing.place(e.row);
    e.version = this.log.add(id);
    this.made(id);
    return e;
  }
}
