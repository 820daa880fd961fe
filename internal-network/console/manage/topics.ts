import { ROLE_POLICIES, filterCovers, unshare } from '../../../shared/acl.ts';
import { DATA_TYPES } from '../../../shared/contract/payloads.ts';
import { DeviceIdSchema } from '../../../shared/contract/primitives.ts';
import { GATEWAY_ID_PATTERN, GATEWAY_TOPIC_ROOT, parseTopic, STORED_FEED_TOPIC, TOPIC_FILTERS, TOPIC_ROOT, type ParsedTopic } from '../../../shared/contract/topics.ts';
import { isFieldStreamError } from '../../../shared/errors.ts';

/**
 * The topic structure and the topic validator of the management API (docs/management-api.md).
 * Both are read from the one place topics are defined (shared/contract/topics.ts) and the one place
 * who may publish what is defined (shared/acl.ts), so they cannot drift from what the brokers and
 * services do: the validator's yes or no is parseTopic's, and only the reason for a no is worked
 * out here.
 */

export type TopicKind = ParsedTopic['kind'] | 'storedFeed';

export interface TopicPattern {
  kind: TopicKind;
  pattern: string;
  direction: 'device→internal' | 'internal→device' | 'gateway→internal' | 'internal→gateway' | 'internal only';
  /** the broker roles (certificate CNs, shared/acl.ts) allowed to publish there */
  publishers: string[];
  /** the broker roles allowed to subscribe to it */
  subscribers: string[];
  retained: boolean;
  description: string;
}

const DESCRIBED: ReadonlyArray<Omit<TopicPattern, 'publishers' | 'subscribers'>> = [
  {
    kind: 'uplink',
    pattern: TOPIC_FILTERS.uplink.replace(/\+/, '{deviceId}').replace(/\+$/, `{dataType}`),
    direction: 'device→internal',
    retained: false,
    description: `What a device sends, by data type (${DATA_TYPES.join(', ')}), published by the gateway that received it.`,
  },
  {
    kind: 'gatewayUplink',
    pattern: `${GATEWAY_TOPIC_ROOT}/{gatewayId}/up/timeseries`,
    direction: 'device→internal',
    retained: false,
    description: 'The readings of many devices in one envelope, one section per device, each signed by its device; published by the gateway that received them.',
  },
  { kind: 'downlink', pattern: `${TOPIC_ROOT}/{deviceId}/down/command`, direction: 'internal→device', retained: false, description: "Commands for a device, each authenticated with the device's key by the command API." },
  { kind: 'status', pattern: `${TOPIC_ROOT}/{deviceId}/status`, direction: 'device→internal', retained: true, description: "A device's presence (online/offline), published by its gateway. The distributor clears (an empty retained message) the retained presence of an id neither registered nor revoked: the DMZ's invention." },
  { kind: 'receipts', pattern: `${GATEWAY_TOPIC_ROOT}/{gatewayId}/receipts`, direction: 'internal→gateway', retained: false, description: 'Commit receipts from the distributor for the messages that gateway received.' },
  { kind: 'gatewayPresence', pattern: `${GATEWAY_TOPIC_ROOT}/{gatewayId}/presence`, direction: 'gateway→internal', retained: false, description: "A gateway's own presence: online from the gateway, offline as its will from the DMZ broker." },
  { kind: 'gatewaySecurity', pattern: `${GATEWAY_TOPIC_ROOT}/{gatewayId}/security`, direction: 'gateway→internal', retained: false, description: 'What a gateway refused for security reasons, counted per device.' },
  {
    kind: 'storedFeed',
    pattern: STORED_FEED_TOPIC,
    direction: 'internal only',
    retained: false,
    // "publishers" is what the broker's ACL allows its clients; a bridge is held by no ACL, so the
    // DMZ can put messages here too: the MAC, not the topic, is what the console trusts.
    description: "What the distributor stored, for the console; never bridged out. Each message is sealed with the stored-feed key (HMAC-SHA256), which only the distributors and the console hold: the console takes none without a valid MAC, nor one twice, whatever reaches the topic (the bridge brings in any topic the DMZ broker sends).",
  },
];

/** The filter of each kind, as the ACL table is written against them. */
const FILTER_OF: Record<TopicKind, string> = { ...TOPIC_FILTERS, storedFeed: STORED_FEED_TOPIC };

