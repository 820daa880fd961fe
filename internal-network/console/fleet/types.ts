import type { Scalar } from '../../../shared/contract/primitives.ts';

/**
 * What the console tells a browser about the fleet (docs/console.md, "Live updates"). These are
 * the console's own outputs: what it reads (the stored feed, the stores, the command API) is
 * checked with zod where it comes in.
 */

/**
 * online: connected (its gateway said so) and heard from recently; stale: connected, but nothing
 * heard for CONSOLE_STALE_AFTER_S; offline: its connection closed; unknown: not heard of since
 * the console started (a registered device that never connected, or one that stays silent).
 */
export const DEVICE_STATES = ['online', 'stale', 'offline', 'unknown'] as const;
export type DeviceState = (typeof DEVICE_STATES)[number];

export interface TimedFields {
  /** epoch ms: the reading's (or health message's) own time */
  time: number;
  fields: Record<string, Scalar>;
}

/**
 * An event of the device's: its fields (its message and whatever else it sent), and what the
 * distributor stores as the event's tags, its type (`event_type`) and severity: what the device
 * called the event, which a list of its fields alone left out.
 */
export interface DeviceEvent extends TimedFields {
  type?: string;
  severity?: string;
}

export interface DeviceRow {
  id: string;
  state: DeviceState;
  /** epoch ms the state began (null: unknown since start) */
  since: number | null;
  /** epoch ms the console last heard from the device (data, health or presence) */
  lastSeen: number | null;
  lastReading: TimedFields | null;
  /** messages in the device's queue, from its last health message */
  backlog: number | null;
  certDaysLeft: number | null;
  revoked: boolean;
  gateway: string | null;
}

export interface SecurityEvent {
  time: number;
  device: string;
  reason: string;
  /** refusals this event stands for (a gateway reports them counted; absent: one) */
  count?: number;
  /** 'gateway': reported by a gateway in the DMZ (its word); absent: found by the distributor */
  source?: 'gateway';
}

/** The whole picture of the fleet's security events (a live stream's snapshot). */
export interface SecuritySummary {
  /** the distributor's own findings, newest first */
  recent: SecurityEvent[];
  /** the gateways' reports (source: 'gateway'), newest first: kept apart, so they cannot push out `recent` */
  reported: SecurityEvent[];
  /** events (refusals) per reason and per tracked device, both sources together; in a live stream's
   * snapshot in parts, those of the devices with most events only (CONSOLE.liveSecurityTopDevices) */
  byReason: Record<string, number>;
  byDevice: Record<string, number>;
  /** how many tracked devices have events (byDevice may name fewer) */
  devices: number;
  /** events of each source since the console started (`recent`'s, `reported`'s): a page holds the
   * newest only, and says how many more there were */
  recentTotal: number;
  reportedTotal: number;
}

/**
 * What changed since a live stream's last look (its `security` event): the new events of both
 * sources, newest first, and only the counts that changed, each as its new total (a browser sets
 * them over what it holds).
 */
export interface SecurityUpdate {
  events: SecurityEvent[];
  byReason: Record<string, number>;
  byDevice: Record<string, number>;
  /** how many tracked devices have events now */
  devices: number;
  /** events of each source since the console started, now (SecuritySummary) */
  recentTotal: number;
  reportedTotal: number;
}

export interface Anomaly {
  time: number;
  device: string;
  /** the field, or '*' when several fields together are anomalous */
  field: string;
  detector: string;
  score: number;
  value?: number;
  /** what it looks like: spike, stuck, drift, correlation (docs/anomaly-detection.md) */
  kind?: string;
  /** the forest's hint: the field or pair of fields furthest out */
  fields?: string[];
}

export interface StateChange {
  device: string;
  state: DeviceState;
  previous: DeviceState;
  time: number;
}
