import type { Scalar } from '../../../shared/contract/primitives.ts';
import { CONSOLE, LIMITS } from '../../../shared/limits.ts';
import type { StoredPoint } from '../../distributor/points.ts';
import { Entries, type Entry } from './entries.ts';
import { GatewayEnds } from './gateway-ends.ts';
import { GatewayIndex } from './gateway-index.ts';
import { HeardOrder } from './heard-order.ts';
import type { ListingFilter } from './listing.ts';
import { PendingPresences } from './pending-presences.ts';
import { Ring } from './ring.ts';
import { newestFirst, SecurityLog } from './security-log.ts';
import type { Anomaly, DeviceEvent, DeviceRow, DeviceState, SecurityEvent, SecuritySummary, StateChange, TimedFields } from './types.ts';

export interface FleetOptions {
  /** milliseconds of silence after which a connected device is stale */
  staleAfterMs: number;
  now?: () => number;
  /** every change of a device's state, to be stored */
  onStateChange?: (change: StateChange) => void;
}

/**
 * The fleet as the console sees it, built from the points the distributor stored (the stored
 * feed: only what it verified) and the device registry. All in memory and bounded (CONSOLE).
 *
 * Who gets a row: a registered device (its signing key in the registry, token devices included:
 * `devices add --token` registers a signing key too; or on the revoked list), or one whose data
 * (readings, health, events, files, command responses) the distributor stored, which it does only
 * for messages that passed its checks. Not one merely named by a presence or a security event: those
 * come from the DMZ's gateways, or name whatever device a forged message claimed, so junk ids would
 * otherwise fill the fleet and push real devices out. (Such an id's last presence is kept, bounded,
 * and applied if it gets a row later: pending-presences.ts.)
 */
export class Fleet {
  /** the devices with a row, bounded, each change versioned and listed (entries.ts) */
  private readonly entries = new Entries((id) => this.rowMade(id));
  /** security events: the distributor's findings and the gateways' reports apart, counted */
  readonly security = new SecurityLog();
  readonly anomalies = new Ring<Anomaly>(CONSOLE.fleetRing);
  /** anomalies found, every one: the ring lists only a device's first few a minute (addAnomaly) */
  anomaliesFound = 0;
  /** the fleet-wide list's quota of the devices with no row, all together (see addAnomaly) */
  private readonly untrackedAnomalies = { count: 0, minuteAt: 0 };
  /** the devices each gateway holds connected: a gateway's presence looks at those only */
  readonly gateways = new GatewayIndex<Entry>();
  /** presences and security events naming a device with no row (neither registered nor seen in verified data): no row made */
  unregistered = 0;
  /** the last presence of ids with no row, applied if one is made for them (CONSOLE.maxPendingPresences) */
  readonly pending = new PendingPresences(CONSOLE.maxPendingPresences, CONSOLE.pendingPresenceMaxAgeMs);
  /** each gateway's last end, for a device presence through it older than that, coming after it */
  private readonly gatewayEnds = new GatewayEnds(CONSOLE.maxGatewayEnds);
  /** the online devices, the longest silent first: a sweep looks at those gone silent only */
  private readonly online: HeardOrder<Entry>;
  private readonly now: () => number;

  constructor(private readonly o: FleetOptions) {
    this.now = o.now ?? Date.now;
    // A device heard again is placed again at most once a sweep's interval (or a quarter of
    // staleAfterMs, if less): a silent one is then looked at by a few sweeps at most.
    this.online = new HeardOrder(Math.min(CONSOLE.staleSweepMs, o.staleAfterMs / 4));
  }

  /** devices not tracked: past CONSOLE.maxDevices (registered) or CONSOLE.maxUnregisteredDevices (the others) */
  get untracked(): number {
    return this.entries.untracked;
  }

  /** A device known to the internal network (its signing key is registered), heard of or not. */
  register(id: string): void {
    this.entries.entry(id, true);
  }

