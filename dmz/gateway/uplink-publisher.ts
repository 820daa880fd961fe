import type { MqttClient } from 'mqtt';
import { ENVELOPE_VERSION, type UplinkEnvelope } from '../../shared/contract/envelope.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import type { DataType } from '../../shared/contract/payloads.ts';
import type { UplinkMessage } from '../../shared/contract/uplink.ts';
import { FieldStreamError } from '../../shared/errors.ts';

/** A message the gateway accepted, with the id under which the device will see it acked. */
export type AcceptedMessage = UplinkMessage & { messageId: string };

export interface PublishGroup {
  dataType: DataType;
  messageIds: string[];
  /** Settles when the broker answered PUBACK (resolves) or the publish failed (rejects). */
  done: Promise<void>;
}

/**
 * Publishes accepted messages to the broker at QoS 1: one envelope per data type of a frame, so
 * a batch of readings costs one MQTT message. A group counts as safe only when the broker's PUBACK
 * for it arrives (MQTT 3.1.1 §4.3.2): that is when the device gets its ack.
 */
export class UplinkPublisher {
  constructor(
    private readonly mqtt: MqttClient,
    private readonly gatewayId: string,
    /** milliseconds */
    private readonly timeoutMs: number,
  ) {}

  publish(deviceId: string, messages: readonly AcceptedMessage[], receivedAt: number): PublishGroup[] {
    const byType = new Map<DataType, AcceptedMessage[]>();
    for (const m of messages) {
      const list = byType.get(m.dataType);
      if (list) list.push(m);
      else byType.set(m.dataType, [m]);
    }
    const groups: PublishGroup[] = [];
    for (const [dataType, list] of byType) {
      const envelope = {
        v: ENVELOPE_VERSION,
        deviceId,
        dataType,
        gatewayId: this.gatewayId,
        receivedAt,
        // The device's signature travels untouched: the DMZ can neither check nor forge it.
        messages: list.map((m) => ({ messageId: m.messageId, ...(m.seq !== undefined ? { seq: m.seq } : {}), ...(m.auth ? { auth: m.auth } : {}), payload: m.payload })),
      } as UplinkEnvelope;
      groups.push({
        dataType,
        messageIds: list.map((m) => m.messageId),
        done: this.publishOne(uplinkTopic(deviceId, dataType), JSON.stringify(envelope)),
      });
    }
    return groups;
  }

  private publishOne(topic: string, payload: string): Promise<void> {
    if (!this.mqtt.connected) {
      return Promise.reject(new FieldStreamError('GATEWAY_BROKER_UNAVAILABLE', 'The gateway is not connected to the broker; send again later.'));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new FieldStreamError('GATEWAY_BROKER_UNAVAILABLE', `No PUBACK from the broker within ${this.timeoutMs} ms; send again.`));
      }, this.timeoutMs);
      this.mqtt.publish(topic, payload, { qos: 1 }, (err, packet) => {
        clearTimeout(timer);
        // MQTT 5 §3.4.2.1: a PUBACK reason code of 0x80 or more means the broker refused it.
        const reasonCode = (packet as { reasonCode?: number } | undefined)?.reasonCode ?? 0;
        if (err || reasonCode >= 0x80) {
          reject(
            new FieldStreamError('GATEWAY_BROKER_UNAVAILABLE', `The broker did not accept the message (${err?.message ?? `reason code ${reasonCode}`}).`),
          );
        } else resolve();
      });
    });
  }
}
