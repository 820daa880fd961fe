import { GatewayEnvelopeSchema, sectionEnvelope } from '../../shared/contract/envelope.ts';
import { parseTopic, TOPIC_FILTERS, uplinkTopic } from '../../shared/contract/topics.ts';

/** The filters that carry readings: each device's topic, and the gateways' shared envelopes. */
export const READING_FILTERS = [TOPIC_FILTERS.uplink, TOPIC_FILTERS.gatewayUplink];

/**
 * What a spy on the broker captured of `deviceId`'s readings, as that device's own envelopes (what a
 * compromised DMZ can publish again on the device's topic): the message itself when it came on the
 * device's topic, its section when it came in a gateway's envelope.
 */
export function capturedReadings(deviceId: string, topic: string, payload: Buffer): Buffer[] {
  if (topic === uplinkTopic(deviceId, 'timeseries')) return [payload];
  if (parseTopic(topic).kind !== 'gatewayUplink') return [];
  const env = GatewayEnvelopeSchema.parse(JSON.parse(payload.toString('utf8')));
  return env.devices.filter((s) => s.deviceId === deviceId).map((s) => Buffer.from(JSON.stringify(sectionEnvelope(env, s))));
}
