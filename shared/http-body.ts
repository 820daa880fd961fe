import type { IncomingMessage, ServerResponse } from 'node:http';
import { holdsMoreContainersThan } from './contract/json-bound.ts';
import { FieldStreamError, isFieldStreamError, type ErrorCode } from './errors.ts';

/**
 * Reads a request body as JSON, at most `maxBytes` of it: a body declared or found larger is
 * refused with `tooLarge` as soon as that is known, without reading (or holding) the rest; one that
 * is not JSON, or not UTF-8 (RFC 8259 §8.1), with `invalid`. Each endpoint names its own codes and limit (see LIMITS). A client
 * that goes before its body is in (closed, reset, timed out) is HTTP_REQUEST_ABORTED for every
 * endpoint: the client's doing, not the server's fault, and there is nobody left to answer.
 *
 * A body refused as it arrives is not read to its end: a keep-alive client's next request on that
 * connection would wait behind it (before, the request was destroyed, Node read nothing more from
 * the connection, and that next request was never answered). So `res`, the request's answer, says
 * Connection: close, and the connection closes once it is sent (RFC 9112 §9.6): the client opens
 * another. Until then what still arrives is read and dropped, not left unread: a connection closed
 * with bytes unread is reset (RST), and a client's kernel may drop the answer with it. Here, once,
 * rather than in each server's error handler: every server reading a body with this gets it.
 */
export async function readJsonBody(
  req: IncomingMessage,
  res: ServerResponse,
  /**
   * `maxContainers`: a body holding more objects and arrays is `invalid`, counted before it is parsed (json-bound.ts).
   * `goOn`: called once the body is to be read, its announced length checked: where a client that
   * asked first (Expect: 100-continue) is told to send it. Told before, one refused by its length
   * sent it whole, to be read and discarded.
   */
  o: { maxBytes: number; tooLarge: ErrorCode; invalid: ErrorCode; maxContainers?: number; goOn?: () => void },
): Promise<unknown> {
  const tooLarge = () => new FieldStreamError(o.tooLarge, `The body is larger than ${o.maxBytes} bytes.`);
  if (Number(req.headers['content-length'] ?? 0) > o.maxBytes) throw tooLarge();
  o.goOn?.();
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    // Not destroyed when the loop is left (too large): see above.
    for await (const chunk of req.iterator({ destroyOnReturn: false })) {
      size += (chunk as Buffer).length;
      if (size > o.maxBytes) {
        res.shouldKeepAlive = false;
        req.resume();
        throw tooLarge();
      }
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    if (isFieldStreamError(err) || !isRequestGone(req, err)) throw err;
    throw new FieldStreamError('HTTP_REQUEST_ABORTED', `The connection closed after ${size} bytes of the body.`, undefined, { cause: err });
  }
  const body = Buffer.concat(chunks);
  if (o.maxContainers !== undefined && holdsMoreContainersThan(body, o.maxContainers)) {
    throw new FieldStreamError(o.invalid, `The body holds more than ${o.maxContainers} objects and arrays, more than this endpoint takes.`);
  }
  let text: string;
  try {
    text = UTF8.decode(body);
  } catch {
    // Read as UTF-8 all the same, each bad byte became U+FFFD: a Latin-1 "Tür" was taken, answered
    // as accepted, and stored as "T\uFFFDr", the sender never told.
    throw new FieldStreamError(o.invalid, 'The body is not UTF-8 (JSON is): send its text encoded as UTF-8.');
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new FieldStreamError(o.invalid, `The body is not JSON: ${(err as Error).message}`);
  }
}

/**
 * Refuses a request whose body is sent with a content coding other than `identity` (RFC 9110
 * §8.4.1: 415), before a byte of it is read: none of FieldStream's JSON APIs decodes one, and read
 * as if plain a gzip body was refused as "not JSON" and a plain one so labelled taken. The body is
 * not read, so the connection closes once answered (as readJsonBody's refusals, above).
 */
export function refuseContentCoding(req: IncomingMessage, res: ServerResponse): void {
  const coding = req.headers['content-encoding'];
  if (coding === undefined || coding.split(',').every((c) => /^\s*(identity)?\s*$/i.test(c))) return;
  res.shouldKeepAlive = false;
  throw new FieldStreamError('HTTP_CONTENT_ENCODING_UNSUPPORTED', `The body is sent with Content-Encoding ${JSON.stringify(coding.slice(0, 64))}, which this server does not decode: send it as it is (no Content-Encoding).`);
}

/** Refuses bytes that are not UTF-8 rather than replacing them. */
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Whether a request's stream failed because its client went: Node destroys an IncomingMessage with
 * `aborted` (ECONNRESET) when the connection closes mid-body, and an iterator of a stream destroyed
 * without an error ends with ERR_STREAM_PREMATURE_CLOSE. Anything else is rethrown as it is.
 */
function isRequestGone(req: IncomingMessage, err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || (req.destroyed && !req.complete);
}
