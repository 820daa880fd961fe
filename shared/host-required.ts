import type { IncomingMessage } from 'node:http';

/**
 * An HTTP/1.1 request must name its host (RFC 9112 §3.2: the server answers 400 to one without
 * Host). Node's own check (requireHostHeader) answered with no body, no code and none of a server's
 * headers: the console and the command API turn it off and refuse the request themselves, as
 * HTTP_MALFORMED in their error shape, the connection closed. An HTTP/1.0 request may name none.
 */
export function hostMissing(req: IncomingMessage): boolean {
  return req.headers.host === undefined && req.httpVersion === '1.1';
}

/** What the refusal says. */
export const HOST_MISSING_MESSAGE = 'An HTTP/1.1 request must name its host (a Host header, RFC 9112 §3.2); the connection is closed.';
