import type { Scalar } from '../../../shared/contract/primitives.ts';
import { MEASUREMENTS, type StoredPoint } from '../../distributor/points.ts';

/**
 * The last presences the distributor stored (`device_status`, `gateway_status`), read back at the
 * console's start (fleet/last-presences.ts): the stored feed is not retained, and a gateway publishes
 * a device's presence when it connects and then once a day, so a console that restarted knew no
 * device's gateway, nor its state, until then. Each as the point the feed carried.
 */
export interface LastPresences {
  /** the last presence of each (device, gateway) pair within the window: a device that moved between
   * DMZ servers has one per server, so that the late `offline` of the one it left is seen as such */
  devices: StoredPoint[];
  /** each gateway's last status within the window, and its last `offline` if that one is older: a
   * gateway back on its broker says `online` with the `since` of its process, which tells nothing of
   * the devices its will took offline */
  gateways: StoredPoint[];
}

/**
 * A store that can tell the last presences from `fromMs` on (every history reader of the console).
 * `known`: the devices the console has a row for (the registry's), whose pairs come first within
 * `maxPairs`: a store may hold more pairs than that (ids a DMZ invented, with
 * DISTRIBUTOR_REQUIRE_SIGNATURES=false), and those ids must not push the real devices out.
 */
export interface PresenceReader {
  lastPresences(fromMs: number, known: ReadonlySet<string>, maxPairs?: number): Promise<LastPresences>;
}

/**
 * The devices' pairs, those of `known` devices first (in the order given), then the others, at most
 * `maxPairs` in all: what a reader answers (PresenceReader) from what it read.
 */
export function knownFirst(pairs: Iterable<StoredPoint>, known: ReadonlySet<string>, maxPairs: number): StoredPoint[] {
  const theirs: StoredPoint[] = [];
  const others: StoredPoint[] = [];
  for (const p of pairs) (p.tags.device !== undefined && known.has(p.tags.device) ? theirs : others).push(p);
  return theirs.concat(others).slice(0, Math.max(0, maxPairs));
}

const finite = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : typeof v === 'string' && v !== '' && Number.isFinite(Number(v)) ? Number(v) : undefined);

/**
 * A device's presence as the distributor wrote it (message-handler.ts), from a row of the store
 * (its columns by name, `time` in epoch ms; the store's word, checked here): `state`, and the
 * certificate's expiry and days left, `since` on a reminder. Undefined when the row holds no state
 * the console takes, or no time; `gateway` '' or null (PostgreSQL's column of a point without one) is none.
 */
export function devicePresencePoint(r: Readonly<Record<string, unknown>>): StoredPoint | undefined {
  const time = finite(r.time);
  if (typeof r.device !== 'string' || r.device === '' || (r.state !== 'online' && r.state !== 'offline') || time === undefined) return undefined;
  const tags: Record<string, string> = { device: r.device };
  if (typeof r.gateway === 'string' && r.gateway !== '') tags.gateway = r.gateway;
  const fields: Record<string, Scalar> = { state: r.state };
  for (const k of ['cert_days_left', 'cert_not_after', 'since'] as const) {
    const v = finite(r[k]);
    if (v !== undefined) fields[k] = v;
  }
  if (fields.since !== undefined) tags.republished = 'true';
  return { measurement: MEASUREMENTS.status, tags, fields, time };
}

/** A gateway's status as the distributor wrote it: `state` and `since` (when the gateway started). */
export function gatewayStatusPoint(r: Readonly<Record<string, unknown>>): StoredPoint | undefined {
  const time = finite(r.time);
  if (typeof r.gateway !== 'string' || r.gateway === '' || (r.state !== 'online' && r.state !== 'offline') || time === undefined) return undefined;
  const since = finite(r.since);
  return { measurement: MEASUREMENTS.gatewayStatus, tags: { gateway: r.gateway }, fields: { state: r.state, ...(since !== undefined ? { since } : {}) }, time };
}