  /** The revoked list, as a whole: devices on it are flagged, the others no longer. */
  setRevoked(revoked: ReadonlySet<string>): void {
    for (const [id, e] of this.entries.all()) {
      const flag = revoked.has(id);
      if (e.row.revoked !== flag) this.entries.change(e, () => (e.row.revoked = flag));
    }
    // The revoked list is the internal network's own file (not the DMZ's word): its devices get rows.
    for (const id of revoked) {
      const e = this.entries.entry(id, true);
      if (e && !e.row.revoked) this.entries.change(e, () => (e.row.revoked = true));
    }
  }

  /** One point the distributor stored. */
  apply(p: StoredPoint): void {
    if (p.measurement === 'gateway_status') return this.gatewayPresence(p);
    const device = p.tags.device;
    if (device === undefined) return;
    switch (p.measurement) {
      case 'device_status':
        return this.presence(device, p);
      case 'readings':
        return this.reading(device, p);
      case 'device_health':
        return this.health(device, p);
      case 'security_events':
        return this.securityEvent(device, p);
      case 'events': {
        const e = this.heard(device);
        // Its type and severity are the point's tags: without them a page listed a message and never said what the event was.
        const { event_type: type, severity } = p.tags;
        if (e) this.entries.change(e, () => e.events.push({ time: p.time, fields: p.fields, ...(type !== undefined ? { type } : {}), ...(severity !== undefined ? { severity } : {}) }));
        return;
      }
      case 'files':
      case 'command_responses':
        this.heard(device);
        return;
      default:
        return; // the console's own measurements (device_state, anomalies), or a kind it does not show
    }
  }

  /**
   * An anomaly goes on its device's page, and into the fleet-wide list at most
   * CONSOLE.fleetAnomaliesPerDevicePerMinute times a minute per device: a faulty or compromised
   * device flagged on each of its fields at every reading (up to 32 a reading) would otherwise push
   * every other device's anomalies off the dashboard within seconds. Its page keeps them all (its own
   * ring), and every anomaly is stored as before. The devices with no row (the fleet full when their
   * data came: `untracked`) share one such quota: let in without any, one of them flagged at every
   * reading filled the list on its own.
   */
  addAnomaly(a: Anomaly): void {
    this.anomaliesFound++;
    const e = this.entries.get(a.device);
    const quota = e ? e.fleetAnomalies : this.untrackedAnomalies;
    const now = this.now();
    if (now - quota.minuteAt >= 60_000) {
      quota.minuteAt = now;
      quota.count = 0;
    }
    if (quota.count < CONSOLE.fleetAnomaliesPerDevicePerMinute) {
      quota.count++;
      this.anomalies.push(a);
    }
    if (e) this.entries.change(e, () => e.anomalies.push(a));
  }

  /** Connected devices silent for longer than staleAfterMs become stale: the online devices the
   * longest silent are looked at, up to the first heard within it (heard-order.ts), not the fleet. */
  sweep(): void {
    const now = this.now();
    this.pending.expire(now);
    this.online.sweep(now, this.o.staleAfterMs, (e) => this.setState(e, 'stale', now));
  }

  get size(): number {
    return this.entries.size;
  }

  get currentVersion(): number {
    return this.entries.currentVersion;
  }

  rows(): DeviceRow[] {
    return this.entries.rows();
  }

  /** the ids of the devices with a row */
  ids(): IterableIterator<string> {
    return this.entries.ids();
  }

  /** Up to `n` rows in id order after `after` that `filter` lets through (Entries.rowsPage). */
  rowsPage(n: number, after: string | undefined, filter: ListingFilter = {}): DeviceRow[] {
    return this.entries.rowsPage(n, after, filter);
  }

  /** Rows changed after `version`, and the version to ask from next time (Entries.changedSince). */
  changedSince(version: number): { rows: DeviceRow[]; version: number } {
    return this.entries.changedSince(version);
  }

  /** The version of one device's row (0: unknown device), to tell whether its page needs an update. */
  versionOf(id: string): number {
    return this.entries.versionOf(id);
  }

