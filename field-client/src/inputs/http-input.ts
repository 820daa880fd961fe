import { createHash, randomUUID } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { unsafeFilenameReason } from '../../../shared/contract/filename.ts';
import { FilePayloadSchema } from '../../../shared/contract/payloads.ts';
import { FieldStreamError, isFieldStreamError } from '../../../shared/errors.ts';
import { readJsonBody, refuseContentCoding } from '../../../shared/http-body.ts';
import { answerBeforeHandlers } from '../../../shared/http-client-error.ts';
import { idempotencyKey } from '../../../shared/idempotency-key.ts';
import { LimitedLog } from '../../../shared/limited-log.ts';
import { LIMITS, TIMINGS } from '../../../shared/limits.ts';
import { refuseUnservedHost, servedHostNames } from '../../../shared/security/host-header.ts';
import { closeStalledConnections } from '../../../shared/stalled-answers.ts';
import type { Logger } from '../../../shared/logger.ts';
import type { FieldClient } from '../field-client.ts';
import type { HealthReporter } from '../health.ts';
import { fileAnswer, KeysFile, queuedFiles, takenAnswer } from './http-keys-file.ts';
import { KeyedRequests, type KeptAnswer } from './http-resends.ts';
import { guardBody, receiveBody } from './http-upload.ts';
import { capConnections, type LocalInput } from './input.ts';
import { READINGS_MAX_CONTAINERS, toLocalValuesUpdate, toSubmissions } from './validate.ts';

/**
 * The local HTTP input and status endpoint, on loopback by default:
 *
 *   POST /v1/timeseries   a reading, or an array of readings (payload objects)      → 202 once on disk
 *   POST /v1/events       an event, or an array of events                            → 202 once on disk
 *   POST /v1/files?filename=NAME[&contentType=TYPE]   the file as the raw body       → 202 once on disk
 *                         (not a form: multipart/form-data is refused, 400)
 *                         (507 FIELD_QUEUE_FULL as soon as it, by its Content-Length or as it arrives, outgrows the room left)
 *   PUT  /v1/health       values for the health message, {"battery": 87}; null removes one → 200
 *   GET  /v1/health       those values and the last health message queued
 *   GET  /status          connection, queue depth, oldest unsent reading, last ack, last health message
 *
 * A POST with an Idempotency-Key is taken once: its retries are answered as it was (http-resends.ts),
 * after a restart too (http-keys-file.ts).
 * A request naming a host other than localhost, an IP address, `host` or one of `hostNames`
 * (FIELD_HTTP_HOST_NAMES) is refused, HTTP_HOST_NOT_SERVED (shared/security/host-header.ts).
 */
