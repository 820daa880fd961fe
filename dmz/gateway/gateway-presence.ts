import type { MqttClient } from 'mqtt';
import { TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { PUBACK_NO_MATCHING_SUBSCRIBERS, PubackReasons } from './puback-reasons.ts';

/**
 * Publishes the gateway's `online` presence (not retained, QoS 1) at each connection to the broker,
 * and again every `retryMs` while that connection lasts until the broker takes it: a PUBACK of
 * reason code 0x10 (No matching subscribers, MQTT 5 §3.4.2.1) means a DMZ broker the internal
 * network's bridge has no session on dropped it, and nothing else would tell the inside that the
 * gateway is there until its next connection. (A device's presence needs no such care: it is
 * retained, and Mosquitto keeps a retained message it answered 0x10 for, for the bridge's
 * subscription to receive.) One small message a `retryMs` at most, and none once taken.
 * Returns what stops it.
 */
export function publishOnlineOnEveryConnect(mqtt: MqttClient, topic: string, payload: string, log: Logger, retryMs: number = TIMINGS.gatewayPresenceRetryMs): () => void {
  const reasons = PubackReasons.of(mqtt);
  let connection = 0;
  let retry: NodeJS.Timeout | undefined;
  let warned = false;
  const publish = (of: number) => {
    retry = undefined;
    if (of !== connection || !mqtt.connected) return; // the next connection publishes its own
    mqtt.publish(topic, payload, { qos: 1 }, (err, packet) => {
      const code = reasons.take(packet?.messageId);
      if (!err && code === 0) return;
      if (of !== connection) return;
      const why = code === PUBACK_NO_MATCHING_SUBSCRIBERS ? " (0x10, no subscriber: the internal network's bridge has no session on this broker)" : '';
      // Once a connection at warn: a broker the bridge never reached answers so every retryMs.
      log[warned ? 'debug' : 'warn']({ err: err?.message, reasonCode: code, retryMs }, `the gateway's online presence not taken by the broker${why}; published again until it is`);
      warned = true;
      clearTimeout(retry);
      retry = setTimeout(() => publish(of), retryMs);
      retry.unref();
    });
  };
  const onConnect = () => {
    clearTimeout(retry);
    warned = false;
    publish(++connection);
  };
  mqtt.on('connect', onConnect);
  return () => {
    clearTimeout(retry);
    connection = -1;
    mqtt.off('connect', onConnect);
  };
}
