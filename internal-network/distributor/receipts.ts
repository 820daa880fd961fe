import type { MqttClient } from 'mqtt';
import { RECEIPTS_VERSION, type Receipt, type ReceiptsEnvelope } from '../../shared/contract/receipt.ts';
import { GATEWAY_ID_PATTERN, receiptTopic } from '../../shared/contract/topics.ts';
import { LimitedLog } from '../../shared/limited-log.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { signReceipt, toRanges } from '../../shared/security/receipt-auth.ts';
import type { SignedId } from './security/verdict.ts';
import { ConnectedRoundRobin } from './connected-clients.ts';

/** What one handled MQTT message lets the distributor tell its device. */
export interface ReceiptRequest {
  /** the gateway that received the messages: the receipt goes back through it */
  gatewayId: string;
  deviceId: string;
  ids: readonly SignedId[];
}

/** The device keys receipts are authenticated with (internal-network/shared/device-keys.ts). */
export interface ReceiptKeys {
  get(deviceId: string): Buffer | undefined;
}

/**
 * Sends commit receipts: after the distributor made messages durable (written, stored as a file,
 * or kept as a dead letter), it tells their device so, back through the gateway that received them.
 *
 * Requests are gathered until the end of the current turn of the event loop: the messages that one
 * database write settles are acknowledged in the same turn, so their receipts leave as one MQTT
 * message per gateway, each device and epoch named once, as ranges. A receipt that cannot be sent
 * (no broker connection) is not kept: the device sends the messages again after
 * FIELD_COMMIT_TIMEOUT_MS, and the copies are answered with receipts (the replay window knows them),
 * so losing a receipt costs a resend, never data. Published at QoS 1 so a broker restart loses few.
 */
export class ReceiptPublisher {
  /** gateway → "device \0 epoch" → sequence numbers */
  private pending = new Map<string, Map<string, number[]>>();
  private scheduled = false;
  private readonly roundRobin: ConnectedRoundRobin;
  readonly stats = { messages: 0, receipts: 0, unsent: 0, noKey: 0, noRoute: 0 };
  /**
   * Receipts with no way back, logged now and then: the envelope's gateway id is the DMZ's word,
   * and a compromised DMZ replaying one genuine message under an id that cannot be a topic level
   * would otherwise have a line written per copy (each is a duplicate, answered with a receipt).
   */
  private readonly noRouteLog: LimitedLog;

  constructor(
    clients: readonly MqttClient[],
    private readonly keys: ReceiptKeys,
    private readonly log: Logger,
    /** counts the receipts published */
    private readonly published?: { inc(n: number): void },
  ) {
    this.roundRobin = new ConnectedRoundRobin(clients);
    this.noRouteLog = new LimitedLog(log, { level: 'warn', maxPerWindow: 1, windowMs: TIMINGS.floodLogIntervalMs, what: 'receipts without a gateway to go back through' });
  }

  add(r: ReceiptRequest): void {
    if (r.ids.length === 0) return;
    if (!GATEWAY_ID_PATTERN.test(r.gatewayId)) {
      // The envelope's gateway id is the DMZ's word; one that cannot be a topic level has no way back.
      this.stats.noRoute++;
      this.noRouteLog.write({ gatewayId: r.gatewayId.slice(0, 100), deviceId: r.deviceId }, 'no receipt: the gateway id cannot be a topic level');
      return;
    }
    let byDevice = this.pending.get(r.gatewayId);
    if (!byDevice) this.pending.set(r.gatewayId, (byDevice = new Map()));
    for (const { epoch, seq } of r.ids) {
      const key = `${r.deviceId}\u0000${epoch}`;
      const seqs = byDevice.get(key);
      if (seqs) seqs.push(seq);
      else byDevice.set(key, [seq]);
    }
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.scheduled = false;
    const pending = this.pending;
    this.pending = new Map();
    for (const [gatewayId, byDevice] of pending) {
      const receipts: Receipt[] = [];
      for (const [key, seqs] of byDevice) {
        const [deviceId, epoch] = key.split('\u0000') as [string, string];
        const deviceKey = this.keys.get(deviceId);
        if (!deviceKey) {
          this.stats.noKey++; // revoked or removed since its messages were checked
          continue;
        }
        const all = toRanges(seqs);
        // A receipt holds at most receiptMaxRanges ranges; a very scattered set takes several.
        for (let i = 0; i < all.length; i += LIMITS.receiptMaxRanges) {
          const ranges = all.slice(i, i + LIMITS.receiptMaxRanges);
          receipts.push({ deviceId, epoch, ranges, mac: signReceipt(deviceKey, deviceId, epoch, ranges) });
        }
      }
      for (let i = 0; i < receipts.length; i += LIMITS.receiptsPerMessage) {
        this.publish(gatewayId, { v: RECEIPTS_VERSION, gatewayId, receipts: receipts.slice(i, i + LIMITS.receiptsPerMessage) });
      }
    }
  }

  private publish(gatewayId: string, envelope: ReceiptsEnvelope): void {
    const client = this.roundRobin.pick();
    if (!client) {
      this.stats.unsent += envelope.receipts.length;
      this.log.debug({ gatewayId, receipts: envelope.receipts.length }, 'receipts not sent: no broker connection; the device will send again');
      return;
    }
    this.stats.messages++;
    this.stats.receipts += envelope.receipts.length;
    this.published?.inc(envelope.receipts.length);
    client.publish(receiptTopic(gatewayId), JSON.stringify(envelope), { qos: 1 }, (err) => {
      if (err) {
        this.stats.unsent += envelope.receipts.length;
        this.log.warn({ gatewayId, receipts: envelope.receipts.length, err: err.message }, 'receipts not accepted by the broker; the device will send again');
      }
    });
  }
}
