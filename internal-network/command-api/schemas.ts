import { z } from 'zod';
import { CommandNameSchema } from '../../shared/contract/downlink.ts';
import { COMMAND_RESPONSE_STATUSES, JsonValueSchema } from '../../shared/contract/payloads.ts';
import { DeviceIdSchema, MessageIdSchema } from '../../shared/contract/primitives.ts';
import { IdempotencyKeySchema } from '../../shared/idempotency-key.ts';
import { LIMITS } from '../../shared/limits.ts';

/** Most devices one request may address. */
export const MAX_TARGETS = 1000;

/** POST /v1/commands: exactly one of deviceId, deviceIds, group. */
export const CommandRequestSchema = z
  .strictObject({
    deviceId: DeviceIdSchema.optional(),
    deviceIds: z.array(DeviceIdSchema).min(1).max(MAX_TARGETS).optional(),
    group: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/).optional(),
    command: CommandNameSchema,
    params: JsonValueSchema.optional(),
    /** seconds the command stays deliverable to a device that is offline */
    ttlSeconds: z.number().int().min(1).max(LIMITS.commandMaxTtlS).optional(),
  })
  .refine((r) => [r.deviceId, r.deviceIds, r.group].filter((x) => x !== undefined).length === 1, {
    message: 'give exactly one of deviceId, deviceIds, group',
  });
export type CommandRequest = z.infer<typeof CommandRequestSchema>;

export const GroupsFileSchema = z.record(z.string().regex(/^[A-Za-z0-9._-]{1,64}$/), z.array(DeviceIdSchema).min(1).max(MAX_TARGETS));


export const COMMAND_STATES = ['queued', 'sent', ...COMMAND_RESPONSE_STATUSES, 'expired'] as const;

/** What the API reports for one command, and what the journal holds. */
export const CommandRecordSchema = z.object({
  commandId: MessageIdSchema,
  deviceId: DeviceIdSchema,
  command: CommandNameSchema,
  params: JsonValueSchema.optional(),
  /** epoch ms */
  issuedAt: z.number().int(),
  /** epoch ms */
  expiresAt: z.number().int(),
  state: z.enum(COMMAND_STATES),
  /** publishes of this command to the broker */
  attempts: z.number().int().min(0),
  /** epoch ms of the broker's PUBACK of the last publish */
  sentAt: z.number().int().optional(),
  /** `resultNotKept`: the device's result of this progress answer (`accepted`) was let go, as the
   * results of waiting commands are held within LIMITS.commandProgressResultsMaxBytes (progress-results.ts) */
  response: z.object({ status: z.enum(COMMAND_RESPONSE_STATUSES), result: JsonValueSchema.optional(), resultNotKept: z.literal(true).optional(), at: z.number().int() }).optional(),
  /** epoch ms at which this API ended the command `expired`; kept when the device's answer comes
   * after and replaces that state, so the command says the answer came late and that `expired` was
   * shown meanwhile (absent from commands expired before it was recorded) */
  expiredAt: z.number().int().optional(),
  updatedAt: z.number().int(),
  /** the request that made it, when it came with an Idempotency-Key: who sent it, the key, and the
   * SHA-256 of its body (a retry of the request is answered with its commands, never new ones) */
  request: z.object({ by: z.string().min(1).max(64), key: IdempotencyKeySchema, sha256: z.string().regex(/^[0-9a-f]{64}$/) }).optional(),
});
export type CommandRecord = z.infer<typeof CommandRecordSchema>;

const IsoTimeSchema = z.iso.datetime();

/** One command as the API answers it (GET /v1/commands/{id}, each of GET /v1/commands): its record, times as ISO 8601. */
export const CommandViewSchema = z.object({
  commandId: MessageIdSchema,
  deviceId: DeviceIdSchema,
  command: CommandNameSchema,
  params: JsonValueSchema.optional(),
  state: z.enum(COMMAND_STATES),
  issuedAt: IsoTimeSchema,
  expiresAt: IsoTimeSchema,
  attempts: z.number().int().min(0),
  sentAt: IsoTimeSchema.optional(),
  response: z.object({ status: z.enum(COMMAND_RESPONSE_STATUSES), result: JsonValueSchema.optional(), resultNotKept: z.literal(true).optional(), at: IsoTimeSchema }).optional(),
  /** when this API ended it `expired`, also once a late answer of the device's replaced that state */
  expiredAt: IsoTimeSchema.optional(),
});
export type CommandView = z.infer<typeof CommandViewSchema>;

/**
 * POST /v1/commands answers 202 with the commands the request made, one per device, each as
 * GET /v1/commands/{id} shows it but without its params: those are the request's, the same for
 * every device, and given once beside them (absent when the request had none). Repeated per device,
 * params of 64 KiB to 1,000 devices made an answer of 64 MB.
 */
export const IssuedAnswerSchema = z.object({
  params: JsonValueSchema.optional(),
  commands: z.array(CommandViewSchema.omit({ params: true })).min(1),
});
export type IssuedAnswer = z.infer<typeof IssuedAnswerSchema>;

/** A state after which the command waits for nothing more (only a late device answer replaces `expired`: dispatcher.ts). */
export function isFinal(state: CommandRecord['state']): boolean {
  return state === 'completed' || state === 'failed' || state === 'rejected' || state === 'expired';
}

/**
 * Who may do what: a viewer reads command state; an operator also sends commands; an admin may do
 * everything an operator may (and whatever administrative endpoints come).
 */
export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export const TokensFileSchema = z
  .array(
    z.strictObject({
      name: z.string().min(1).max(64),
      role: z.enum(ROLES),
      /** SHA-256 of the token, hex: the file holds no usable secret */
      sha256: z.string().regex(/^[0-9a-f]{64}$/),
    }),
  )
  .max(1000)
  // One token, one name, one role: of a token listed twice the last entry won (a role quietly
  // changed), and a name listed twice told two holders apart in no log line. COMMAND_API_TOKEN is
  // the name of that variable's token (credentials.ts).
  .superRefine((entries, ctx) => {
    const names = new Map<string, number>();
    const digests = new Map<string, number>();
    for (const [i, e] of entries.entries()) {
      if (e.name === 'COMMAND_API_TOKEN') ctx.addIssue({ code: 'custom', path: [i, 'name'], message: 'the name "COMMAND_API_TOKEN" is the variable\'s token\'s: choose another' });
      const name = names.get(e.name);
      if (name !== undefined) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `the name ${JSON.stringify(e.name)} is listed twice (entries ${name} and ${i}): one name, one token` });
      const digest = digests.get(e.sha256);
      if (digest !== undefined) ctx.addIssue({ code: 'custom', path: [i, 'sha256'], message: `the same token is listed twice (entries ${digest} and ${i}): one token, one name and role` });
      names.set(e.name, i);
      digests.set(e.sha256, i);
    }
  });
