import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
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

/**
 * On every answer of a JSON API reached with curl or by programs (the command API, the services'
 * metrics ports), errors and the parser's refusals too: no cache keeps an answer (each is one
 * caller's), and no browser takes the JSON for anything else (a device's text is quoted in it).
 */
export const API_ANSWER_HEADERS: Readonly<Record<string, string>> = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' };

/**
 * What a plain node:http server answers before any handler of its own sees the request: a request
 * Node's parser refuses gets the server's error shape with a code and `headers` (answerClientError),
 * and one whose Expect names anything but 100-continue is served as if it expected nothing (Node's
 * own answer was a 417 with no body, no code and none of the server's headers; RFC 9110 §10.1.1
 * lets a server answer 417 to it, and asks nothing of one that does not).
 */
export function answerBeforeHandlers(server: Server, render: (code: ErrorCode, message: string) => unknown, headers: Readonly<Record<string, string>>): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => answerClientError(err, socket, render, headers));
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => server.emit('request', req, res));
}
