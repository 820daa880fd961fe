import type { MqttClient } from 'mqtt';
import { FieldStreamError } from '../errors.ts';
import type { Logger } from '../logger.ts';

/**
 * Closes `client`'s connection at a message above `maxQos`, the most it subscribes at: a broker
 * sends a subscriber nothing above the QoS it granted (MQTT 3.1.1 §3.8.4, MQTT-3.8.4-6; MQTT 5.0
 * §3.8.4 likewise), so such a message comes from a broker not playing by the protocol. At QoS 2
 * mqtt.js would keep each message until the broker's PUBREL, which such a broker never has to send:
 * up to 65,535 packet identifiers of a whole packet each. The connection is closed as the packet
 * arrives (mqtt.js emits `packetreceive` before it handles it; its acknowledgement is written to a
 * closed stream, never sent), logged MQTT_PROTOCOL_VIOLATION, and made again: a clean session's
 * connection drops what mqtt.js kept of the old one. (mqtt.js's `customHandleAcks` would ask before
 * keeping it, but only on MQTT 5 connections.)
 */
export function closeAboveQos(client: MqttClient, maxQos: 0 | 1, log: Logger): void {
  client.on('packetreceive', (packet) => {
    if (packet.cmd !== 'publish' || packet.qos <= maxQos) return;
    const topic = String(packet.topic).slice(0, 200);
    const err = new FieldStreamError('MQTT_PROTOCOL_VIOLATION', `The broker sent a message at QoS ${packet.qos} on ${topic}, subscribed at QoS ${maxQos} at most: not taken, connection closed`, { qos: packet.qos });
    // Once per connection: the packets already read behind it come through here too.
    if (client.stream?.destroyed !== true) log.warn({ code: err.code, topic, qos: packet.qos }, err.message);
    client.stream?.destroy();
  });
}
