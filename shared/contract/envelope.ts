import { z } from 'zod';
import { FieldStreamError } from '../errors.ts';
import { LIMITS } from '../limits.ts';
import { CommandNameSchema } from './downlink.ts';
import {
  EventPayloadSchema,
  FilePayloadSchema,
  HealthPayloadSchema,
  JsonValueSchema,
  ResponsePayloadSchema,
  type DataType,
  TimeseriesPayloadSchema,
} from './payloads.ts';
import { describeIssues, DeviceIdSchema, EpochMsSchema, MessageIdSchema, SeqSchema } from './primitives.ts';
import { GATEWAY_ID_PATTERN } from './topics.ts';
import { holdsMoreValuesThan } from './json-bound.ts';
import { MessageAuthSchema } from '../security/message-auth.ts';
import { CommandAuthSchema } from '../security/command-auth.ts';

/**
 * What travels on the brokers. The gateway publishes one envelope per device and data type,
 * holding every message of that kind from one frame, so a batch of readings costs one MQTT
 * message, not one each (Mosquitto is single-threaded; per-message cost caps the pipeline).
 *
 * The distributor parses envelopes with these schemas again: whatever crossed the DMZ is untrusted.
 * The envelopes of readings are compiled (zod's `z.compile`, strict), as the device frames are
 * (uplink.ts): every message is checked here, and the compiled check took 1.6 µs per message of
 * an envelope to 0.3 (measured, zod 4.6, Node 20), with the standard parser's errors.
 */
export const ENVELOPE_VERSION = 1;

/**
 * A gateway's id as every envelope names it: the gateway's own rule (GATEWAY_ID, one topic level).
 * Nothing in an envelope is believed for it, but it is written (a presence's `gateway` tag, a
 * security event's `gateway` field) and it names receipt topics: a free string let a compromised DMZ
 * send ids that line protocol cannot carry (a line break, a trailing backslash) or PostgreSQL
 * refuses (U+0000), so that the database refused the write and each such message was kept whole as
 * a dead letter with data, until the folder was full and the consumer that met the next one stalled
 * (docs/security-mechanisms.md). Refused here instead, as an invalid envelope.
 */
export const GatewayIdSchema = z.string().regex(GATEWAY_ID_PATTERN, 'must be 1 to 100 letters, digits, ".", "_" and "-" (a gateway id)');

const envelopeHeader = {
  v: z.literal(ENVELOPE_VERSION),
  deviceId: DeviceIdSchema,
  /** which gateway instance accepted it (for tracing) */
  gatewayId: GatewayIdSchema,
  /** epoch ms at which the gateway accepted the frame; the timestamp of readings without their own */
  receivedAt: EpochMsSchema,
};

function itemsOf<P extends z.ZodType>(payload: P) {
  return z
    .array(
      z.strictObject({
        messageId: MessageIdSchema,
        seq: SeqSchema.optional(),
        auth: MessageAuthSchema.optional(),
        /** epoch ms at which the gateway received this message's frame (messages of several frames can share an envelope) */
        receivedAt: EpochMsSchema.optional(),
        payload,
      }),
    )
    .min(1)
    .max(LIMITS.batchMaxMessages);
}

export const UplinkEnvelopeSchema = z.compile(
  z.discriminatedUnion('dataType', [
    z.strictObject({ ...envelopeHeader, dataType: z.literal('timeseries'), messages: itemsOf(TimeseriesPayloadSchema) }),
    z.strictObject({ ...envelopeHeader, dataType: z.literal('file'), messages: itemsOf(FilePayloadSchema) }),
    z.strictObject({ ...envelopeHeader, dataType: z.literal('event'), messages: itemsOf(EventPayloadSchema) }),
    z.strictObject({ ...envelopeHeader, dataType: z.literal('response'), messages: itemsOf(ResponsePayloadSchema) }),
    z.strictObject({ ...envelopeHeader, dataType: z.literal('health'), messages: itemsOf(HealthPayloadSchema) }),
  ]),
  { strict: true },
);
export type UplinkEnvelope = z.infer<typeof UplinkEnvelopeSchema>;

/**
 * Refuses more than LIMITS.batchMaxMessages sections, or sections holding more messages than that
 * in all, before any is parsed (what is not an array is left to the schema).
 */
function withinMessages(devices: unknown, ctx: z.RefinementCtx): unknown {
  if (!Array.isArray(devices)) return devices;
  if (devices.length > LIMITS.batchMaxMessages) {
    ctx.addIssue({ code: 'custom', message: `holds more than ${LIMITS.batchMaxMessages} sections` });
    return z.NEVER;
  }
  let count = 0;
  for (const section of devices as unknown[]) {
    const messages = typeof section === 'object' && section !== null ? (section as { messages?: unknown }).messages : undefined;
    if (Array.isArray(messages)) count += messages.length;
  }
  if (count > LIMITS.batchMaxMessages) {
    ctx.addIssue({ code: 'custom', message: `holds more than ${LIMITS.batchMaxMessages} messages` });
    return z.NEVER;
  }
  return devices;
}