export function httpInput(client: FieldClient, host: string, port: number, dataDir: string, log: Logger, health?: HealthReporter, hostNames: readonly string[] = []): LocalInput {
  const served = servedHostNames(host, hostNames);
  const incoming = join(dataDir, 'incoming');
  // No requestTimeout: it bounds a whole request, its body included, and cut off (408) every upload
  // that took longer to arrive (a file of a few GiB written to an SD card takes minutes), so it was
  // never taken, however often sent. A body is bounded by guardBody instead: by its pauses, and a
  // JSON body by a deadline. Set here, at construction, as Node documents them.
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    // The path as route() reads it (normalised: `/v1/files/../events` is /v1/events, and an absolute
    // `http://host/v1/files` is /v1/files), so the body's deadline is the one of the endpoint that
    // reads it: judged on the raw text, a JSON body escaped its deadline and a file got one.
    let url: URL | undefined;
    let target: unknown;
    try {
      url = requestUrl(req.url);
    } catch (err) {
      target = err;
    }
    guardBody(req, res, url?.pathname === '/v1/files' ? undefined : TIMINGS.localInputRequestTimeoutMs, log);
    open.set(req, new Promise<void>((resolve) => res.once('close', () => resolve())));
    res.once('close', () => open.delete(req));
    (url ? route(req, res, url) : Promise.reject(target)).catch((err: unknown) => {
      // An error without a code is the machine's, not the producer's (the device's storage failing
      // under an upload: ENOENT, ENOSPC, EIO writing incoming/, syncing, hashing): transient, so the
      // producer sends it again rather than drop it as it would on a 400 (final, docs/errors.md).
      const coded = isFieldStreamError(err) ? err : new FieldStreamError('FIELD_STORAGE_FAILED', `The device could not store it: ${(err as Error).message}`, {}, { cause: err });
      if (!isFieldStreamError(err)) log.error({ code: coded.code, err }, 'local HTTP input failed');
      send(res, coded.httpStatus, { code: coded.code, message: coded.message });
    });
  };
  const server = createServer({
    requestTimeout: 0,
    headersTimeout: TIMINGS.localInputHeadersTimeoutMs,
    connectionsCheckingInterval: TIMINGS.localInputConnectionsCheckMs,
  }, onRequest);
  // A request Node's parser refuses (bad chunked encoding, a malformed header, headers past its
  // limit or its time) reaches no route: answered with a code of the registry, as every other
  // refusal here, rather than Node's bare 400 that named nothing to fix; and an Expect it does not
  // know is served as if absent, rather than Node's bare 417.
  answerBeforeHandlers(server, (code, message) => ({ code, message }), {});
  capConnections(server, LIMITS.localHttpMaxConnections, new LimitedLog(log, { maxPerWindow: LIMITS.localInputBusyLogMaxPerWindow, windowMs: TIMINGS.floodLogIntervalMs, what: 'local HTTP connections refused as busy' }), 'HTTP');
  // Once a body is in, nothing above watches its connection: one whose program reads none of its
  // answers (requests pipelined) is closed once they have been stuck for localInputAnswerStallMs.
  closeStalledConnections(server, () => TIMINGS.localInputAnswerStallMs, log);
  // A producer that asks before it sends its body (Expect: 100-continue; curl does for bodies over
  // 1 MiB) is told to go on only once the endpoint reads it (goOn). Node's own answer, 100 at once,
  // had a file the device refuses by its length (507, 400) sent whole, up to 10 GiB, to be discarded.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    awaitingContinue.add(req);
    onRequest(req, res);
  });

  async function route(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    // A page rebound to the device's address, in a browser that sends neither Origin nor
    // Sec-Fetch-Site (older ones, some embedded web views), is told from a program by its Host alone:
    // fromBrowser let it read /status and /v1/health.
    refuseUnservedHost(req, served, 'FIELD_HTTP_HOST_NAMES');
    fromBrowser(req);
    // A body in a content coding (gzip) is refused (415) before it is read: the input does not decode
    // bodies, and a gzipped file was stored, answered 202 and delivered as its compressed bytes.
    if (req.method === 'POST' || req.method === 'PUT') refuseContentCoding(req, res);
    if (req.method === 'GET' && url.pathname === '/status') return send(res, 200, { ...client.status(), health: health?.status() ?? null });
    if (url.pathname === '/v1/health') return healthRoute(req, res);
    if (req.method !== 'POST') throw new FieldStreamError('FIELD_INPUT_INVALID', 'Use POST /v1/timeseries, /v1/events, /v1/files, PUT /v1/health or GET /status.');
    if (url.pathname === '/v1/timeseries' || url.pathname === '/v1/events') {
      const release = holdJson(req, LIMITS.localInputJsonMaxBytes);
      let held: HeldKey | undefined;
      try {
        held = holdKey(req);
        const body = await readJsonBody(req, res, { maxBytes: LIMITS.localInputJsonMaxBytes, tooLarge: 'FIELD_INPUT_INVALID', invalid: 'FIELD_INPUT_INVALID', maxContainers: READINGS_MAX_CONTAINERS, goOn: () => goOn(req, res) });
        const fingerprint = held && requestFingerprint(req, url, JSON.stringify(body));
        if (answeredAsRetry(res, held, fingerprint)) return;
        const items = toSubmissions(url.pathname === '/v1/events' ? 'event' : 'timeseries', body);
        const numbered = held ? client.queue.nextNumber : 0;
        const appending = client.submitMany(items);
        // Numbered by now (submitMany appends before its first await), and not yet written: the
        // queue's writer goes on only once this code awaits, so their `taking` line is synced
        // before a byte of them is written (see accept).
        if (held && client.queue.nextNumber - numbered === items.length) keysFile.numbered(held.key, fingerprint as string, client.queue.epoch, numbered, items.length);
        const accepted = await appending;
        return await accept(res, held, fingerprint, takenAnswer(accepted.map((m) => m.messageId)));
      } finally {
        release();
        unhold(held);
      }
    }
    if (url.pathname === '/v1/files') {
      const filename = url.searchParams.get('filename') ?? '';
      const reason = unsafeFilenameReason(filename);
      if (reason) throw new FieldStreamError('FIELD_INPUT_INVALID', `filename ${reason}`);
      // A form (curl -F, an HTML upload) wraps the file in its envelope, boundaries and part headers:
      // taken as the raw body it was stored so, a JPEG no viewer opens, answered 202.
      if (/^\s*multipart\/form-data\s*(;|$)/i.test(req.headers['content-type'] ?? '')) {
        throw new FieldStreamError('FIELD_INPUT_INVALID', 'The file is sent as the raw body (curl --data-binary @FILE), not as a form (multipart/form-data): taken so, its envelope would be stored as the file.');
      }
      // Checked as the gateway checks every chunk of it: a type it refuses would be a file accepted
      // here (202) and never delivered.
      const contentType = url.searchParams.get('contentType') ?? req.headers['content-type'] ?? 'application/octet-stream';
      const typeCheck = FilePayloadSchema.shape.contentType.safeParse(contentType);
      if (!typeCheck.success) throw new FieldStreamError('FIELD_INPUT_INVALID', `contentType ${typeCheck.error.issues[0]?.message ?? 'is not a media type'}`);
      // Room is held from the start, as the body arrives: refused at once by its announced length
      // (under drop-oldest, only what fits without dropping is held then, the rest as bytes come),
      // and cut off once it outgrows the room left, rather than written whole (up to
      // fileTransferMaxBytes, each upload at once) before the bound is looked at.
      const announced = Number(req.headers['content-length'] ?? 0);
      if (Number.isSafeInteger(announced) && announced > LIMITS.fileTransferMaxBytes) throw new FieldStreamError('FIELD_INPUT_INVALID', 'The file is too large.');
      const held = holdKey(req);
      let reservation: ReturnType<FieldClient['reserveFileRoom']> | undefined;
      const tmp = join(incoming, randomUUID());
      let size = 0;
      try {
        // A retry of a file taken is only compared with it (its digest): it needs no room, nor a copy on disk.
        const room = held?.kept === undefined ? client.holdAnnouncedRoom((Number.isSafeInteger(announced) && announced > 0 ? announced : 0) + LIMITS.fileRecordRoomBytes) : undefined;
        reservation = room;
        goOn(req, res);
        // The body's digest, for the request's fingerprint, as it arrives: only for a keyed request.
        const digest = held && createHash('sha256');
        size = await receiveBody(req, room ? tmp : undefined, (n) => {
          if (n > LIMITS.fileTransferMaxBytes) throw new FieldStreamError('FIELD_INPUT_INVALID', 'The file is too large.');
          const more = n + LIMITS.fileRecordRoomBytes - (room?.bytes ?? Infinity);
          if (room && more > 0) client.reserveFileRoom(more, room);
        }, digest);
        const sha256 = digest?.digest('hex');
        const fingerprint = sha256 === undefined ? undefined : requestFingerprint(req, url, sha256);
        if (answeredAsRetry(res, held, fingerprint)) return;
        if (held && sha256 !== undefined) keysFile.takingFile(held.key, fingerprint as string, { from: client.queue.nextNumber, sha256, size, filename });
        const m = await client.submitFile(tmp, { filename, contentType, move: true, reservation });
        return await accept(res, held, fingerprint, fileAnswer(m.messageId, size));
      } finally {
        reservation?.release();
        rmSync(tmp, { force: true });
        unhold(held);
      }
    }
    throw new FieldStreamError('FIELD_INPUT_INVALID', `No endpoint ${url.pathname}.`);
  }

  /** A local program's values (battery, signal strength), sent with every health message until replaced. */
  async function healthRoute(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!health) throw new FieldStreamError('FIELD_INPUT_INVALID', 'Health messages are off (FIELD_HEALTH_INTERVAL_S=off): no health values are taken.');
    if (req.method === 'GET') return send(res, 200, health.status());
    if (req.method !== 'PUT') throw new FieldStreamError('FIELD_INPUT_INVALID', 'Use PUT /v1/health with {"name": value, ...} or GET /v1/health.');
    const release = holdJson(req, LIMITS.healthLocalBodyMaxBytes);
    try {
      const body = await readJsonBody(req, res, { maxBytes: LIMITS.healthLocalBodyMaxBytes, tooLarge: 'FIELD_INPUT_INVALID', invalid: 'FIELD_INPUT_INVALID', goOn: () => goOn(req, res) });
      return send(res, 200, { local: health.setLocal(toLocalValuesUpdate(body)) });
    } finally {
      release();
    }
  }

  const keyed = new KeyedRequests();
  /** the answers kept on disk, read back at start() */
  const keysFile = new KeysFile(dataDir, keyed, log, () => client.queue.numberedAtOpen, (from) => queuedFiles(client.queue, from));

  /**
   * A POST's Idempotency-Key, if it has one (refused, FIELD_INPUT_INVALID, when malformed), with the
   * answer kept for it; held for this request when there is none (KeyedRequests.begin): give it back
   * with unhold once the request is answered. A PUT of health values is idempotent as it is.
   */
  function holdKey(req: IncomingMessage): HeldKey | undefined {
    const key = idempotencyKey(req, 'FIELD_INPUT_INVALID');
    return key === undefined ? undefined : { key, kept: keyed.begin(key) };
  }

  /** A keyed request the input has an answer for: answered with it, nothing taken (true). */
  function answeredAsRetry(res: ServerResponse, held: HeldKey | undefined, fingerprint: string | undefined): boolean {
    if (held?.kept === undefined) return false;
    const kept = keyed.same(held.kept, fingerprint as string);
    log.info({ idempotencyKey: held.key.slice(0, 64) }, 'a request sent again with its Idempotency-Key: answered as it was, nothing queued again');
    sendText(res, kept.status, kept.text);
    return true;
  }

  /**
   * The request was taken (202): its answer kept for its key's retries, in memory and on disk
   * (keysFile), then sent. In this order, a SIGKILL (a crash, a power cut) at each instant gives:
   * - before the queue numbered readings or events (or wrote a file): nothing of it kept, no
   *   answer; the retry is taken anew, once.
   * - readings or events numbered, their `taking` line synced (KeysFile.numbered, before the
   *   queue writes any of them), the answer not yet kept: the next start settles it by the queue
   *   (http-keys-file.ts): on disk, the retry is answered with their ids, nothing queued again;
   *   never written, the retry is taken anew, once.
   * - a file's upload, its `takingFile` line synced (KeysFile.takingFile: what it is, before it
   *   is moved into the outbox, as the queue numbers a file only there), not yet moved: incoming/
   *   is emptied at the next start, nothing matches the line; the retry is taken anew, once.
   * - the file moved into the outbox (being placed, or its record written), its answer not yet
   *   kept: the next start's outbox recovery queues it (its own record, or FIELD_FILE_RECOVERED),
   *   then the line is settled by the first file record at or past its number with its bytes and
   *   name (http-keys-file.ts): the retry is answered with it, nothing queued again.
   * - the answer synced, not yet sent (or lost on its way): the retry after the restart is
   *   answered as it was, nothing queued again.
   * So whatever a producer was answered 202 is on disk twice over: in the queue, and as the answer
   * its retry gets. With FIELD_QUEUE_SYNC at an interval the queue's sync is awaited first
   * (durable): the answer kept must never outlive the records it names in a power cut, which
   * would answer the retry as taken and lose the reading.
   */
  async function accept(res: ServerResponse, held: { key: string } | undefined, fingerprint: string | undefined, text: string): Promise<void> {
    if (held) {
      await client.queue.durable();
      const entry = keyed.accepted(held.key, { fingerprint: fingerprint as string, status: 202, text });
      if (entry) keysFile.keep(held.key, entry);
    }
    sendText(res, 202, text);
  }

  function unhold(held: HeldKey | undefined): void {
    if (held && held.kept === undefined) {
      keyed.released(held.key);
      keysFile.released(held.key);
    }
  }

  /** bytes of JSON bodies being read or queued now (see holdJson) */
  let jsonHeld = 0;
  /**
   * Counts a JSON body of at most `maxBytes` among those held at once, by its Content-Length (one
   * without it as `maxBytes`), or refuses it (FIELD_INPUT_BUSY) past LIMITS.localInputJsonHeldMaxBytes.
   * Each is held whole in memory while it arrives, for up to TIMINGS.localInputRequestTimeoutMs:
   * uncounted, a program opening connections that trickle 8 MiB bodies held the device's memory.
   * Returns what gives its room back.
   */
  function holdJson(req: IncomingMessage, maxBytes: number): () => void {
    const announced = Number(req.headers['content-length']);
    const bytes = req.headers['content-length'] !== undefined && Number.isSafeInteger(announced) && announced >= 0 ? Math.min(announced, maxBytes) : maxBytes;
    if (bytes > 0 && jsonHeld + bytes > LIMITS.localInputJsonHeldMaxBytes) {
      throw new FieldStreamError('FIELD_INPUT_BUSY', `${jsonHeld} bytes of bodies are being read now, at most ${LIMITS.localInputJsonHeldMaxBytes}: send it again shortly.`);
    }
    jsonHeld += bytes;
    let held = true;
    return () => {
      if (held) jsonHeld -= bytes;
      held = false;
    };
  }

  /** requests not yet answered (or cut off), each with when its answer is done */
  const open = new Map<IncomingMessage, Promise<void>>();

  let bound: number | undefined;
  return {
    name: 'http',
    get port() {
      return bound;
    },
    async start() {
      // Uploads a stop cut off (a crash, a kill) are partial, answered with no 202, counted nowhere: gone.
      rmSync(incoming, { recursive: true, force: true });
      mkdirSync(incoming, { recursive: true });
      keysFile.load();
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err) => reject(new FieldStreamError('LISTEN_FAILED', `FIELD_HTTP_PORT: cannot listen on ${host}:${port}: ${err.message}`)));
        server.listen(port, host, () => resolve());
      });
      bound = (server.address() as AddressInfo).port;
      log.info({ host, port: bound }, 'local HTTP input listening');
    },
    /**
     * Stops listening, cuts off the requests whose body is still arriving (nothing of them is taken)
     * and waits, up to TIMINGS.localInputCloseGraceMs, for those whose body is in to be answered.
     * Cut off with the rest, a request being queued was queued all the same (the append goes on), its
     * producer told nothing: it sent it again after the restart, a second row, a second file.
     */
    async close() {
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const req of open.keys()) if (!req.complete) req.socket.destroy();
      server.closeIdleConnections();
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, TIMINGS.localInputCloseGraceMs)));
      await Promise.race([Promise.all(open.values()), grace]);
      clearTimeout(timer);
      server.closeAllConnections();
      await stopped;
    },
  };
}

