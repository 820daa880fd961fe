import { FieldStreamError } from '../errors.ts';
import { DATA_TYPES, type DataType } from './payloads.ts';
import { DeviceIdSchema } from './primitives.ts';

/**
 * The one place MQTT topics are built and parsed. The broker ACLs (mosquitto/*.acl and the
 * embedded broker's policy) are written against the filters below; a test checks they agree.
 *
 *   fieldstream/v1/devices/{deviceId}/up/{dataType}   uplink, device → internal network
 *   fieldstream/v1/devices/{deviceId}/down/command    downlink commands, internal network → device
 *   fieldstream/v1/devices/{deviceId}/status          presence, retained, published by the gateway
 *   fieldstream/v1/gateways/{gatewayId}/up/timeseries the readings of many devices in one envelope, published by
 *                                                     the gateway that received them (GatewayEnvelopeSchema)
 *   fieldstream/v1/gateways/{gatewayId}/receipts      commit receipts, distributor → the gateway that
 *                                                     received the messages (shared/contract/receipt.ts)
 *   fieldstream/v1/gateways/{gatewayId}/presence      a gateway's own presence (not retained), published by the
 *                                                     gateway (online) or by the DMZ broker as its will
 *                                                     (offline: the gateway is gone), carried inward
 *   fieldstream/v1/gateways/{gatewayId}/security      what a gateway refused for security reasons (rate
 *                                                     limits, revoked certificates, another device's id),
 *                                                     counted per device, carried inward
 *   fieldstream/v1/internal/stored                    the stored feed: what the distributor wrote, for the
 *                                                     operator console (internal-network/shared/stored-feed.ts);
 *                                                     never bridged out; each message sealed with a MAC
 *
 * The device id is one topic level: the contract forbids "/", "+" and "#" in it (MQTT 3.1.1 §4.7.1).
 */
export const TOPIC_ROOT = 'fieldstream/v1/devices';

export const GATEWAY_TOPIC_ROOT = 'fieldstream/v1/gateways';

export const TOPIC_FILTERS = {
  uplink: `${TOPIC_ROOT}/+/up/+`,
  downlink: `${TOPIC_ROOT}/+/down/command`,
  status: `${TOPIC_ROOT}/+/status`,
  gatewayUplink: `${GATEWAY_TOPIC_ROOT}/+/up/timeseries`,
  receipts: `${GATEWAY_TOPIC_ROOT}/+/receipts`,
  gatewayPresence: `${GATEWAY_TOPIC_ROOT}/+/presence`,
  gatewaySecurity: `${GATEWAY_TOPIC_ROOT}/+/security`,
} as const;

/**
 * The stored feed. Outside the device and gateway trees on purpose: the bridge subscribes to and
 * sends out only those (internal-network/mosquitto/bridge.conf), so the feed never reaches the DMZ;
 * parseTopic refuses it like any topic that is not a device's or a gateway's. That does not keep
 * the DMZ off it: a bridge delivers whatever the DMZ broker sends, on any topic, and no ACL applies
 * to it (shared/acl.ts). The console takes a message of the feed only for its MAC under the
 * stored-feed key (internal-network/shared/stored-feed-auth.ts).
 */
export const STORED_FEED_TOPIC = 'fieldstream/v1/internal/stored';

/** A gateway id is one topic level (GATEWAY_ID's own rule): none of MQTT's special characters. */
export const GATEWAY_ID_PATTERN = /^[A-Za-z0-9._-]{1,100}$/;

export function uplinkTopic(deviceId: string, dataType: DataType): string {
  return `${TOPIC_ROOT}/${checkedDeviceId(deviceId)}/up/${dataType}`;
}

export function commandTopic(deviceId: string): string {
  return `${TOPIC_ROOT}/${checkedDeviceId(deviceId)}/down/command`;
}

export function statusTopic(deviceId: string): string {
  return `${TOPIC_ROOT}/${checkedDeviceId(deviceId)}/status`;
}

/** Where gateway `gatewayId` publishes the readings of the devices it holds, many devices to an envelope. */
export function gatewayUplinkTopic(gatewayId: string): string {
  return gatewayPresenceTopic(gatewayId).replace(/\/presence$/, '/up/timeseries');
}

/** Where the distributor sends the commit receipts of messages that gateway `gatewayId` received. */
export function receiptTopic(gatewayId: string): string {
  if (!GATEWAY_ID_PATTERN.test(gatewayId)) {
    throw new FieldStreamError('CONTRACT_INVALID_TOPIC', `Invalid gateway id for a topic: ${JSON.stringify(gatewayId.slice(0, 100))}`);
  }
  return `${GATEWAY_TOPIC_ROOT}/${gatewayId}/receipts`;
}

