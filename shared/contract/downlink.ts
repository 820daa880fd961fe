import { z } from 'zod';
import { LIMITS } from '../limits.ts';
import { ERRORS, type ErrorCode, type FieldStreamError } from '../errors.ts';
import { JsonValueSchema } from './payloads.ts';
import { CommandAuthSchema } from '../security/command-auth.ts';
import { MessageIdSchema } from './primitives.ts';
import { EpochSchema, SeqRangesSchema } from '../security/receipt-auth.ts';
import { MacSchema } from '../security/mac.ts';

/**
 * Gateway → device frames. Every frame has a `type`.
 *
 * - `ack`: the listed messages are in the DMZ broker (it answered PUBACK). A device that knows
 *   commit receipts keeps them until their `commit`; one that does not (wscat, a simple script)
 *   may forget them. A message not acked is not safe, however long ago it was sent.
 * - `commit`: a commit receipt from the distributor: the messages of `epoch` whose sequence
 *   numbers lie in `ranges` are durable on the internal network (database, file storage, or the
 *   dead-letter folder). `mac` is under the device's own key, so the DMZ cannot forge it: the
 *   device verifies it before deleting anything (shared/security/receipt-auth.ts).
 * - `error`: a stable `code` from the error registry and a human-readable `message`; `messageIds`
 *   names the messages it concerns (those were *not* accepted).
 * - `command`: a command for this device, to be answered with a `response` message.
 * - `welcome`: the first frame on a connection.
 * - `crl`: the CA's CRL (DER, base64), after the welcome, to a device whose upgrade request said
 *   (CRL_HEADER) that it holds an older one. The device takes it only when the CA signed it and it
 *   is newer than its own: the DMZ passes it on, and can withhold it, never forge it.
 */

/**
 * The upgrade request's header by which a device says which CRL it holds: its thisUpdate in epoch
 * milliseconds, 0 for none. A device that sends none (an older client, wscat) gets no `crl` frame.
 */
export const CRL_HEADER = 'x-fieldstream-crl';

/**
 * The upgrade request's header by which a device says which acks it reads: `all` (the default, as
 * when the header is absent) or `none`. A device that keeps nothing it has sent (it sends each
 * reading once and forgets it, as simple devices do) has no use for an ack frame per frame, and
 * each costs the gateway a write, the edge proxy a read and a write and a TLS record, the device a
 * read and, on a metered link, as many bytes again as its reading (docs/message-contract.md,
 * "Devices that read no acks"). With `none` the gateway sends no `ack` frames on that connection;
 * everything else is as before: `error` frames name the messages not taken, commit receipts,
 * commands and the CRL still come. Any other value is refused (GATEWAY_ACKS_HEADER_INVALID).
 */
export const ACKS_HEADER = 'x-fieldstream-acks';
export const AckModeSchema = z.enum(['all', 'none']);
export type AckMode = z.infer<typeof AckModeSchema>;

const ErrorCodeSchema = z.enum(Object.keys(ERRORS) as [ErrorCode, ...ErrorCode[]]);

export const AckFrameSchema = z.strictObject({
  type: z.literal('ack'),
  messageIds: z.array(MessageIdSchema).min(1).max(LIMITS.batchMaxMessages),
});
export type AckFrame = z.infer<typeof AckFrameSchema>;

export const CommitFrameSchema = z.strictObject({
  type: z.literal('commit'),
  epoch: EpochSchema,
  ranges: SeqRangesSchema,
  mac: MacSchema,
});
export type CommitFrame = z.infer<typeof CommitFrameSchema>;

export const ErrorFrameSchema = z.strictObject({
  type: z.literal('error'),
  code: ErrorCodeSchema,
  message: z.string(),
  /** at most a frame's worth: an error names messages of one frame */
  messageIds: z.array(MessageIdSchema).max(LIMITS.batchMaxMessages).optional(),
  details: z.record(z.string(), z.unknown()).optional(),
});
export type ErrorFrame = z.infer<typeof ErrorFrameSchema>;

export const CommandNameSchema = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9._-]+$/, 'must hold only letters, digits, ".", "_" and "-"');

export const CommandFrameSchema = z.strictObject({
  type: z.literal('command'),
  commandId: MessageIdSchema,
  command: CommandNameSchema,
  params: JsonValueSchema.optional(),
  /** epoch ms, when the operator issued it */
  issuedAt: z.number().int().min(0),
  /** the command API's MAC over the command for this device (security/command-auth.ts); a field client with a key runs nothing without it */
  auth: CommandAuthSchema.optional(),
});
export type CommandFrame = z.infer<typeof CommandFrameSchema>;

/** Sent once on connect: who the gateway took the device to be, its clock (for skew checks), its limits. */
export const WelcomeFrameSchema = z.strictObject({
  type: z.literal('welcome'),
  deviceId: z.string(),
  gatewayId: z.string(),
  /** epoch ms */
  serverTime: z.number().int(),
  /**
   * The least a gateway may announce (GATEWAY_MAX_FRAME_BYTES, GATEWAY_MAX_BATCH): below it (0, a
   * negative number) a device would fit nothing in a frame and send nothing, for ever, without a
   * word. Such a welcome is refused as any invalid frame (FIELD_GATEWAY_FRAME_INVALID, logged), and
   * the device sends within its own limits after TIMINGS.welcomeWaitMs instead.
   */
  limits: z.strictObject({
    frameMaxBytes: z.number().int().min(LIMITS.welcomeFrameMaxBytesMin),
    batchMaxMessages: z.number().int().min(1),
  }),
  /** `none`: no acks come on this connection, as the device asked (ACKS_HEADER); absent: every frame is acked */
  acks: z.literal('none').optional(),
});
export type WelcomeFrame = z.infer<typeof WelcomeFrameSchema>;

export const CrlFrameSchema = z.strictObject({
  type: z.literal('crl'),
  /** the CRL as the CA signed it (DER), in base64 (RFC 4648 §4) */
  crl: z
    .string()
    .min(4)
    .max(LIMITS.downlinkFrameMaxBytes)
    .regex(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/, 'must be base64'),
});
export type CrlFrame = z.infer<typeof CrlFrameSchema>;

/** Compiled (zod's `z.compile`, strict), as the uplink frames are: a device parses one for each of its envelopes' acks and receipts. */
export const DownlinkFrameSchema = z.compile(z.discriminatedUnion('type', [AckFrameSchema, CommitFrameSchema, ErrorFrameSchema, CommandFrameSchema, WelcomeFrameSchema, CrlFrameSchema]), { strict: true });
export type DownlinkFrame = z.infer<typeof DownlinkFrameSchema>;

export function errorFrame(err: FieldStreamError, messageIds?: string[]): ErrorFrame {
  const { messageId, ...details } = (err.details ?? {}) as Record<string, unknown>;
  const ids = messageIds ?? (typeof messageId === 'string' ? [messageId] : undefined);
  return {
    type: 'error',
    code: err.code,
    message: err.message,
    ...(ids && ids.length > 0 ? { messageIds: ids } : {}),
    ...(Object.keys(details).length > 0 ? { details } : {}),
  };
}
