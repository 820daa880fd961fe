import { CONSOLE } from '../../../shared/limits.ts';
import { ChangeCounts } from './counts.ts';
import { Ring } from './ring.ts';
import type { SecurityEvent, SecuritySummary, SecurityUpdate } from './types.ts';

/** Where a live stream is in the security log: what it has been sent. */
export interface SecurityCursor {
  own: number;
  reported: number;
  reasons: number;
  devices: number;
}

/** Newest first, both kinds together (each event says its source). */
export const newestFirst = (a: SecurityEvent[], b: SecurityEvent[]): SecurityEvent[] => [...a, ...b].sort((x, y) => y.time - x.time);

/**
 * The fleet's security events: the distributor's own findings (a signature that failed, a replay:
 * what it refused itself) and the gateways' reports (what a gateway in the DMZ says it refused,
 * counted; the DMZ may be compromised, so it is its word only) in rings of their own. A flood of
 * forged gateway reports pushes out older gateway reports, never a finding of the distributor's.
 * Both are counted per reason and per device (the device only when it is tracked: the caller says),
 * with the changes since a stream's last look at hand.
 */
export class SecurityLog {
  readonly own = new Ring<SecurityEvent>(CONSOLE.fleetRing);
  readonly reported = new Ring<SecurityEvent>(CONSOLE.gatewayReportsRing);
  readonly byReason = new ChangeCounts();
  readonly byDevice = new ChangeCounts();

  /** One event; `tracked`: its device has a fleet row (so the per-device counts stay bounded). */
  add(ev: SecurityEvent, tracked: boolean): void {
    (ev.source === 'gateway' ? this.reported : this.own).push(ev);
    const count = ev.count ?? 1;
    this.byReason.add(ev.reason, count);
    if (tracked) this.byDevice.add(ev.device, count);
  }

  /**
   * The picture, for a snapshot: the newest of each kind, every count per reason (there are a few),
   * and per device every count, or with `topDevices` those of the devices with most events only
   * (`devices` says how many have any): under an attack across 100,000 devices, every count was
   * megabytes in one event.
   */
  summary(topDevices?: number): SecuritySummary {
    return {
      recent: this.own.newest(CONSOLE.snapshotRecent),
      reported: this.reported.newest(CONSOLE.snapshotRecent),
      byReason: this.byReason.all(),
      byDevice: topDevices === undefined ? this.byDevice.all() : Object.fromEntries(this.byDevice.top(topDevices)),
      devices: this.byDevice.size,
      recentTotal: this.own.seq,
      reportedTotal: this.reported.seq,
    };
  }

  cursor(): SecurityCursor {
    return { own: this.own.seq, reported: this.reported.seq, reasons: this.byReason.seq, devices: this.byDevice.seq };
  }

  /**
   * What came after `cursor` (undefined: nothing): the new events of both kinds (at most a ring of
   * each) and the counts that changed, each as its new total. Bounded by the rings and the keys
   * counted, whatever the fleet's size.
   */
  since(cursor: SecurityCursor): SecurityUpdate | undefined {
    if (cursor.own === this.own.seq && cursor.reported === this.reported.seq && cursor.reasons === this.byReason.seq && cursor.devices === this.byDevice.seq) return undefined;
    return {
      events: newestFirst(this.own.since(cursor.own), this.reported.since(cursor.reported)),
      byReason: this.byReason.changedSince(cursor.reasons),
      byDevice: this.byDevice.changedSince(cursor.devices),
      devices: this.byDevice.size,
      recentTotal: this.own.seq,
      reportedTotal: this.reported.seq,
    };
  }
}
