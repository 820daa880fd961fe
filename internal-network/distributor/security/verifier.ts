import type { UplinkEnvelope } from '../../../shared/contract/envelope.ts';
import type { ErrorCode } from '../../../shared/errors.ts';
import type { Logger } from '../../../shared/logger.ts';
import { verifyMessage } from '../../../shared/security/message-auth.ts';
import type { StoredPoint } from '../points.ts';
import type { DeviceKeyRegistry } from './key-registry.ts';
import type { ReplayWindows } from './replay-window.ts';

export interface VerifierOptions {
  /** refuse messages without a device signature */
  requireSignatures: boolean;
  /** ms: how far a message's signing time may lie from the moment the gateway received it */
  freshnessMs: number;
  /** ms: how long a message may have waited between the gateway and here (broker queues, outages) */
  maxDelayMs: number;
}

export interface Verdict {
  /** the envelope holding only the messages that may be written */
  accepted: UplinkEnvelope | undefined;
  /** one security event per refused message */
  events: StoredPoint[];
  /** Records the accepted sequence numbers; call once their writes succeeded. */
  commit(): void;
}

/**
 * Checks every message that crossed the DMZ against what only the device and the internal network
 * know: its signature under the device's registered key, the freshness of its sending, and that its
 * sequence number was not accepted before. Refused messages become security events (database and
 * log) and are never written as data. A copy of an accepted message is recorded too
 * (SECURITY_DUPLICATE, logged at info: a device resending after a lost ack does this).
 */
export class MessageVerifier {
  readonly stats = { verified: 0, unsigned: 0, refused: 0, duplicates: 0 };

  constructor(
    private readonly keys: DeviceKeyRegistry,
    private readonly replay: ReplayWindows,
    private readonly o: VerifierOptions,
    private readonly log: Logger,
  ) {}

  check(env: UplinkEnvelope): Verdict {
    const now = Date.now();
    const events: StoredPoint[] = [];
    const keep: UplinkEnvelope['messages'][number][] = [];
    const toRecord: Array<{ epoch: string; seq: number }> = [];
    const inThisEnvelope = new Set<string>();
    const revoked = this.keys.isRevoked(env.deviceId);
    const key = revoked ? undefined : this.keys.get(env.deviceId);
    const refuse = (messageId: string, code: ErrorCode, detail: string) => {
      this.stats.refused++;
      // A duplicate is most often a device resending after a lost ack: recorded, but not alarming.
      const level = code === 'SECURITY_DUPLICATE' ? 'info' : 'warn';
      this.log[level]({ code, deviceId: env.deviceId, messageId, gatewayId: env.gatewayId }, `security: ${detail}`);
      events.push({
        measurement: 'security_events',
        tags: { device: env.deviceId, reason: code },
        fields: { message_id: messageId, gateway: env.gatewayId, data_type: env.dataType, detail },
        time: now + events.length, // one point per event, even several in the same millisecond
      });
    };
    const delayed = now - env.receivedAt;
    for (const m of env.messages) {
      const auth = m.auth;
      if (revoked) {
        refuse(m.messageId, 'SECURITY_REVOKED', 'the device was revoked');
        continue;
      }
      if (!auth) {
        if (this.o.requireSignatures) refuse(m.messageId, 'SECURITY_UNSIGNED', 'unsigned message refused (signatures are required)');
        else {
          this.stats.unsigned++;
          keep.push(m);
        }
        continue;
      }
      if (!key) {
        refuse(m.messageId, 'SECURITY_UNKNOWN_DEVICE', 'no signing key registered for this device (unknown or revoked)');
        continue;
      }
      if (!verifyMessage(key, { deviceId: env.deviceId, dataType: env.dataType, payload: m.payload }, auth)) {
        refuse(m.messageId, 'SECURITY_BAD_SIGNATURE', 'signature does not match the content and the device key');
        continue;
      }
      const arrived = m.receivedAt ?? env.receivedAt;
      if (Math.abs(arrived - auth.ts) > this.o.freshnessMs || delayed > this.o.maxDelayMs || delayed < -this.o.freshnessMs) {
        refuse(m.messageId, 'SECURITY_STALE', `signed at ${new Date(auth.ts).toISOString()}, received by the gateway at ${new Date(arrived).toISOString()}`);
        continue;
      }
      const seen = this.replay.check(env.deviceId, auth.epoch, auth.seq);
      if (seen === 'too-old') {
        refuse(m.messageId, 'SECURITY_REPLAY', `sequence ${auth.seq} of epoch ${auth.epoch} is below the replay window`);
        continue;
      }
      const id = `${auth.epoch}\u0000${auth.seq}`;
      if (seen === 'seen' || inThisEnvelope.has(id)) {
        this.stats.duplicates++;
        this.stats.refused--; // counted as a duplicate, not as a refusal
        refuse(m.messageId, 'SECURITY_DUPLICATE', `sequence ${auth.seq} of epoch ${auth.epoch} was accepted before; not written again`);
        continue;
      }
      this.stats.verified++;
      inThisEnvelope.add(id);
      toRecord.push({ epoch: auth.epoch, seq: auth.seq });
      keep.push(m);
    }
    return {
      accepted: keep.length > 0 ? ({ ...env, messages: keep } as UplinkEnvelope) : undefined,
      events,
      commit: () => {
        if (toRecord.length === 0) return;
        for (const r of toRecord) this.replay.record(env.deviceId, r.epoch, r.seq);
        this.replay.persist();
      },
    };
  }
}
