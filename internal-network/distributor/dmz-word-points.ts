import { z } from 'zod';
import { parseEnvelope, StatusEnvelopeSchema, type GatewayPresence, type GatewaySecurityReport, type StatusEnvelope } from '../../shared/contract/envelope.ts';
import { LIMITS } from '../../shared/limits.ts';
import type { Scalar } from '../../shared/contract/primitives.ts';
import { daysUntil } from '../../shared/tls-files.ts';
import { MEASUREMENTS, POINT_KEY, type StoredPoint } from './points.ts';
import { UNREGISTERED_DEVICE } from './security/refusal-tally.ts';

/**
 * What only the DMZ says, as the points stored of it: a device's presence, a gateway's presence, a
 * gateway's counts of the refusals it made. Nothing here is signed by a device; the message handler
 * decides first whether it may be stored at all (gateway admission, registered ids).
 */

/** A device's presence (connected, disconnected) as its gateway announced it. */
export function devicePresencePoint(deviceId: string, status: StatusEnvelope, arrived: number): StoredPoint {
  // cert_not_after (epoch ms) lets a dashboard count the certificates about to expire as of any
  // time; cert_days_left is as of the presence.
  const cert: Record<string, number> =
    status.certNotAfter !== undefined ? { cert_not_after: status.certNotAfter, cert_days_left: daysUntil(status.certNotAfter, status.at) } : {};
  // The DMZ's word for when: never later than now, or a presence forged in the future would
  // outrank every genuine one after it (the console orders a device's presences by time).
  const time = Math.min(status.at, arrived);
  // A presence published again for a connection announced before (the gateway's daily reminder,
  // or after it reconnected to its broker) is tagged, so that what lists connects and
  // disconnects can leave it out (InfluxQL cannot test a field for absence; a missing tag is ''),
  // and keeps the connection's time.
  const tags: Record<string, string> = { device: deviceId, gateway: status.gatewayId };
  const fields: Record<string, Scalar> = { state: status.state, ...cert };
  if (status.since !== undefined) {
    tags.republished = 'true';
    fields.since = Math.min(status.since, time);
  }
  return {
    measurement: MEASUREMENTS.status,
    tags,
    fields,
    time,
    // Retained: delivered again on every new subscription, the same presence each time.
    [POINT_KEY]: `${status.gatewayId}:${status.at}:${status.state}`,
  };
}

/** A gateway's presence (online, or its will), stamped when it arrived. */
export function gatewayPresencePoint(gatewayId: string, presence: GatewayPresence, arrived: number): StoredPoint {
  // Stamped when it arrived: a will carries the time the gateway started, not when it was lost.
  // Nothing in it tells one publication from the next (the same online at each connection, the
  // same will at each loss): keyed by its arrival, each is a row of its own (postgres/rows.ts),
  // and the gateway's state is its latest by time.
  return {
    measurement: MEASUREMENTS.gatewayStatus,
    tags: { gateway: gatewayId },
    // Never later than its arrival (as a device's presence): the console takes a gateway's
    // `since` as the time its devices' presences are believed from.
    fields: { state: presence.state, since: Math.min(presence.since, arrived) },
    time: arrived,
    [POINT_KEY]: `${presence.since}:${presence.state}:${arrived}`,
  };
}

/**
 * A gateway's security report, stored as its word (source=gateway): counts of refusals, one point
 * per device and code. Of ids `mayStoreUnder` refuses (neither registered nor revoked), one point
 * per code under UNREGISTERED_DEVICE with their sum: a report of 1,000 invented ids adds no series.
 */
export function gatewayReportPoints(report: GatewaySecurityReport, mayStoreUnder: (deviceId: string) => boolean, now = Date.now()): StoredPoint[] {
  const time = Math.min(report.to, now);
  const point = (deviceId: string, code: string, count: number, detail: string): StoredPoint => ({
    measurement: MEASUREMENTS.securityEvents,
    tags: { device: deviceId, reason: code, source: 'gateway' },
    fields: { count, gateway: report.gatewayId, from: report.from, detail },
    time,
    [POINT_KEY]: `g:${report.gatewayId}:${report.from}:${report.to}:${code}`,
  });
  const points: StoredPoint[] = [];
  const unregistered = new Map<string, { count: number; ids: number }>();
  for (const e of report.events) {
    if (mayStoreUnder(e.deviceId)) points.push(point(e.deviceId, e.code, e.count, `${e.count} refused by gateway ${report.gatewayId}`));
    else {
      const sum = unregistered.get(e.code) ?? { count: 0, ids: 0 };
      sum.count += e.count;
      sum.ids++;
      unregistered.set(e.code, sum);
    }
  }
  for (const [code, sum] of unregistered) points.push(point(UNREGISTERED_DEVICE, code, sum.count, `${sum.count} refused by gateway ${report.gatewayId}, naming ${sum.ids} devices neither registered nor revoked`));
  return points;
}

/**
 * Whether a payload on a device's presence topic may stay retained on the internal broker: a valid
 * presence of no more than LIMITS.retainedPresenceMaxBytes. The broker holds one per topic for ever
 * and hands it to every new subscriber; a registered device's topic is no reason to keep junk the
 * DMZ left there (which replaced the device's own presence), nor a presence padded to megabytes.
 */
export function isRetainablePresence(payload: Buffer): boolean {
  if (payload.length > LIMITS.retainedPresenceMaxBytes) return false;
  try {
    parseEnvelope(PresenceOfAnyVersionSchema, payload);
    return true;
  } catch {
    return false;
  }
}

/**
 * A presence whatever fields a gateway of a later version adds (StatusEnvelopeSchema refuses them,
 * so this distributor stores none of it): the device's own all the same, which the command API, of
 * that later version perhaps, learns from. Only for what may stay retained, never for what is stored.
 */
const PresenceOfAnyVersionSchema = z.object(StatusEnvelopeSchema.shape);
