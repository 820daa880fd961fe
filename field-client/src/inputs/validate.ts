import { z } from 'zod';
import {
  EventPayloadSchema,
  LOCAL_VALUE_NAME_PATTERN,
  LOCAL_VALUE_NAME_RULE,
  LocalValueSchema,
  TimeseriesPayloadSchema,
} from '../../../shared/contract/payloads.ts';
import { holdsMoreContainersThan } from '../../../shared/contract/json-bound.ts';
import { keysAtMost } from '../../../shared/contract/primitives.ts';
import { FieldStreamError } from '../../../shared/errors.ts';
import { LIMITS } from '../../../shared/limits.ts';
import type { Submission } from '../client-options.ts';

/**
 * Local inputs take readings and events in the payload form of the message contract (the
 * "payload" object of the seed's examples), one object or an array of them. They are checked here,
 * so a sensor learns at once that it sent something the gateway would refuse.
 */
export function toSubmissions(kind: 'timeseries' | 'event', body: unknown): Submission[] {
  const items = Array.isArray(body) ? body : [body];
  if (items.length === 0 || items.length > LIMITS.localInputMaxItems) throw new FieldStreamError('FIELD_INPUT_INVALID', `Send 1 to ${LIMITS.localInputMaxItems} items.`);
  const schema = kind === 'timeseries' ? TimeseriesPayloadSchema : EventPayloadSchema;
  return items.map((item, i) => {
    // An event's schema builds its result key by key, and a "__proto__" key set so is no key: the
    // field was taken (202, PUBACK) and gone from what was queued. Refused, as local values and
    // JSON values refuse it (shared/contract/payloads.ts).
    if (kind === 'event' && typeof item === 'object' && item !== null && Object.hasOwn(item, '__proto__')) {
      throw new FieldStreamError('FIELD_INPUT_INVALID', `item ${i}: __proto__: an event cannot hold a "__proto__" field`);
    }
    // More than LIMITS.readingMaxFields keys are refused by the schemas before any is checked
    // (shared/contract keysAtMost): 8 MiB of an event's keys held the event loop for seconds.
    const r = schema.safeParse(item);
    if (!r.success) {
      const first = r.error.issues[0];
      throw new FieldStreamError('FIELD_INPUT_INVALID', `item ${i}: ${first ? `${first.path.join('.') || '(payload)'}: ${first.message}` : 'invalid'}`);
    }
    return { dataType: kind, payload: r.data } as Submission;
  });
}

/** Objects and arrays readings or events may hold: an array of at most LIMITS.localInputMaxItems flat objects. */
export const READINGS_MAX_CONTAINERS = LIMITS.localInputMaxItems + 1;

/**
 * An MQTT payload's JSON, refused (FIELD_INPUT_INVALID) when it is not UTF-8 (RFC 8259 §8.1) or not
 * JSON; with `maxContainers`, also when it holds more objects and arrays than that, counted before
 * it is parsed (json-bound.ts): JSON.parse of 8 MiB of nested arrays held the event loop for 2 s. Read as UTF-8 all the same, each bad byte became U+FFFD: a sensor writing Latin-1 had its
 * "Tür" acknowledged and queued as "T\uFFFDr", never told. (The HTTP input's bodies: readJsonBody.)
 */
export function parsePayloadJson(payload: Uint8Array | string, maxContainers?: number): unknown {
  if (maxContainers !== undefined) {
    const bytes = typeof payload === 'string' ? Buffer.from(payload) : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
    if (holdsMoreContainersThan(bytes, maxContainers)) {
      throw new FieldStreamError('FIELD_INPUT_INVALID', `holds more than ${maxContainers} objects and arrays, more than any readings or events: send at most ${LIMITS.localInputMaxItems} flat objects`);
    }
  }
  let text: string;
  try {
    text = typeof payload === 'string' ? payload : UTF8.decode(payload);
  } catch {
    throw new FieldStreamError('FIELD_INPUT_INVALID', 'the payload is not UTF-8 (JSON is): send its text encoded as UTF-8');
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new FieldStreamError('FIELD_INPUT_INVALID', `not JSON: ${(err as Error).message}`);
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * What a local program reports for the health message: `{"battery": 87, "signal_dbm": -71}`, each
 * value replacing the one of that name, `null` removing it. Names follow the health message's rule
 * (shared/contract/payloads.ts), so what is taken here is what the gateway will accept.
 */
export const LocalValuesUpdateSchema = keysAtMost(
  LIMITS.healthLocalMaxValues,
  `holds more than ${LIMITS.healthLocalMaxValues} values`,
  z.record(z.string().regex(LOCAL_VALUE_NAME_PATTERN, `name ${LOCAL_VALUE_NAME_RULE}`), LocalValueSchema.nullable()),
);
export type LocalValuesUpdate = z.infer<typeof LocalValuesUpdateSchema>;

export function toLocalValuesUpdate(body: unknown): LocalValuesUpdate {
  const r = LocalValuesUpdateSchema.safeParse(body);
  if (r.success) return r.data;
  const first = r.error.issues[0];
  throw new FieldStreamError('FIELD_INPUT_INVALID', `health values: ${first ? `${first.path.join('.') || '(body)'}: ${first.message}` : 'invalid'}`);
}