  /** A device's page. `totals`: how many events, security events and anomalies the device has had
   * since the console started, of which it keeps the newest only (its rings): the page says how
   * many it does not show. */
  detail(id: string): { row: DeviceRow; latest: TimedFields | null; health: TimedFields | null; events: DeviceEvent[]; security: SecurityEvent[]; anomalies: Anomaly[]; numericFields: string[]; totals: { events: number; security: number; anomalies: number } } | undefined {
    const e = this.entries.get(id);
    if (!e) return undefined;
    return {
      row: e.row,
      latest: e.row.lastReading,
      health: e.health,
      events: e.events.newest(CONSOLE.perDeviceRing),
      // Both sources, newest first, each event marked by its source: the gateways' reports kept
      // apart (their own ring) cannot push out the distributor's findings.
      security: newestFirst(e.security.newest(CONSOLE.perDeviceRing), e.reports.newest(CONSOLE.perDeviceGatewayReports)),
      anomalies: e.anomalies.newest(CONSOLE.perDeviceRing),
      numericFields: [...e.numericFields].sort(),
      totals: { events: e.events.seq, security: e.security.seq + e.reports.seq, anomalies: e.anomalies.seq },
    };
  }

  /** `topDevices`: of the per-device counts, those of the devices with most events only (SecurityLog.summary). */
  securitySummary(topDevices?: number): SecuritySummary {
    return this.security.summary(topDevices);
  }

  /**
   * A presence comes from the DMZ's gateway: it updates a device that has a row, and makes none. Of
   * a device with no row it is kept (bounded), and applied if the registry lists the device later:
   * the gateway publishes it once, when the device connects. `receivedAt`: when it arrived.
   */
  private presence(device: string, p: StoredPoint, receivedAt = this.now()): void {
    const e = this.known(device);
    const state = p.fields.state;
    if (!e) {
      if (state === 'online' || state === 'offline') this.pending.keep(device, p, receivedAt);
      return;
    }
    if (p.time < e.presenceAt) return; // an older presence arriving late changes nothing
    if (state !== 'online' && state !== 'offline') return;
    // With several DMZ servers a device that moved is held by another gateway now: the end of its
    // session on the gateway it left (that server's late "offline", or the one it publishes when it
    // comes back) says nothing of the device (docs/deployment.md, "More than one DMZ server").
    if (state === 'offline' && p.tags.gateway !== undefined && e.row.gateway !== null && p.tags.gateway !== e.row.gateway && (e.row.state === 'online' || e.row.state === 'stale')) return;
    const gateway = p.tags.gateway ?? e.row.gateway;
    // Its gateway ended after it (that status came first): offline, as that status would have made it.
    const ended = state === 'online' ? this.gatewayEnds.after(gateway, p.time) : undefined;
    e.presenceAt = ended ? ended.before : p.time;
    const cert = p.fields.cert_days_left;
    this.entries.change(e, () => {
      if (typeof cert === 'number') e.row.certDaysLeft = cert;
      e.row.gateway = gateway;
    });
    this.reindex(e);
    if (ended) return this.setState(e, 'offline', ended.time);
    if (state === 'online') e.heardAt = Math.max(e.heardAt, receivedAt);
    this.setState(e, state, p.time);
    if (state === 'online') {
      this.online.heard(e);
      this.entries.change(e, () => (e.row.lastSeen = Math.max(e.row.lastSeen ?? 0, receivedAt)));
    }
  }

  /**
   * A gateway gone (its will, or its clean stop): the devices it held are offline, unless they have
   * been heard of through another gateway since. A presence of the device newer than this still
   * wins, as always. A gateway (re)started (`online`, `since` its start) holds none of the devices
   * it held before: those it was last seen holding before `since` are offline too — a DMZ server
   * killed whole sends no will, and its broker may bring back its old "online" statuses.
   */
  private gatewayPresence(p: StoredPoint): void {
    const end = this.gatewayEnds.add(p); // kept (gateway-ends.ts) for presences through it arriving later
    if (end === undefined) return;
    const { gateway, before } = end;
    this.pending.forgetGateway(gateway, before);
    // Only the devices this gateway holds connected (the index), not the whole fleet.
    this.gateways.takeOlder(gateway, before, (e) => {
      e.presenceAt = before;
      this.setState(e, 'offline', p.time);
    });
  }

