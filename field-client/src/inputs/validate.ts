import { EventPayloadSchema, TimeseriesPayloadSchema } from '../../../shared/contract/payloads.ts';
import { FieldStreamError } from '../../../shared/errors.ts';
import type { Submission } from '../field-client.ts';

/**
 * Local inputs take readings and events in the payload form of the message contract (the
 * "payload" object of the seed's examples), one object or an array of them. They are checked here,
 * so a sensor learns at once that it sent something the gateway would refuse.
 */
export function toSubmissions(kind: 'timeseries' | 'event', body: unknown): Submission[] {
  const items = Array.isArray(body) ? body : [body];
  if (items.length === 0 || items.length > 10_000) throw new FieldStreamError('FIELD_INPUT_INVALID', 'Send 1 to 10000 items.');
  const schema = kind === 'timeseries' ? TimeseriesPayloadSchema : EventPayloadSchema;
  return items.map((item, i) => {
    const r = schema.safeParse(item);
    if (!r.success) {
      const first = r.error.issues[0];
      throw new FieldStreamError('FIELD_INPUT_INVALID', `item ${i}: ${first ? `${first.path.join('.') || '(payload)'}: ${first.message}` : 'invalid'}`);
    }
    return { dataType: kind, payload: r.data } as Submission;
  });
}