/**
 * The request's target as a URL. Node's parser passes targets that are no URL (`//[/v1/events`, an
 * absolute form with a bad host): the producer's error, refused with FIELD_INPUT_INVALID (400, final).
 * Thrown uncoded it was taken for the device's storage failing (FIELD_STORAGE_FAILED, 503: send it
 * again), so the producer sent it again for ever, each logged as an error.
 */
function requestUrl(target: string | undefined): URL {
  try {
    return new URL(target ?? '/', 'http://local');
  } catch {
    throw new FieldStreamError('FIELD_INPUT_INVALID', `The request target is not a URL path: ${JSON.stringify((target ?? '').slice(0, 256))}.`);
  }
}

/**
 * Refuses (FIELD_INPUT_FROM_BROWSER) a request a web page makes: the input asks for no credentials,
 * and a page in any browser that reaches its port (a kiosk panel on the device itself) sends "simple"
 * cross-origin requests without asking first (a POST of text/plain or a form, any file), and reads
 * what it is answered once its name is rebound to 127.0.0.1; so it posted readings, events and files
 * as the device's own. Browsers say where a request comes from, programs do not: `Origin` (every
 * POST and PUT, and cross-origin reads), `Sec-Fetch-Site` (every request; `none` for an address a
 * person typed). Node's fetch sends `Sec-Fetch-Mode` but neither of these.
 */