/** Every FieldStream topic pattern, with who publishes and subscribes (from the ACL table). */
export function topicStructure(): TopicPattern[] {
  const roles = Object.entries(ROLE_POLICIES);
  return DESCRIBED.map((d) => {
    const filter = FILTER_OF[d.kind];
    return {
      ...d,
      publishers: roles.filter(([, p]) => p.publish.some((f) => filterCovers(f, filter))).map(([r]) => r),
      subscribers: roles.filter(([, p]) => p.subscribe.some((f) => filterCovers(unshare(f), filter) || filterCovers(filter, unshare(f)))).map(([r]) => r),
    };
  });
}

/** Why a topic is not a FieldStream topic: one word per rule it breaks (docs/management-api.md). */
export const TOPIC_REASONS = ['empty', 'wildcard', 'not-fieldstream', 'invalid-device-id', 'invalid-gateway-id', 'unknown-data-type', 'unknown-leaf'] as const;
export type TopicReason = (typeof TOPIC_REASONS)[number];

export type TopicVerdict =
  | ({ valid: true; topic: string; pattern: string; direction: TopicPattern['direction'] } & ({ kind: 'storedFeed' } | ParsedTopic))
  | { valid: false; topic: string; code: 'CONTRACT_INVALID_TOPIC'; reason: TopicReason; message: string };

/** Which kind of FieldStream topic `topic` is, with its ids; or the coded reason it is none. */
export function validateTopic(topic: string): TopicVerdict {
  const described = (kind: TopicKind) => DESCRIBED.find((d) => d.kind === kind) as (typeof DESCRIBED)[number];
  if (topic === STORED_FEED_TOPIC) return { valid: true, topic, kind: 'storedFeed', pattern: STORED_FEED_TOPIC, direction: 'internal only' };
  try {
    const parsed = parseTopic(topic);
    const d = described(parsed.kind);
    return { valid: true, topic, ...parsed, pattern: d.pattern, direction: d.direction };
  } catch (err) {
    if (!isFieldStreamError(err, 'CONTRACT_INVALID_TOPIC')) throw err;
    const [reason, message] = whyNot(topic);
    return { valid: false, topic, code: 'CONTRACT_INVALID_TOPIC', reason, message };
  }
}

/** Called only for a topic parseTopic refused: says which of its rules the topic breaks first. */
function whyNot(topic: string): [TopicReason, string] {
  if (topic.length === 0) return ['empty', 'A topic has at least one character (MQTT 3.1.1 §4.7.3).'];
  // A name with wildcards is a filter, which may be subscribed to but never published to (MQTT 3.1.1 §4.7.1).
  if (/[+#]/.test(topic)) return ['wildcard', 'A topic name holds no "+" or "#": this is a filter, not a topic.'];
  if (topic.startsWith(`${GATEWAY_TOPIC_ROOT}/`)) {
    const [gatewayId = '', leaf, ...rest] = topic.slice(GATEWAY_TOPIC_ROOT.length + 1).split('/');
    if (!GATEWAY_ID_PATTERN.test(gatewayId)) return ['invalid-gateway-id', `"${gatewayId.slice(0, 100)}" is not a gateway id (1-100 of A-Z a-z 0-9 . _ -).`];
    return ['unknown-leaf', `After the gateway id comes receipts, presence or security, and nothing further (got "${[leaf, ...rest].join('/').slice(0, 100)}").`];
  }
  if (!topic.startsWith(`${TOPIC_ROOT}/`)) return ['not-fieldstream', `FieldStream topics begin with ${TOPIC_ROOT}/ or ${GATEWAY_TOPIC_ROOT}/.`];
  const [deviceId = '', kind, leaf, ...rest] = topic.slice(TOPIC_ROOT.length + 1).split('/');
  if (!DeviceIdSchema.safeParse(deviceId).success) return ['invalid-device-id', `"${deviceId.slice(0, 100)}" is not a device id.`];
  if (kind === 'up' && rest.length === 0 && leaf !== undefined) return ['unknown-data-type', `"${leaf.slice(0, 100)}" is not a data type (${DATA_TYPES.join(', ')}).`];
  return ['unknown-leaf', `After the device id comes up/{dataType}, down/command or status, and nothing further (got "${[kind, leaf, ...rest].filter((x) => x !== undefined).join('/').slice(0, 100)}").`];
}