/** Where a gateway says it is online, and where the DMZ broker says it is gone (its will). */
export function gatewayPresenceTopic(gatewayId: string): string {
  if (!GATEWAY_ID_PATTERN.test(gatewayId)) {
    throw new FieldStreamError('CONTRACT_INVALID_TOPIC', `Invalid gateway id for a topic: ${JSON.stringify(gatewayId.slice(0, 100))}`);
  }
  return `${GATEWAY_TOPIC_ROOT}/${gatewayId}/presence`;
}

/** Where a gateway reports what it refused for security reasons (GatewaySecurityReportSchema). */
export function gatewaySecurityTopic(gatewayId: string): string {
  return gatewayPresenceTopic(gatewayId).replace(/\/presence$/, '/security');
}

/** A shared subscription (MQTT 5 §4.8.2): each message goes to one member of the group. */
export function sharedFilter(group: string, filter: string): string {
  if (!/^[A-Za-z0-9._-]+$/.test(group)) throw new FieldStreamError('CONTRACT_INVALID_TOPIC', `Invalid share group ${JSON.stringify(group)}`);
  return `$share/${group}/${filter}`;
}

export type ParsedTopic =
  | { kind: 'uplink'; deviceId: string; dataType: DataType }
  | { kind: 'downlink'; deviceId: string }
  | { kind: 'status'; deviceId: string }
  | { kind: 'gatewayUplink'; gatewayId: string; dataType: 'timeseries' }
  | { kind: 'receipts'; gatewayId: string }
  | { kind: 'gatewayPresence'; gatewayId: string }
  | { kind: 'gatewaySecurity'; gatewayId: string };

const ROOT_LEVELS = TOPIC_ROOT.split('/').length;

/** Not a closure in parseTopic: it runs for every MQTT message, and every named closure costs its
 * creation a defineProperty (tsx compiles with esbuild's keepNames; docs/performance-history.md). */
function invalid(topic: string): FieldStreamError {
  return new FieldStreamError('CONTRACT_INVALID_TOPIC', `Not a FieldStream topic: ${JSON.stringify(topic.slice(0, 200))}`);
}

export function parseTopic(topic: string): ParsedTopic {
  if (topic.startsWith(`${GATEWAY_TOPIC_ROOT}/`)) {
    const [gatewayId, leaf, ...rest] = topic.slice(GATEWAY_TOPIC_ROOT.length + 1).split('/');
    if (gatewayId !== undefined && GATEWAY_ID_PATTERN.test(gatewayId) && leaf === 'up' && rest.length === 1 && rest[0] === 'timeseries') {
      return { kind: 'gatewayUplink', gatewayId, dataType: 'timeseries' };
    }
    if (gatewayId !== undefined && GATEWAY_ID_PATTERN.test(gatewayId) && rest.length === 0) {
      if (leaf === 'receipts') return { kind: 'receipts', gatewayId };
      if (leaf === 'presence') return { kind: 'gatewayPresence', gatewayId };
      if (leaf === 'security') return { kind: 'gatewaySecurity', gatewayId };
    }
    throw invalid(topic);
  }
  const levels = topic.split('/');
  if (levels.slice(0, ROOT_LEVELS).join('/') !== TOPIC_ROOT) throw invalid(topic);
  const [deviceId, kind, leaf, ...rest] = levels.slice(ROOT_LEVELS);
  if (deviceId === undefined || !DeviceIdSchema.safeParse(deviceId).success || rest.length > 0) throw invalid(topic);
  if (kind === 'up' && leaf !== undefined && (DATA_TYPES as readonly string[]).includes(leaf)) {
    return { kind: 'uplink', deviceId, dataType: leaf as DataType };
  }
  if (kind === 'down' && leaf === 'command') return { kind: 'downlink', deviceId };
  if (kind === 'status' && leaf === undefined) return { kind: 'status', deviceId };
  throw invalid(topic);
}

function checkedDeviceId(deviceId: string): string {
  if (!DeviceIdSchema.safeParse(deviceId).success) {
    throw new FieldStreamError('CONTRACT_INVALID_TOPIC', `Invalid device id for a topic: ${JSON.stringify(deviceId.slice(0, 100))}`);
  }
  return deviceId;
}

/** MQTT topic filter matching (MQTT 3.1.1 §4.7): "+" is one level, "#" the rest. */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}
