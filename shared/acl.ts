import { STORED_FEED_TOPIC, TOPIC_FILTERS, TOPIC_ROOT } from './contract/topics.ts';

/**
 * Who may do what on the brokers, by certificate CN (the broker's username, taken from the
 * verified client certificate). Anything not listed is denied. The Mosquitto ACL files
 * (dmz/mosquitto/acl, internal-network/mosquitto/acl) express the same table; a test compares them.
 *
 * What it does not hold: the bridges the internal broker runs. Mosquitto applies no ACL to a
 * bridge configured in the broker (mosquitto_acl_check succeeds for a bridge's context, 2.0.x), and
 * a bridge's `topic ... in` lines only choose what it subscribes to on the DMZ broker, not what it
 * takes from it: whatever the DMZ broker sends, on any topic (retained, $SYS), arrives on the
 * internal broker. So no internal reader trusts a topic for who published on it: device data is
 * checked by its devices' signatures, the stored feed by its MAC (SECURITY.md).
 */
export interface RolePolicy {
  /** filters the role may publish to */
  publish: readonly string[];
  /** filters the role may subscribe to (a narrower filter is allowed too) */
  subscribe: readonly string[];
  /**
   * filters the role may publish to only to clear a retained message: an empty payload with the
   * RETAIN flag (MQTT 5 §3.3.1.3). The embedded broker holds a role to that; a Mosquitto ACL grants
   * a topic, not a payload, and writes these as plain `topic write` lines.
   */
  clear?: readonly string[];
  /**
   * filters the role subscribes to only to find what is retained there, and clear it (Mosquitto only:
   * internal-network/distributor/retained-sweeper.ts): not a reader of these topics' messages.
   */
  sweep?: readonly string[];
  /**
   * filters the role may neither publish nor subscribe to, whatever its other filters cover (a
   * Mosquitto `topic deny` line, which is checked before the grants, reads and writes alike).
   */
  deny?: readonly string[];
}

export const RESPONSE_FILTER = `${TOPIC_ROOT}/+/up/response`;
/** The brokers' own state: clients, message counts, the bridge's connection. */
export const SYS_FILTER = '$SYS/#';
/**
 * The DMZ broker's uptime, which it publishes every sys_interval: each bridge brings it in as its
 * heartbeat (bridge.conf), by which the broker exporter sees a DMZ broker that hangs.
 */
export const DMZ_UPTIME_TOPIC = '$SYS/broker/uptime';

export const ROLE_POLICIES: Readonly<Record<string, RolePolicy>> = Object.freeze({
  // DMZ: writes what devices send, reads the commands for the devices it holds and the commit
  // receipts for the messages it received (it cannot forge one: each is under its device's key).
  gateway: { publish: [TOPIC_FILTERS.uplink, TOPIC_FILTERS.gatewayUplink, TOPIC_FILTERS.status, TOPIC_FILTERS.gatewayPresence, TOPIC_FILTERS.gatewaySecurity], subscribe: [TOPIC_FILTERS.downlink, TOPIC_FILTERS.receipts] },
  // Internal: reads all uplink data and presence; writes commit receipts, and the stored feed of
  // what it wrote (internal-network/shared/stored-feed.ts); clears the retained presences of device
  // ids the DMZ invented (internal-network/distributor/presence-clearer.ts), and any other retained
  // message the DMZ left through the bridge, found by reading what is retained on every topic
  // (internal-network/distributor/retained-sweeper.ts): the bridge can already write every topic
  // but "$" ones, so this lets the distributor say nothing the DMZ cannot. Except the commands': the
  // distributor holds the device keys commands are authenticated with (command-auth.ts), the DMZ
  // does not, and the bridges carry commands out to the devices; so none of its certificate's.
  distributor: {
    publish: [TOPIC_FILTERS.receipts, STORED_FEED_TOPIC],
    subscribe: [TOPIC_FILTERS.uplink, TOPIC_FILTERS.gatewayUplink, TOPIC_FILTERS.status, TOPIC_FILTERS.gatewayPresence, TOPIC_FILTERS.gatewaySecurity],
    clear: [TOPIC_FILTERS.status, '#'],
    sweep: ['#'],
    deny: [TOPIC_FILTERS.downlink],
  },
  // Internal: sends commands, reads their responses and device presence.
  'command-api': { publish: [TOPIC_FILTERS.downlink], subscribe: [RESPONSE_FILTER, TOPIC_FILTERS.status] },
  // Read-only consumers (analytics, dashboards): uplink data and presence, nothing to write.
  consumer: { publish: [], subscribe: [TOPIC_FILTERS.uplink, TOPIC_FILTERS.gatewayUplink, TOPIC_FILTERS.status] },
  // The operator console (internal): the stored feed only, never raw device topics (they hold what
  // crossed the DMZ before the distributor checked it); nothing to write. It takes a feed message
  // for its MAC, not for this table: a bridge can deliver one too (see above).
  console: { publish: [], subscribe: [STORED_FEED_TOPIC] },
  // The bridge, as a client of the DMZ broker, whose ACL holds it: it reads uplink and status there,
  // and the broker's uptime (its heartbeat), and writes commands and commit receipts there, nothing
  // else. Into the internal broker it brings whatever the DMZ broker sends it, held by no ACL (see above).
  bridge: { publish: [TOPIC_FILTERS.downlink, TOPIC_FILTERS.receipts], subscribe: [TOPIC_FILTERS.uplink, TOPIC_FILTERS.gatewayUplink, TOPIC_FILTERS.status, TOPIC_FILTERS.gatewayPresence, TOPIC_FILTERS.gatewaySecurity, DMZ_UPTIME_TOPIC] },
  // The broker exporter, on both brokers: their own state ($SYS), no data, nothing to write.
  monitor: { publish: [], subscribe: [SYS_FILTER] },
});

