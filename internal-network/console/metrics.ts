import { collectedCounter } from '../../shared/metrics/collected.ts';
import { ServiceMetrics } from '../../shared/metrics/registry.ts';
import { STORED_FEED_REFUSALS, type StoredFeedRefusal } from '../shared/stored-feed.ts';
import type { AnomalyRunner } from './anomaly-runner.ts';
import type { Fleet } from './fleet/fleet.ts';
import { DEVICE_STATES, type DeviceState } from './fleet/types.ts';
import type { OwnPointsWriter } from './own-points.ts';

/**
 * Why the management API refused a request's authentication: no Authorization header, one that is
 * no credential, or none looked at because its address had too many of those (MANAGE_THROTTLED).
 */
export const MANAGE_AUTH_FAILURE_REASONS = ['missing', 'invalid', 'throttled'] as const;
export type ManageAuthFailures = Record<(typeof MANAGE_AUTH_FAILURE_REASONS)[number], number>;
export const noManageAuthFailures = (): ManageAuthFailures => ({ missing: 0, invalid: 0, throttled: 0 });

/** Stored-feed messages refused, by the code of the refusal (every one from 0, so alerts see the first). */
export type FeedRefusals = Record<StoredFeedRefusal, number>;
export const noFeedRefusals = (): FeedRefusals => Object.fromEntries(STORED_FEED_REFUSALS.map((code) => [code, 0])) as FeedRefusals;

/** What the console counts as it goes (the rest is read from its parts at scrape time). */
export interface ConsoleStats {
  /** stored-feed messages taken, and refused by code */
  feedMessages: number;
  feedRefused: FeedRefusals;
  /** points the distributors said they left out of the feed */
  feedDropped: number;
  /** management API requests refused before any route, by reason */
  manageAuthFailures: ManageAuthFailures;
}

/**
 * The console's metrics (docs/console.md): everything is read at scrape time from what it keeps
 * anyway, nothing is done per message. No device id as a label.
 */
export function consoleMetrics(
  o: { fleet: Fleet; stats: ConsoleStats; runner: AnomalyRunner | undefined; own: OwnPointsWriter; streams: () => number; brokerConnected: () => boolean },
  options: { processMetrics?: boolean } = {},
): ServiceMetrics {
  const m = new ServiceMetrics('console', options);
  const { fleet, stats, runner, own } = o;
  m.gauge('broker_connected', 'Whether the console is connected to the internal broker (1) or not (0).', [], function () {
    this.set(o.brokerConnected() ? 1 : 0);
  });
  m.gauge('console_devices', 'Devices the console tracks, by state.', ['state'], function () {
    const counts = Object.fromEntries(DEVICE_STATES.map((s) => [s, 0])) as Record<DeviceState, number>;
    for (const r of fleet.rows()) counts[r.state]++;
    for (const s of DEVICE_STATES) this.set({ state: s }, counts[s]);
  });
  m.gauge('console_pending_presences', 'Presences of devices the console has no row for yet, kept to be applied once the registry lists them (at most CONSOLE.maxPendingPresences, each for CONSOLE.pendingPresenceMaxAgeMs).', [], function () {
    this.set(fleet.pending.size);
  });
  m.gauge('console_live_streams', 'Browser pages with a live stream open.', [], function () {
    this.set(o.streams());
  });
  m.gauge('console_anomaly_queue_readings', 'Readings waiting to be scored for anomalies.', [], function () {
    this.set(runner?.pending ?? 0);
  });
  m.gauge('console_anomaly_devices', "Devices scored for anomalies (at most the scorer's maxDevices, 10,000 by default).", [], function () {
    this.set(runner?.devices ?? 0);
  });
  collectedCounter(m, 'console_feed_messages_total', 'Stored-feed messages taken from the internal broker.', [], () => stats.feedMessages);
  collectedCounter(
    m,
    'console_feed_refused_total',
    'Stored-feed messages refused, by error code: STORED_FEED_UNAUTHENTICATED (no valid MAC: forged, e.g. through the bridge, or another key), STORED_FEED_STALE, STORED_FEED_REPLAYED, STORED_FEED_INVALID, STORED_FEED_TOO_LARGE.',
    ['reason'],
    () => STORED_FEED_REFUSALS.map((reason) => [{ reason }, stats.feedRefused[reason]] as const),
  );
  collectedCounter(m, 'console_feed_dropped_points_total', 'Points the distributors reported leaving out of the stored feed.', [], () => stats.feedDropped);
  collectedCounter(m, 'console_manage_auth_failures_total', 'Management API requests refused for their bearer token, by reason: missing, invalid, throttled (MANAGE_THROTTLED: refused unchecked).', ['reason'], () =>
    MANAGE_AUTH_FAILURE_REASONS.map((reason) => [{ reason }, stats.manageAuthFailures[reason]] as const),
  );
  collectedCounter(m, 'console_untracked_devices_total', 'Devices not tracked because the console tracks as many as it may (CONSOLE.maxDevices registered, CONSOLE.maxUnregisteredDevices others).', [], () => fleet.untracked);
  collectedCounter(m, 'console_unregistered_points_total', 'Presences and security events naming a device neither registered nor seen in verified data: no fleet row made for it.', [], () => fleet.unregistered);
  collectedCounter(m, 'console_readings_scored_total', 'Readings scored for anomalies.', [], () => runner?.scored ?? 0);
  collectedCounter(m, 'console_readings_unscored_total', 'Readings not scored because the scorer holds as many devices as it may (maxDevices, 10,000 by default) and none has been idle for an hour: their devices have no anomaly detection.', [], () => runner?.unscored ?? 0);
  collectedCounter(m, 'console_readings_skipped_total', 'Readings not scored because scoring was behind (CONSOLE.anomalyQueueMax readings, or anomalyQueueMaxValues values, were waiting).', [], () => runner?.skipped ?? 0);
  // Every one found, not the fleet list's sequence: that list takes a device's first few a minute only.
  collectedCounter(m, 'console_anomalies_total', 'Anomalies found (every one; the fleet-wide list shows at most CONSOLE.fleetAnomaliesPerDevicePerMinute of a device a minute).', [], () => fleet.anomaliesFound);
  collectedCounter(m, 'console_points_written_total', "Points of the console's own (device states, anomalies) written to the time-series store.", [], () => own.written);
  collectedCounter(m, 'console_points_dropped_total', "Points of the console's own dropped while the store was down too long (CONSOLE.ownPointsMaxQueued).", [], () => own.dropped);
  collectedCounter(m, 'console_points_refused_total', "Points of the console's own the store refused for good (DISTRIBUTOR_WRITE_REJECTED), found by halving the refused batch, logged and dropped.", [], () => own.refused);
  return m;
}
