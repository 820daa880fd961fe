import { FieldStreamError } from '../../../shared/errors.ts';
import { LIMITS } from '../../../shared/limits.ts';
import type { OutgoingMessage, QueuedMessage, QueueItem } from './queue-types.ts';
import { encodeRecordInto, recordBytes } from './record-codec.ts';
import { DATA_TYPES } from '../../../shared/contract/payloads.ts';

// One `append`'s records, encoded before the queue takes them: a payload that cannot be queued is
// refused there, and the segment writer (segment-writer.ts) only writes the bytes it is handed.

/** The records of one `append`, encoded, waiting for the writer. */
export interface EncodedBatch {
  /** the records one after another */
  block: Buffer;
  /** bytes of each record in the block */
  sizes: number[];
  outgoing: OutgoingMessage[];
  messages: QueuedMessage[];
}

/** The data types as JSON: escaped once here, not once per record. */
const DATA_TYPE_JSON = new Map<string, string>(DATA_TYPES.map((t) => [t, JSON.stringify(t)]));

/**
 * A record's body: the message as JSON, its payload spliced in as the text already made for it.
 * `idHead` is `,"messageId":"EPOCH.` with the epoch escaped once per batch: escaping the same
 * epoch and data type again for every record took a tenth of the encoding's time (measured).
 */
function recordBody(m: OutgoingMessage, idHead: string): string {
  return `{"seq":${m.seq}${idHead}${m.seq}","dataType":${DATA_TYPE_JSON.get(m.dataType) ?? JSON.stringify(m.dataType)},"payload":${m.payloadJson},"acceptedAt":${m.acceptedAt}}`;
}

/**
 * Encodes the items of one `append` as records numbered from `firstSeq`. Each payload is
 * serialised here, once: changing a payload object afterwards changes nothing queued.
 * Throws FIELD_INPUT_INVALID for a payload that cannot be JSON.
 */
export function encodeBatch(items: readonly QueueItem[], firstSeq: number, epoch: string, now: number): EncodedBatch {
  const messages: QueuedMessage[] = [];
  const outgoing: OutgoingMessage[] = [];
  const bodies: string[] = [];
  const sizes: number[] = [];
  let size = 0;
  // The messageId `${epoch}.${seq}` as JSON, but for its number and closing quote.
  const idHead = `,"messageId":${JSON.stringify(`${epoch}.`).slice(0, -1)}`;
  for (const item of items) {
    const seq = firstSeq + messages.length;
    let payloadJson: string | undefined;
    try {
      payloadJson = JSON.stringify(item.payload) as string | undefined;
    } catch (err) {
      // a cycle, or a BigInt: nothing that could be sent
      throw new FieldStreamError('FIELD_INPUT_INVALID', `The payload of a ${item.dataType} message cannot be JSON: ${(err as Error).message}`);
    }
    if (payloadJson === undefined) throw new FieldStreamError('FIELD_INPUT_INVALID', `The payload of a ${item.dataType} message is not JSON.`);
    // A byte count only where it may be past the limit (at most 3 UTF-8 bytes per UTF-16 unit).
    if (payloadJson.length * 3 > LIMITS.queuedPayloadMaxBytes) {
      const bytes = Buffer.byteLength(payloadJson, 'utf8');
      if (bytes > LIMITS.queuedPayloadMaxBytes) {
        throw new FieldStreamError('FIELD_INPUT_INVALID', `The payload of a ${item.dataType} message is ${bytes} bytes as JSON; at most ${LIMITS.queuedPayloadMaxBytes} fit in a frame the gateway takes.`);
      }
    }
    const out: OutgoingMessage = { seq, messageId: `${epoch}.${seq}`, dataType: item.dataType, payloadJson, acceptedAt: now };
    const body = recordBody(out, idHead);
    const bytes = recordBytes(body);
    messages.push({ seq, messageId: out.messageId, dataType: item.dataType, payload: item.payload, acceptedAt: now });
    outgoing.push(out);
    bodies.push(body);
    sizes.push(bytes);
    size += bytes;
  }
  // One buffer for the call's records: one allocation, and one piece to write, not one per record.
  const block = Buffer.allocUnsafe(size);
  for (let i = 0, at = 0; i < bodies.length; at += sizes[i] as number, i++) encodeRecordInto(block, at, bodies[i] as string);
  return { block, sizes, outgoing, messages };
}
