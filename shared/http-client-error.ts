import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { ERRORS, type ErrorCode } from './errors.ts';

/**
 * The answer to a request Node's HTTP parser refused (a malformed request line or header, headers
 * past its limit, a request not in within the server's timeout): it never reaches a route or an
 * error handler, and Node would answer with no body (fastify with a body of its own shape). Here
 * it gets the server's error shape with a code of the registry, like every other error, and the
 * connection is closed (its stream can no longer be parsed).
 *
 * `render` makes the server's body from the code and its description. Install it as the server's
 * 'clientError' listener (fastify: the `clientErrorHandler` option).
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex, render: (code: ErrorCode, message: string) => unknown): void {
  // A connection the client reset, or one that can no longer be written to: nothing to answer
  // (Node's documentation of the 'clientError' event).
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const code: ErrorCode = err.code === 'HPE_HEADER_OVERFLOW' ? 'HTTP_HEADERS_TOO_LARGE' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'HTTP_REQUEST_TIMEOUT' : 'HTTP_MALFORMED';
  const status = ERRORS[code].http;
  const body = JSON.stringify(render(code, ERRORS[code].description));
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`,
  );
}
