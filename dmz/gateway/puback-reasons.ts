import type { MqttClient } from 'mqtt';

/** PUBACK reason code 0x10, No matching subscribers (MQTT 5 §3.4.2.1). */
export const PUBACK_NO_MATCHING_SUBSCRIBERS = 0x10;

const byClient = new WeakMap<MqttClient, PubackReasons>();

/**
 * The reason code of each PUBACK a client receives, for the callback of the publish it settles.
 * mqtt.js calls that callback with an error for a code of 0x80 or more, but for 0x10 (No matching
 * subscribers: the broker took the message and dropped it, nothing being subscribed to its topic) as
 * for a success, with the PUBLISH it sent rather than the PUBACK (mqtt/build/lib/handlers/ack.js): the
 * code is not in what the callback gets. The client emits each packet ('packetreceive') before it
 * handles it, so the code is kept here under its packet identifier and taken by that callback. An
 * identifier is the publish's until its callback has run (mqtt.js frees it only then), so no PUBACK
 * of a later publish can stand in for it; and each PUBACK of an identifier replaces what an earlier
 * one left (one settling a publish whose callback takes nothing here, a device's presence).
 * Only codes other than 0 are kept: at most one per identifier, most often none.
 */
export class PubackReasons {
  private readonly codes = new Map<number, number>();

  /** One per client, whoever asks: each PUBACK is counted once. */
  static of(mqtt: MqttClient): PubackReasons {
    let reasons = byClient.get(mqtt);
    if (!reasons) {
      reasons = new PubackReasons(mqtt);
      byClient.set(mqtt, reasons);
    }
    return reasons;
  }

  private constructor(mqtt: MqttClient) {
    mqtt.on('packetreceive', (packet) => {
      if (packet.cmd !== 'puback' || packet.messageId === undefined) return;
      // MQTT 3.1.1 has no reason codes: every PUBACK a success.
      const code = packet.reasonCode ?? 0;
      if (code === 0) this.codes.delete(packet.messageId);
      else this.codes.set(packet.messageId, code);
    });
  }

  /**
   * The reason code of the PUBACK that settled the publish of packet identifier `messageId`, called
   * from that publish's callback (0 for a success, and where no PUBACK came: the client's own error).
   */
  take(messageId: number | undefined): number {
    if (messageId === undefined) return 0;
    const code = this.codes.get(messageId) ?? 0;
    this.codes.delete(messageId);
    return code;
  }
}