/**
 * The readings of many devices in one envelope, published by the gateway that received them on its
 * own topic (topics.ts gatewayUplinkTopic). A device sending one reading a second has nothing to
 * batch with itself; thousands of such devices on one gateway would cost one MQTT message each on
 * every hop and in the distributor (the fleet benchmark: docs/performance.md). Each device's
 * messages form a section, checked by the distributor exactly as a device's own envelope is (its
 * signatures under its own key, its replay window); nothing in a section vouches for another.
 * At most LIMITS.batchMaxMessages messages in all, as in a device's envelope; one section per device.
 */
export const GatewayEnvelopeSchema = z.compile(
  z
    .strictObject({
      v: envelopeHeader.v,
      gatewayId: envelopeHeader.gatewayId,
      receivedAt: envelopeHeader.receivedAt,
      dataType: z.literal('timeseries'),
      // Counted before a section is parsed: from a compromised DMZ, a million messages in a thousand
      // sections (or a million empty sections) would otherwise all be validated before the totals
      // were looked at.
      devices: z.preprocess(
        withinMessages,
        z.array(z.strictObject({ deviceId: DeviceIdSchema, messages: itemsOf(TimeseriesPayloadSchema) })).min(1).max(LIMITS.batchMaxMessages),
      ),
    })
    // One section per device: two would be checked each against a replay window that records
    // neither until both are written, so the same message could be accepted twice.
    .refine((e) => new Set(e.devices.map((d) => d.deviceId)).size === e.devices.length, { message: 'names a device in more than one section', path: ['devices'] }),
  { strict: true },
);
export type GatewayEnvelope = z.infer<typeof GatewayEnvelopeSchema>;

/** One device's section of a gateway envelope, as the envelope of that device it stands for. */
export function sectionEnvelope(env: GatewayEnvelope, section: GatewayEnvelope['devices'][number]): EnvelopeOf<'timeseries'> {
  return { v: env.v, deviceId: section.deviceId, gatewayId: env.gatewayId, receivedAt: env.receivedAt, dataType: 'timeseries', messages: section.messages };
}
export type EnvelopeOf<T extends UplinkEnvelope['dataType']> = Extract<UplinkEnvelope, { dataType: T }>;

/** A command on its way down: published by the command API, forwarded by the gateway. */
export const CommandEnvelopeSchema = z.strictObject({
  v: z.literal(ENVELOPE_VERSION),
  commandId: MessageIdSchema,
  command: CommandNameSchema,
  params: JsonValueSchema.optional(),
  issuedAt: z.number().int().min(0),
  /** the command API's authentication for the device (security/command-auth.ts); the gateway forwards it untouched */
  auth: CommandAuthSchema.optional(),
});
export type CommandEnvelope = z.infer<typeof CommandEnvelopeSchema>;

/** Device presence, published retained by the gateway that holds (or lost) the connection. */
export const StatusEnvelopeSchema = z.strictObject({
  v: z.literal(ENVELOPE_VERSION),
  state: z.enum(['online', 'offline']),
  gatewayId: GatewayIdSchema,
  at: EpochMsSchema,
  /** epoch ms when the device's certificate expires (so expiry can be watched as a metric) */
  certNotAfter: EpochMsSchema.optional(),
  /**
   * epoch ms when the gateway let the device in, on an `online` published again for a connection it
   * announced before (at a reconnection to its broker, and once a day: TIMINGS.presenceRefreshMs);
   * absent on the presence of a connection or a disconnection, so that what is stored tells a
   * change from a reminder. Sent only on those republications: a distributor of an earlier version
   * refuses a field it does not know, and only they are then lost (upgrade the internal side first).
   */
  since: EpochMsSchema.optional(),
});
export type StatusEnvelope = z.infer<typeof StatusEnvelopeSchema>;

/**
 * A gateway's own presence (not retained). `online` when it connects to its broker; `offline` when it
 * stops, or, sent by the broker as the gateway's will (MQTT 5 §3.1.2.5), when its connection is
 * lost: the gateway is gone, and so are the connections of the devices it held. `since`: epoch ms
 * the gateway process started.
 */
export const GatewayPresenceSchema = z.strictObject({
  v: z.literal(ENVELOPE_VERSION),
  state: z.enum(['online', 'offline']),
  gatewayId: GatewayIdSchema,
  since: EpochMsSchema,
});
export type GatewayPresence = z.infer<typeof GatewayPresenceSchema>;

