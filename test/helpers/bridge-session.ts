import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import { TOPIC_FILTERS } from '../../shared/contract/topics.ts';

/** What the internal network's bridge subscribes to on a DMZ broker (bridge.conf's `topic ... in` lines). */
export const BRIDGE_INBOUND_FILTERS = [TOPIC_FILTERS.uplink, TOPIC_FILTERS.gatewayUplink, TOPIC_FILTERS.status, TOPIC_FILTERS.gatewayPresence, TOPIC_FILTERS.gatewaySecurity] as const;

/**
 * The internal network's bridge as a DMZ broker sees it, for a test that runs a gateway on a DMZ
 * Mosquitto without the internal side: a persistent session (MQTT 3.1.1, clean session false, as
 * bridge.conf has it) subscribed at QoS 1 to what the bridge brings in. Without one, Mosquitto drops
 * every uplink message (nothing matches it), and the gateway refuses them (PUBACK reason code 0x10,
 * uplink-publisher.ts). Connected at once, and again after the broker restarts (the session made
 * anew, its subscriptions with it); `onMessage`: told of what it receives, before it is acknowledged.
 * Resolves once subscribed: `end()` it to leave the session behind, offline.
 */
export async function connectBridgeSession(
  url: string,
  clientId: string,
  o: { tls?: Pick<IClientOptions, 'ca' | 'cert' | 'key' | 'servername'>; onMessage?: (topic: string, payload: Buffer) => void } = {},
): Promise<MqttClient> {
  const client = connect(url, { ...o.tls, clientId, protocolVersion: 4, clean: false, reconnectPeriod: 100 });
  // Before its first CONNACK: what a session left offline queued arrives right after it.
  if (o.onMessage) client.on('message', o.onMessage);
  client.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  await client.subscribeAsync([...BRIDGE_INBOUND_FILTERS], { qos: 1 });
  return client;
}