/** Strips a shared-subscription prefix (MQTT 5 §4.8.2: `$share/{group}/{filter}`). */
export function unshare(filter: string): string {
  const m = /^\$share\/[^/#+]+\/(.+)$/.exec(filter);
  return m?.[1] ?? filter;
}

/** True when every topic `requested` matches is also matched by `allowed`. */
export function filterCovers(allowed: string, requested: string): boolean {
  // MQTT 5 §4.7.2: a wildcard at the first level matches no topic beginning with "$" (Mosquitto's ACL alike).
  if (requested.startsWith('$') && (allowed.startsWith('#') || allowed.startsWith('+'))) return false;
  const a = allowed.split('/');
  const r = requested.split('/');
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '#') return true;
    if (i >= r.length) return false;
    if (r[i] === '#') return false; // requested reaches deeper than allowed
    if (a[i] === '+') continue; // any single level, '+' included
    if (a[i] !== r[i]) return false;
  }
  return a.length === r.length;
}

/**
 * Whether `role` may publish `message` (its payload and RETAIN flag; without it, only what the role
 * may publish whatever it holds) to `topic`.
 */
export function mayPublish(role: string, topic: string, message?: { payload: Buffer | string; retain: boolean }): boolean {
  const policy = ROLE_POLICIES[role];
  if (!policy || topic.includes('+') || topic.includes('#')) return false;
  if ((policy.deny ?? []).some((f) => filterCovers(f, topic))) return false;
  if (policy.publish.some((f) => filterCovers(f, topic))) return true;
  return message !== undefined && message.retain && message.payload.length === 0 && (policy.clear ?? []).some((f) => filterCovers(f, topic));
}

/** What `role` may write on a broker whose ACL grants topics only (Mosquitto): its publish and clear filters. */
export function writeFilters(role: string): string[] {
  const policy = ROLE_POLICIES[role];
  return policy ? [...policy.publish, ...(policy.clear ?? [])] : [];
}

/** What `role` may read on a broker whose ACL grants topics only (Mosquitto): its subscribe and sweep filters. */
export function readFilters(role: string): string[] {
  const policy = ROLE_POLICIES[role];
  return policy ? [...policy.subscribe, ...(policy.sweep ?? [])] : [];
}

export function maySubscribe(role: string, filter: string): boolean {
  const policy = ROLE_POLICIES[role];
  if (!policy) return false;
  const plain = unshare(filter);
  if ((policy.deny ?? []).some((f) => filtersOverlap(f, plain))) return false;
  return policy.subscribe.some((f) => filterCovers(f, plain));
}

/** What `role` may neither read nor write on a broker whose ACL grants topics only (Mosquitto `topic deny`). */
export function denyFilters(role: string): string[] {
  return [...(ROLE_POLICIES[role]?.deny ?? [])];
}

/** True when some topic matches both filters. */
function filtersOverlap(a: string, b: string): boolean {
  if (a.startsWith('$') !== b.startsWith('$') && (/^[+#]/.test(a) || /^[+#]/.test(b))) return false;
  const x = a.split('/');
  const y = b.split('/');
  for (let i = 0; ; i++) {
    if (x[i] === '#' || y[i] === '#') return true;
    if (i >= x.length || i >= y.length) return x.length === y.length;
    if (x[i] !== '+' && y[i] !== '+' && x[i] !== y[i]) return false;
  }
}
