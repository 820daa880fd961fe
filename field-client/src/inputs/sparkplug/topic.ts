/**
 * The Sparkplug B topic namespace, Sparkplug 3.0.0 §4.1.1:
 * `spBv1.0/<group_id>/<message_type>/<edge_node_id>[/<device_id>]`, and the host application's
 * `spBv1.0/STATE/<host_id>` (§4.1.2). Identifiers are UTF-8 strings without `+`, `/` or `#`
 * (§4.1.1.2–4.1.1.5), nor U+0000 (MQTT 3.1.1 §1.5.3); the device id is present exactly for the D* message types.
 */
export const NAMESPACE = 'spBv1.0';

export const NODE_TYPES = ['NBIRTH', 'NDEATH', 'NDATA', 'NCMD'] as const;
export const DEVICE_TYPES = ['DBIRTH', 'DDEATH', 'DDATA', 'DCMD'] as const;
export type MessageType = (typeof NODE_TYPES)[number] | (typeof DEVICE_TYPES)[number];

export interface SparkplugTopic {
  group: string;
  type: MessageType;
  edge: string;
  device?: string | undefined;
}

// Nor U+0000, which MQTT 3.1.1 §1.5.3 forbids in a topic and aedes (the local MQTT input) delivers
// all the same: the host joins group and edge node ids with it (host-types.ts key), so `G\0H`/`E`
// and `G`/`H\0E` were one edge node, one's data stored under the other's fields.
const ID = /^[^+/#\u0000]+$/;
export const isSparkplugId = (s: string): boolean => ID.test(s) && s.length <= 256;

/**
 * A topic of the namespace: its parts; 'state' for a host application's STATE message (another
 * host's, or our own); undefined for anything that is not a well-formed Sparkplug B topic.
 */
export function parseTopic(topic: string): SparkplugTopic | 'state' | undefined {
  const parts = topic.split('/');
  if (parts[0] !== NAMESPACE) return undefined;
  if (parts[1] === 'STATE') return parts.length === 3 && isSparkplugId(parts[2] as string) ? 'state' : undefined;
  const [, group, type, edge, device] = parts as [string, string, string, string | undefined, string | undefined];
  if (parts.length < 4 || parts.length > 5 || !isSparkplugId(group) || edge === undefined || !isSparkplugId(edge)) return undefined;
  if ((NODE_TYPES as readonly string[]).includes(type)) return parts.length === 4 ? { group, type: type as MessageType, edge } : undefined;
  if ((DEVICE_TYPES as readonly string[]).includes(type)) {
    return device !== undefined && isSparkplugId(device) ? { group, type: type as MessageType, edge, device } : undefined;
  }
  return undefined;
}

/** The topic of a message, back from its parts. */
export const formatTopic = (t: SparkplugTopic): string => [NAMESPACE, t.group, t.type, t.edge, ...(t.device !== undefined ? [t.device] : [])].join('/');
export const ncmdTopic = (group: string, edge: string): string => `${NAMESPACE}/${group}/NCMD/${edge}`;
export const stateTopic = (hostId: string): string => `${NAMESPACE}/STATE/${hostId}`;
/** Every host application's STATE (§5.3 tck-id-message-flow-phid-sparkplug-subscription: a host subscribes to it). */
export const STATE_FILTER = `${NAMESPACE}/STATE/+`;
/** The host id of a STATE topic (`spBv1.0/STATE/<host_id>`), else undefined. */
export function stateHostId(topic: string): string | undefined {
  const parts = topic.split('/');
  return parts.length === 3 && parts[0] === NAMESPACE && parts[1] === 'STATE' && isSparkplugId(parts[2] as string) ? parts[2] : undefined;
}
/** What a host following these groups subscribes to (all groups when the list is empty). */
export const subscriptions = (groups: readonly string[]): string[] => (groups.length === 0 ? [`${NAMESPACE}/+/+/#`] : groups.map((g) => `${NAMESPACE}/${g}/#`));
