import { GatewayEnvelopeSchema, parseEnvelope, sectionEnvelope, UplinkEnvelopeSchema, uplinkEnvelopeMaxValues } from '../../shared/contract/envelope.ts';
import { parseTopic } from '../../shared/contract/topics.ts';
import type { ReceiptRequest } from './receipts.ts';
import type { MessageVerifier } from './security/verifier.ts';

/**
 * For a message kept whole as a dead letter: the receipt of its messages whose signature is
 * intact (they are durable in the dead-letter folder now), and those messages recorded in their
 * devices' replay windows, so that a copy is answered as a duplicate rather than kept again
 * (MessageVerifier.recordKept). None when it is not a valid envelope: then nothing in it can be
 * trusted to name a device's message.
 */
export function deadLetterReceipts(verifier: MessageVerifier, topic: string, payload: Buffer): ReceiptRequest[] {
  let receipts: ReceiptRequest[];
  try {
    const where = parseTopic(topic);
    if (where.kind === 'gatewayUplink') {
      const env = parseEnvelope(GatewayEnvelopeSchema, payload);
      if (env.gatewayId !== where.gatewayId) return [];
      receipts = env.devices.map((section) => ({ gatewayId: env.gatewayId, deviceId: section.deviceId, ids: verifier.recordKept(sectionEnvelope(env, section)) }));
    } else {
      if (where.kind !== 'uplink') return [];
      const env = parseEnvelope(UplinkEnvelopeSchema, payload, uplinkEnvelopeMaxValues(where.dataType));
      if (env.deviceId !== where.deviceId || env.dataType !== where.dataType) return [];
      receipts = [{ gatewayId: env.gatewayId, deviceId: env.deviceId, ids: verifier.recordKept(env) }];
    }
  } catch {
    return [];
  }
  try {
    verifier.persist();
  } catch {
    // The letter is durable whatever becomes of this: its receipts go. What was recorded stays in
    // memory and is journalled with the next persist (ReplayWindows keeps what an append refused).
  }
  return receipts;
}
