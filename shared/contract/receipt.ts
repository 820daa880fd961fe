import { z } from 'zod';
import { LIMITS } from '../limits.ts';
import { EpochSchema, SeqRangesSchema } from '../security/receipt-auth.ts';
import { MacSchema } from '../security/mac.ts';
import { DeviceIdSchema } from './primitives.ts';
import { GATEWAY_ID_PATTERN } from './topics.ts';

/**
 * Commit receipts on the brokers: what the distributor sends back, through the internal broker,
 * the bridge and the DMZ broker, to the gateway that received the messages (its id is in every
 * uplink envelope). One MQTT message per database write and gateway, holding the receipts of every
 * device of that write: the downlink costs a message per write, not one per reading or device.
 *
 * Each receipt names what is now safe compactly, as ranges of sequence numbers of one epoch, and
 * carries a MAC under the device's own key (shared/security/receipt-auth.ts). The gateway cannot
 * check it and does not need to: it forwards each receipt to its device as a `commit` frame, and
 * the device verifies it before deleting anything.
 */
export const RECEIPTS_VERSION = 1;

export const ReceiptSchema = z.strictObject({
  deviceId: DeviceIdSchema,
  epoch: EpochSchema,
  /** inclusive ranges of sequence numbers, ascending */
  ranges: SeqRangesSchema,
  mac: MacSchema,
});
export type Receipt = z.infer<typeof ReceiptSchema>;

export const ReceiptsEnvelopeSchema = z.strictObject({
  v: z.literal(RECEIPTS_VERSION),
  gatewayId: z.string().regex(GATEWAY_ID_PATTERN),
  receipts: z.array(ReceiptSchema).min(1).max(LIMITS.receiptsPerMessage),
});
export type ReceiptsEnvelope = z.infer<typeof ReceiptsEnvelopeSchema>;
