import { request } from 'node:http';
import { connect } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';

export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  /** the body parsed as JSON, or its text when it is not JSON */
  body: any;
}

/**
 * One HTTP request with node:http from a chosen local address (Linux routes all of 127/8 to the
 * loopback): what throttles and proxies key on is the socket's address, which fetch cannot set.
 */
export function requestFrom(url: string | URL, o: { from?: string; method?: string; headers?: Record<string, string>; body?: unknown } = {}): Promise<Answer> {
  const body = o.body === undefined ? undefined : typeof o.body === 'string' ? o.body : JSON.stringify(o.body);
  const headers = { ...(o.headers ?? {}), ...(body !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } : {}) };
  return new Promise((resolve, reject) => {
    const req = request(url, { method: o.method ?? 'GET', localAddress: o.from ?? '127.0.0.1', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Bytes written as they are to a server's port, and its answer read until it closes: for requests
 * no HTTP client would send (a malformed header, headers past the parser's limit).
 */
export function rawRequest(port: number, text: string): Promise<{ status: number; headers: Record<string, string>; body: any }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let got = '';
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => (got += c));
    socket.on('error', reject);
    socket.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(got)?.[1] ?? 0);
      // The head's fields by lower-case name (a repeated one: its last value).
      const headers: Record<string, string> = {};
      for (const line of got.slice(0, Math.max(0, got.indexOf('\r\n\r\n'))).split('\r\n').slice(1)) {
        const colon = line.indexOf(':');
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const text = got.slice(got.indexOf('\r\n\r\n') + 4);
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        /* not JSON */
      }
      resolve({ status, headers, body });
    });
    socket.write(text);
  });
}

/**
 * A JSON body too large for `maxBytes`, sent whole and chunked (no Content-Length to refuse it by)
 * on a raw connection, then, once answered, on that same connection the `next` request a keep-alive
 * client sends after a refusal. Resolves with the refusal's text, the text that came after `next`,
 * and whether the server closed the connection (within `waitMs` after `next`). A server that gave
 * up reading the body must say Connection: close and close it (RFC 9112 §9.6), not keep a
 * connection open that it no longer reads.
 */
export async function oversizedChunkedThenNext(port: number, head: string, maxBytes: number, next: string, waitMs = 3000): Promise<{ first: string; answered: string; closed: boolean }> {
  // 1 MiB past the bound: more than the server has read (its socket reads are 64 KiB) when it
  // refuses the body, so a server that then stops reading leaves the rest unread.
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  let text = '';
  socket.on('data', (c) => (text += c));
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  await new Promise((r) => socket.once('connect', r));
  socket.write(`${head}Transfer-Encoding: chunked\r\n\r\n`);
  const piece = Buffer.alloc(64 * 1024, 0x20);
  for (let sent = 0; sent <= maxBytes + 1024 * 1024 && !socket.destroyed; sent += piece.length) {
    socket.write(`${piece.length.toString(16)}\r\n`);
    socket.write(piece);
    // Until it drains, or the server closed the connection (then it never drains).
    if (!socket.write('\r\n')) await Promise.race([new Promise((r) => socket.once('drain', r)), closed]);
  }
  if (!socket.destroyed) socket.write('0\r\n\r\n');
  for (let waited = 0; waited < waitMs && !/\r\n\r\n/.test(text) && !socket.destroyed; waited += 20) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 100));
  const first = text;
  text = '';
  if (!socket.destroyed) socket.write(next);
  const outcome = await Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), waitMs))]);
  socket.destroy();
  return { first, answered: text, closed: outcome };
}

/**
 * A client that pipelines `request` `times` times on one connection and reads none of the answers.
 * `closed`: the milliseconds from the last request written until the server closed the connection.
 */
export async function pipelinedUnread(port: number, request: string, times: number): Promise<{ closed: Promise<number>; destroy(): void }> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  socket.pause();
  // Written in reads' worth (64 KiB), as a client would; the server takes them as it answers.
  const perBatch = Math.max(1, Math.floor(65_536 / request.length));
  for (let sent = 0; sent < times; sent += perBatch) socket.write(request.repeat(Math.min(perBatch, times - sent)));
  const start = performance.now();
  // A socket reading nothing does not see the server close it (its reset) until it writes: an empty
  // line, which a server reading its requests skips (RFC 9112 §2.2), every 100 ms.
  const poke = setInterval(() => socket.write('\r\n'), 100);
  const closed = new Promise<number>((resolve) =>
    socket.once('close', () => {
      clearInterval(poke);
      resolve(performance.now() - start);
    }),
  );
  return {
    closed,
    destroy: () => {
      clearInterval(poke);
      socket.destroy();
    },
  };
}

/**
 * Requests (one, or several pipelined) whose answers are read at about `bytesPerSecond`, a piece
 * every 100 ms: resolves with the bytes read until `answers` answers were whole (each by its
 * Content-Length, or a chunked one at its last chunk, which is taken to be the first `0` chunk
 * after a CRLF: for bodies without CRLFs of their own) or the server closed the connection, and
 * whether they all were.
 */
export async function readSlowly(port: number, requests: string, bytesPerSecond: number, answers = 1): Promise<{ bytes: number; whole: boolean; ms: number }> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  socket.pause();
  socket.write(requests);
  const start = performance.now();
  let bytes = 0;
  /** where the answer being read ends, once its head is in (Infinity: chunked, until its last chunk) */
  let end: number | undefined;
  let head = '';
  /** the last bytes of a chunked body */
  let tail = '';
  let whole = 0;
  try {
    while (whole < answers) {
      await new Promise((r) => setTimeout(r, 100));
      if (socket.destroyed && socket.readableLength === 0) break;
      const piece = socket.read(Math.min(socket.readableLength, Math.ceil(bytesPerSecond / 10))) as Buffer | null;
      if (piece === null) continue;
      let at = 0;
      while (at < piece.length && whole < answers) {
        if (end === undefined) {
          // The head, read a byte at a time (it is small), up to its blank line.
          head += String.fromCharCode(piece[at] as number);
          at++;
          bytes++;
          if (head.endsWith('\r\n\r\n')) {
            end = /\r\ntransfer-encoding: *chunked\r\n/i.test(head) ? Infinity : bytes + Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? NaN);
            head = '';
            tail = '\r\n';
          }
        } else if (end === Infinity) {
          tail = (tail + String.fromCharCode(piece[at] as number)).slice(-7);
          at++;
          bytes++;
          if (tail === '\r\n0\r\n\r\n') end = bytes;
        } else {
          const take = Math.min(piece.length - at, end - bytes);
          at += take;
          bytes += take;
        }
        if (end !== undefined && bytes >= end) {
          whole++;
          end = undefined;
        }
      }
    }
  } finally {
    socket.destroy();
  }
  return { bytes, whole: whole >= answers, ms: performance.now() - start };
}
