import type { Hash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Writable } from 'node:stream';
import { FieldStreamError } from '../../../shared/errors.ts';
import { TIMINGS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';

/** How the local HTTP input's request bodies arrive: an upload written out, and the bounds on its pace. */

/**
 * Writes a request's body to `path`, `check` told the bytes so far at each piece (it throws to
 * refuse). On a refusal the rest of the body is left unread, not the connection cut (as a pipeline
 * would, destroying the request): node discards the rest once the answer is sent, so the client
 * reads why (507, 400) instead of a reset.
 */
export function receiveBody(req: IncomingMessage, path: string | undefined, check: (bytes: number) => void, digest?: Hash): Promise<number> {
  return new Promise((resolve, reject) => {
    // Without a path only read (and digested): a retry compared with the file it repeats.
    const out = path === undefined ? new Writable({ write: (_chunk, _encoding, done) => done() }) : createWriteStream(path, { mode: 0o600 });
    let size = 0;
    let done = false;
    const fail = (err: unknown) => {
      if (done) return;
      done = true;
      req.off('data', onData);
      out.destroy();
      reject(err);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      try {
        check(size);
      } catch (err) {
        return fail(err);
      }
      digest?.update(chunk);
      if (!out.write(chunk)) {
        req.pause();
        out.once('drain', () => req.resume());
      }
    };
    req.on('data', onData);
    req.once('end', () => {
      if (!done) out.end();
    });
    out.once('finish', () => {
      if (done) return;
      done = true;
      resolve(size);
    });
    // The disk's error stays uncoded (FIELD_STORAGE_FAILED, 503); the producer's is its upload cut off.
    out.once('error', fail);
    req.once('error', (err) => fail(new FieldStreamError('FIELD_INPUT_INVALID', `The upload was cut off: ${err.message}`)));
    req.once('close', () => {
      if (!req.complete) fail(new FieldStreamError('FIELD_INPUT_INVALID', 'The upload was cut off.'));
    });
  });
}

/**
 * Bounds how a request's body arrives: cut off once no byte came for TIMINGS.localInputIdleTimeoutMs,
 * and (`totalMs`) once it took that long in all. A producer that froze, or lost its power or link
 * mid-upload (no FIN: nothing tells the server), would otherwise hold its connection, its partial
 * upload in incoming/, and the room the upload holds within FIELD_QUEUE_MAX_BYTES (which readings are
 * then refused, or dropped oldest, for) until a restart. Answered 408 HTTP_REQUEST_TIMEOUT when it can
 * be, then the connection is closed: the upload fails as cut off, its room given back. Once the body
 * is in, nothing here runs: taking a large file (hashing, syncing) may take minutes, and the producer
 * waits for its answer.
 */
export function guardBody(req: IncomingMessage, res: ServerResponse, totalMs: number | undefined, log: Logger): void {
  const cut = (why: string) => {
    if (req.complete || req.destroyed) return;
    log.warn({ code: 'HTTP_REQUEST_TIMEOUT', method: req.method, path: req.url?.split('?')[0] }, why);
    if (!res.headersSent) {
      res.shouldKeepAlive = false;
      // The connection closes after it (above): a body it was yet to be told to send never comes.
      const text = JSON.stringify({ code: 'HTTP_REQUEST_TIMEOUT', message: why });
      res.writeHead(408, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    }
    // Once a request is answered, Node no longer destroys it when its socket closes: destroyed here,
    // so that its reader (receiveBody, readJsonBody) fails, and the upload's room is given back.
    req.socket.once('close', () => req.destroy());
    req.socket.destroySoon();
  };
  req.setTimeout(TIMINGS.localInputIdleTimeoutMs, () => cut(`No byte of the body came for ${TIMINGS.localInputIdleTimeoutMs} ms: cut off.`));
  const deadline = totalMs === undefined ? undefined : setTimeout(() => cut(`The body was not in within ${totalMs} ms: cut off.`), totalMs);
  // Only at the body's end is the socket's timeout cleared: after the answer Node sets its own
  // (keep-alive), which a later clear would undo.
  req.once('end', () => {
    if (!res.headersSent) req.setTimeout(0);
  });
  req.once('close', () => clearTimeout(deadline));
}