function fromBrowser(req: IncomingMessage): void {
  const site = req.headers['sec-fetch-site'];
  if (req.headers.origin === undefined && (site === undefined || site === 'none')) return;
  throw new FieldStreamError(
    'FIELD_INPUT_FROM_BROWSER',
    `A web page's request (Origin ${JSON.stringify((req.headers.origin ?? '').slice(0, 256))}, Sec-Fetch-Site ${JSON.stringify(String(site ?? '').slice(0, 64))}) is not taken: the local input is for programs on the device.`,
  );
}

/** Requests that asked to be told to go on (Expect: 100-continue) and were not yet. */
const awaitingContinue = new WeakSet<IncomingMessage>();

/** The producer waiting to send its body is told to (100 Continue): the endpoint reads it now. */
function goOn(req: IncomingMessage, res: ServerResponse): void {
  if (awaitingContinue.delete(req)) res.writeContinue();
}

/** A request's Idempotency-Key, with the answer kept for it (none: the key is held for this request). */
interface HeldKey {
  key: string;
  kept: KeptAnswer | undefined;
}

/**
 * What a keyed request is, to tell its retry from another request under its key: its method, target
 * and the digest (or text) of its body.
 */
function requestFingerprint(req: IncomingMessage, url: URL, body: string): string {
  return createHash('sha256').update(`${req.method} ${url.pathname}${url.search}\n`).update(body).digest('base64');
}

function send(res: ServerResponse, status: number, body: unknown): void {
  sendText(res, status, JSON.stringify(body));
}

function sendText(res: ServerResponse, status: number, text: string): void {
  // A request cut off (guardBody) was answered already: the route's own failure then has nobody to tell.
  if (res.headersSent) return;
  // Answered before it was told to go on: its body does not come (RFC 9110 §10.1.1), and the
  // connection, whose next bytes could yet be it, is closed after the answer.
  if (awaitingContinue.delete(res.req)) res.shouldKeepAlive = false;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