  private reading(device: string, p: StoredPoint): void {
    const e = this.heard(device);
    if (!e) return;
    // As many as a reading may hold: each is a chart and a history read on the device's page.
    for (const [k, v] of Object.entries(p.fields)) if (typeof v === 'number' && (e.numericFields.size < LIMITS.readingMaxFields || e.numericFields.has(k))) e.numericFields.add(k);
    if (e.row.lastReading === null || this.supersedes(p.time, e.row.lastReading.time)) this.entries.change(e, () => (e.row.lastReading = { time: p.time, fields: p.fields }));
  }

  private health(device: string, p: StoredPoint): void {
    const e = this.heard(device);
    if (!e || (e.health !== null && !this.supersedes(p.time, e.health.time))) return;
    const num = (v: Scalar | undefined) => (typeof v === 'number' ? v : null);
    this.entries.change(e, () => {
      e.health = { time: p.time, fields: p.fields };
      e.row.backlog = num(p.fields.queue_messages);
      e.row.certDaysLeft = num(p.fields.cert_days_left) ?? e.row.certDaysLeft;
    });
  }

  private securityEvent(device: string, p: StoredPoint): void {
    const reason = p.tags.reason ?? 'unknown';
    // A gateway's report counts several refusals in one point; the distributor's own is one each.
    const count = typeof p.fields.count === 'number' && p.fields.count >= 1 ? p.fields.count : 1;
    const ev: SecurityEvent = { time: p.time, device, reason, ...(count > 1 ? { count } : {}), ...(p.tags.source === 'gateway' ? { source: 'gateway' as const } : {}) };
    // A refused message is not a sign of life (it may be a forgery), only a mark on the device, if
    // it has a row: the id it names may be anything a forger chose, and makes none. Shown fleet-wide
    // all the same (what was refused, and why, is the distributor's finding).
    const e = this.known(device);
    this.security.add(ev, e !== undefined);
    if (e) this.entries.change(e, () => (ev.source === 'gateway' ? e.reports : e.security).push(ev));
  }

  /**
   * Data or health from the device: it is alive; a stale or never-seen device is online again. The
   * distributor stores these only for messages that passed its checks (the device's signature
   * against its registered key), so the device is real: it gets a row if it has none yet.
   */
  private heard(device: string): Entry | undefined {
    const e = this.entries.entry(device, false);
    if (!e) return undefined;
    const now = this.now();
    e.heardAt = now;
    this.entries.change(e, () => (e.row.lastSeen = now));
    if (e.row.state === 'stale' || e.row.state === 'unknown') this.setState(e, 'online', now);
    else this.online.heard(e); // placed again only now and then: a compare at most readings
    return e;
  }

  /**
   * Whether a device's reading or health dated `time` replaces the one stored, dated `stored`: a
   * newer one does, an older one (late, from a backlog) does not, unless the stored one is dated
   * past the console's clock by more than CONSOLE.deviceClockMaxLeadMs. The dates are the device's
   * clock, which may be wrong: one glitch dated years ahead would otherwise outrank every correct
   * message after it, the row showing it until the console restarted.
   */
  private supersedes(time: number, stored: number): boolean {
    return time >= stored || stored > this.now() + CONSOLE.deviceClockMaxLeadMs;
  }

  private setState(e: Entry, state: DeviceState, time: number): void {
    const previous = e.row.state;
    if (previous === state) return;
    this.entries.change(e, () => {
      e.row.state = state;
      e.row.since = time;
    });
    this.reindex(e);
    if (state === 'online') this.online.place(e);
    else if (previous === 'online') this.online.remove(e);
    this.o.onStateChange?.({ device: e.row.id, state, previous, time });
  }

  /** Keeps the gateway index right after a change of the row's state or gateway. */
  private reindex(e: Entry): void {
    const connected = e.row.state === 'online' || e.row.state === 'stale';
    this.gateways.place(e, connected ? e.row.gateway : null);
  }

  /** The row of a device that has one; a point naming any other is counted, and makes none. */
  private known(id: string): Entry | undefined {
    const e = this.entries.get(id);
    if (!e) this.unregistered++;
    return e;
  }

  /** A row just made: its presence from before it had a row (registered a moment before it
   * connected), applied as it would have been then. */
  private rowMade(id: string): void {
    const held = this.pending.take(id, this.now());
    if (held) this.presence(id, held.point, held.receivedAt);
  }
}
