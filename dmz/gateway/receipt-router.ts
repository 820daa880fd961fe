import type { MqttClient } from 'mqtt';
import { parseEnvelope } from '../../shared/contract/envelope.ts';
import { ReceiptsEnvelopeSchema } from '../../shared/contract/receipt.ts';
import { parseTopic, receiptTopic } from '../../shared/contract/topics.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { subscribeOnEveryConnect, type Resubscription } from '../../shared/mqtt/connect.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { LimitedLog } from '../../shared/limited-log.ts';
import type { DeviceSession } from './device-session.ts';

/**
 * Carries commit receipts from the distributor to the devices this gateway holds. The distributor
 * sends them to the gateway whose id was on the messages' envelope, one MQTT message per database
 * write; each receipt becomes a `commit` frame for its device.
 *
 * The gateway checks only the shape: it cannot check a receipt's MAC (it never holds device keys)
 * and must not need to, since the device does. A receipt for a device not connected here is
 * dropped: that device sends its messages again after its commit timeout, and gets a receipt for
 * the copies, on whichever gateway it is then.
 */
export class ReceiptRouter {
  private readonly subscription: Resubscription;
  /** receipts messages refused: whoever holds the DMZ broker decides how many come */
  private readonly refusedLog: LimitedLog;
  readonly stats = { received: 0, delivered: 0, notConnected: 0, invalid: 0 };

  constructor(
    mqtt: MqttClient,
    private readonly gatewayId: string,
    private readonly sessionOf: (deviceId: string) => DeviceSession | undefined,
    private readonly log: Logger,
    /** counts the receipts delivered to a device */
    private readonly delivered?: { inc(): void },
  ) {
    // QoS 1: at most a duplicate, which the device counts as a replayed receipt and ignores.
    this.subscription = subscribeOnEveryConnect(mqtt, [receiptTopic(gatewayId)], { qos: 1 }, log);
    this.refusedLog = new LimitedLog(log, { maxPerWindow: LIMITS.gatewayDownlinkLogMaxPerWindow, windowMs: TIMINGS.gatewayRefusalLogWindowMs, level: 'warn', what: 'receipts messages refused' });
    mqtt.on('message', (topic, payload) => this.onMessage(topic, payload));
  }

  get ready(): Promise<void> {
    return this.subscription.ready;
  }

  close(): void {
    this.subscription.stop();
  }

  private onMessage(topic: string, payload: Buffer): void {
    let gatewayId: string;
    try {
      const parsed = parseTopic(topic);
      if (parsed.kind !== 'receipts') return;
      gatewayId = parsed.gatewayId;
    } catch {
      return; // not ours to route (the command router reports bad device topics)
    }
    try {
      // Bounded as a receipts message may be (LIMITS.receiptsMessageMaxValues), not as an envelope of
      // the DMZ's: a write of many scattered messages is answered with more ranges than that holds.
      const envelope = parseEnvelope(ReceiptsEnvelopeSchema, payload, LIMITS.receiptsMessageMaxValues);
      if (envelope.gatewayId !== this.gatewayId || gatewayId !== this.gatewayId) {
        this.stats.invalid++;
        this.refusedLog.write({ code: 'CONTRACT_INVALID_ENVELOPE', topic, envelopeGateway: envelope.gatewayId }, 'receipts for another gateway; dropped');
        return;
      }
      this.stats.received += envelope.receipts.length;
      for (const r of envelope.receipts) {
        const session = this.sessionOf(r.deviceId);
        if (session?.sendCommit({ type: 'commit', epoch: r.epoch, ranges: r.ranges, mac: r.mac })) {
          this.stats.delivered++;
          this.delivered?.inc();
        }
        else this.stats.notConnected++;
      }
    } catch (err) {
      // Not thrown on: mqtt.js calls this listener synchronously, and an error escaping it would end
      // the process, every device's connection with it, for one message of the DMZ broker.
      if (!isFieldStreamError(err)) {
        this.log.error({ code: 'GATEWAY_INTERNAL', topic, err }, 'handling receipts failed; the rest of that message dropped');
        return;
      }
      this.stats.invalid++;
      this.refusedLog.write({ code: err.code, topic }, err.message);
    }
  }
}
