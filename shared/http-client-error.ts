import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { ERRORS, type ErrorCode } from './errors.ts';

/** The headers this answer writes itself, whatever a server's own list says. */
const FIXED = new Set(['content-type', 'content-length', 'cache-control', 'connection']);

/**
 * The answer to a request Node's HTTP parser refused (a malformed request line or header, headers
 * past its limit, a request not in within the server's timeout): it never reaches a route or an
 * error handler, and Node would answer with no body (fastify with a body of its own shape). Here
 * it gets the server's error shape with a code of the registry, like every other error, and the
 * connection is closed (its stream can no longer be parsed).
 *
 * `render` makes the server's body from the code and its description; `headers` (lower-case names,
 * fixed values of the server's own, never a client's) are the ones the server puts on every answer,
 * which this one must carry too (the console's CSP and framing refusal). Install it as the server's
 * 'clientError' listener (fastify: the `clientErrorHandler` option).
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex, render: (code: ErrorCode, message: string) => unknown, headers: Readonly<Record<string, string>> = {}): void {
  // A connection the client reset, or one that can no longer be written to: nothing to answer
  // (Node's documentation of the 'clientError' event).
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const code: ErrorCode = err.code === 'HPE_HEADER_OVERFLOW' ? 'HTTP_HEADERS_TOO_LARGE' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'HTTP_REQUEST_TIMEOUT' : 'HTTP_MALFORMED';
  const status = ERRORS[code].http;
  const body = JSON.stringify(render(code, ERRORS[code].description));
  // The server's own, but for those this answer sets itself (a second value would contradict them).
  const own = Object.entries(headers)
    .filter(([name]) => !FIXED.has(name))
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${own}content-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`,
  );
}