/** What a gateway reports to the internal side: refusals that say something about a device's security. */
export const GATEWAY_SECURITY_CODES = ['GATEWAY_RATE_LIMITED', 'GATEWAY_CERTIFICATE_REVOKED', 'GATEWAY_DEVICE_MISMATCH', 'GATEWAY_TOKEN_INVALID', 'GATEWAY_TOKEN_REVOKED', 'GATEWAY_TOKEN_EXPIRED'] as const;

/** Whether the gateway reports this refusal to the internal side. Token refusals only for a device
 * the tokens file knows (a wrong or revoked token): an unknown id is anyone's claim, not a device. */
export function isGatewaySecurityCode(code: string): code is (typeof GATEWAY_SECURITY_CODES)[number] {
  return (GATEWAY_SECURITY_CODES as readonly string[]).includes(code);
}

/**
 * A gateway's security report: per device and code, how many times it refused between `from` and
 * `to` (epoch ms). Counted, not one message per refusal, so that a device flooding the gateway
 * cannot flood the internal network. It is the gateway's word (the DMZ's): shown as such, never
 * used to decide anything about data.
 */
export const GatewaySecurityReportSchema = z.strictObject({
  v: z.literal(ENVELOPE_VERSION),
  gatewayId: GatewayIdSchema,
  from: EpochMsSchema,
  to: EpochMsSchema,
  events: z
    .array(z.strictObject({ deviceId: DeviceIdSchema, code: z.enum(GATEWAY_SECURITY_CODES), count: z.number().int().min(1).max(LIMITS.gatewayReportMaxCount) }))
    .max(LIMITS.gatewaySecurityReportMaxEntries),
  /** refusals not in `events` (more devices than a report holds) */
  dropped: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
});
export type GatewaySecurityReport = z.infer<typeof GatewaySecurityReportSchema>;

/** The first byte of `payload` that is not JSON's whitespace (RFC 8259 §2), or -1. */
function firstNonWhitespace(payload: Buffer): number {
  for (let i = 0; i < payload.length; i++) {
    const b = payload[i] as number;
    if (b !== 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) return b;
  }
  return -1;
}

/**
 * Values and containers (shared/contract/json-bound.ts) an envelope on the uplink topic of
 * `dataType` (topics.ts uplinkTopic) may hold: LIMITS.envelopeMaxValues, but a response's, whose
 * results are JSON of free form of up to LIMITS.commandResultMaxValues each
 * (LIMITS.responseEnvelopeMaxValues). The topic is what the broker's ACL checked; an envelope of
 * another kind than its topic's is refused after the parse.
 */
export function uplinkEnvelopeMaxValues(dataType: DataType): number {
  return dataType === 'response' ? LIMITS.responseEnvelopeMaxValues : LIMITS.envelopeMaxValues;
}

/**
 * Parses an MQTT payload with one of the envelope schemas (each a JSON object), or throws
 * CONTRACT_INVALID_ENVELOPE. A payload that cannot be an object (junk, an array, a string) is
 * refused by its first byte: text of it was a copy of up to 16 MiB per consumer, and JSON.parse
 * of 16 MiB of `[{},{},...]` made 5.6 million objects, only for the schema to refuse the array.
 * An object of more values and containers than `maxValues` (any legal envelope's most, by default;
 * a response's: uplinkEnvelopeMaxValues) is refused before JSON.parse builds them:
 * `{"a":[{},{},...]}` was those 5.6 million objects still.
 */
export function parseEnvelope<S extends z.ZodType>(schema: S, payload: Buffer, maxValues: number = LIMITS.envelopeMaxValues): z.infer<S> {
  const first = firstNonWhitespace(payload);
  if (first !== 0x7b) {
    throw new FieldStreamError('CONTRACT_INVALID_ENVELOPE', `The MQTT payload is not a JSON object: ${first === -1 ? 'it is empty' : `it begins with byte 0x${first.toString(16).padStart(2, '0')}`}`);
  }
  if (holdsMoreValuesThan(payload, maxValues)) {
    throw new FieldStreamError('CONTRACT_INVALID_ENVELOPE', `The MQTT payload is not a valid envelope: it holds more than ${maxValues} JSON values and containers`, { bytes: payload.length });
  }
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch (err) {
    throw new FieldStreamError('CONTRACT_INVALID_ENVELOPE', `The MQTT payload is not JSON: ${(err as Error).message}`);
  }
  const result = schema.safeParse(value);
  if (!result.success) {
    const { first, issues } = describeIssues(result.error, '');
    throw new FieldStreamError('CONTRACT_INVALID_ENVELOPE', `The MQTT payload is not a valid envelope — ${first}`, { issues });
  }
  return result.data;
}
