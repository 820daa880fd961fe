import type { IncomingMessage } from 'node:http';
import { FieldStreamError, type ErrorCode } from './errors.ts';

/**
 * Reads a request body as JSON, at most `maxBytes` of it: a body declared or found larger is
 * refused with `tooLarge` as soon as that is known, without reading (or holding) the rest; one that
 * is not JSON with `invalid`. Each endpoint names its own codes and limit (see LIMITS).
 */
export async function readJsonBody(req: IncomingMessage, o: { maxBytes: number; tooLarge: ErrorCode; invalid: ErrorCode }): Promise<unknown> {
  const tooLarge = () => new FieldStreamError(o.tooLarge, `The body is larger than ${o.maxBytes} bytes.`);
  if (Number(req.headers['content-length'] ?? 0) > o.maxBytes) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > o.maxBytes) throw tooLarge();
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw new FieldStreamError(o.invalid, `The body is not JSON: ${(err as Error).message}`);
  }
}
