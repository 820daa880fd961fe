import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { hostRefusal } from '../../shared/host-required.ts';
import { listenFailed } from '../../shared/listen-failed.ts';
import { terminalText } from '../../shared/terminal-text.ts';
import { readJsonBody, refuseContentCoding } from '../../shared/http-body.ts';
import { idempotencyKey } from '../../shared/idempotency-key.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { throttleSource, TokenThrottle } from '../../shared/security/throttle.ts';
import { describeIssues, DeviceIdSchema } from '../../shared/contract/primitives.ts';
import type { CommandDispatcher } from './dispatcher.ts';
import { CommandRequestSchema, type CommandRecord, type CommandRequest, type CommandView, type IssuedAnswer } from './schemas.ts';
import { roleAllows, type Credentials, type Principal } from '../shared/credentials.ts';
import type { CommandStore } from './store.ts';
import { answerBeforeHandlers, API_ANSWER_HEADERS } from '../../shared/http-client-error.ts';
import { closeStalledConnections } from '../../shared/stalled-answers.ts';
import { TEST_COMMAND, TestCommandParamsSchema, type TestCommandParams } from '../../shared/contract/test-command.ts';

export interface CommandHttpOptions {
  host: string;
  port: number;
  /** the setting that chooses `port` (COMMAND_API_PORT), named when it cannot be listened on */
  setting: string;
  /** who each bearer token is, and with which role */
  credentials: Pick<Credentials, 'verify'>;
  groups: Readonly<Record<string, readonly string[]>>;
  defaultTtlSeconds: number;
  dispatcher: CommandDispatcher;
  store: CommandStore;
  brokerConnected: () => boolean;
  logger: Logger;
  /** counts each answer by its HTTP status */
  requests?: { inc(labels: { status: string }): void } | undefined;
}

/**
 *   POST /v1/commands          {"deviceId"|"deviceIds"|"group", "command", "params"?, "ttlSeconds"?} → 202 {"params"?, "commands"}
 *   GET  /v1/commands/{id}     one command and its state
 *   GET  /v1/commands?deviceId=ID&limit=N   the latest commands
 *   GET  /healthz              no credential needed
 * Every other answer is {"code", "message"} with the code's HTTP status.
 */
export async function startCommandHttp(o: CommandHttpOptions): Promise<{ port: number; close(): Promise<void> }> {
  // Wrong bearer tokens are budgeted per source address with the management API's rules
  // (internal-network/console/manage/routes.ts): both take the same credentials, so guessing here
  // must not get around the throttle there. The socket's address: the command API trusts no
  // forwarded header. An address past its budget is refused before its token is looked at, a valid
  // one too, so a guesser learns nothing more until its window ends; below it, a valid token gets
  // through but clears nothing, so slipping one between guesses buys no more guesses.
  const throttle = new TokenThrottle(LIMITS.apiAuthMaxFailures, TIMINGS.apiAuthFailureWindowMs);
  const caller = (req: IncomingMessage): Principal => {
    const remote = req.socket.remoteAddress ?? 'unknown';
    // An IPv6 caller is budgeted as its /64 (throttleSource): a host holds all of it.
    const budget = throttleSource(remote);
    const source = [`addr:${budget}`];
    if (throttle.blocked(source)) {
      const retryAfterS = Math.max(1, Math.ceil(throttle.retryAfterMs(source) / 1000));
      throw new FieldStreamError('API_THROTTLED', `Too many wrong bearer tokens from ${budget}; try again in ${retryAfterS} s.`, { retryAfterS });
    }
    const header = req.headers.authorization;
    // The scheme in any case, then one space or more (RFC 9110 §11.1, §11.4), as the gateway reads
    // device tokens: `bearer TOKEN` (as OAuth's token_type is often written) is a valid token, not
    // a wrong guess charged to the address's budget.
    const m = /^Bearer +(.+)$/i.exec(header ?? '');
    const who = m?.[1] === undefined ? undefined : o.credentials.verify(m[1]);
    if (who) return who;
    // No header at all is no guess (a misconfigured script): refused, not charged.
    if (header !== undefined) {
      throttle.fail(source);
      o.logger.warn({ code: 'API_UNAUTHORIZED', remote, path: req.url?.split('?')[0] }, 'command API request with a bearer token that is no credential');
      if (throttle.blocked(source)) o.logger.warn({ code: 'API_THROTTLED', remote, budget, maxFailures: LIMITS.apiAuthMaxFailures, windowMs: TIMINGS.apiAuthFailureWindowMs }, 'too many wrong bearer tokens from one address (an IPv6 one: its /64): its command API requests are refused unchecked for a while');
    }
    throw new FieldStreamError('API_UNAUTHORIZED');
  };

  // How often Node looks for requests past headersTimeout and requestTimeout: its default (30 s) let
  // a client trickling its headers (slowloris) hold its connection six times headersTimeout.
  // A request without Host, or naming it twice, is refused in handle(), in the API's shape (shared/host-required.ts).
  const server: Server = createServer({ connectionsCheckingInterval: TIMINGS.commandApiConnectionsCheckMs, requireHostHeader: false }, (req, res) => {
    if (o.requests) res.once('finish', () => o.requests?.inc({ status: String(res.statusCode) }));
    // The connection, kept here: a request once destroyed has no req.socket any more (null). A body
    // refused as too large while it arrived was (readJsonBody destroyed it), and reading
    // req.socket.destroyed below then threw in this handler: a rejection nobody handled, which
    // ended the whole command API.
    const socket = req.socket;
    handle(req, res).catch((err: unknown) => {
      const path = req.url?.split('?')[0];
      if (isFieldStreamError(err, 'HTTP_REQUEST_ABORTED')) {
        // The client went mid-body: its doing, not the API's fault, and nobody is left to answer.
        o.logger.info({ code: err.code, method: req.method, path, remote: socket.remoteAddress, err: err.message }, 'request dropped by its client before its body was in');
        socket.destroy();
        return;
      }
      // An unexpected failure is the API's own fault, not the caller's: a 500 with its own code, the
      // cause in the log (never in the answer, which may go to a less trusted caller).
      const coded = isFieldStreamError(err) ? err : new FieldStreamError('API_INTERNAL', undefined, undefined, { cause: err });
      if (!isFieldStreamError(err)) o.logger.error({ code: 'API_INTERNAL', err, method: req.method, path }, 'unexpected error answering a request');
      // A credential used for what its role does not allow: an attempt the operators' audit wants
      // (the message names the credential and its role).
      else if (coded.code === 'API_FORBIDDEN') o.logger.warn({ code: coded.code, method: req.method, path, remote: socket.remoteAddress, err: coded.message }, 'request refused: its role does not allow it');
      // A connection gone meanwhile gets no answer (writing to it would only fail).
      if (socket.destroyed) return;
      const retryAfterS = coded.details?.retryAfterS;
      send(res, coded.httpStatus, { code: coded.code, message: coded.message, ...(coded.details ? { details: coded.details } : {}) }, typeof retryAfterS === 'number' ? { 'retry-after': String(retryAfterS) } : {});
    });
  });
  // A request Node's parser refuses, answered in the API's error shape too; an unknown Expect
  // served as if absent, not with Node's bare 417.
  answerBeforeHandlers(server, (code, message) => ({ code, message }), API_ANSWER_HEADERS);
  // How many at once: one more is closed as it is accepted. The timeouts bound how long each lasts,
  // not how many there are; without it anyone reaching the port could take every file descriptor,
  // and the journal (opened at each write) and the broker connection with them.
  server.maxConnections = LIMITS.commandApiMaxConnections;
  server.requestTimeout = TIMINGS.commandApiRequestTimeoutMs;
  server.headersTimeout = TIMINGS.commandApiHeadersTimeoutMs;
  // Those end once a request is in. A connection whose client reads none of its answers (pipelined
  // requests, a listing) is closed once no write to it has got under way for this long.
  server.timeout = TIMINGS.commandApiIdleTimeoutMs;
  // That timeout counts what the client sends too: one that keeps sending (an empty line every few
  // seconds, which the parser skips) and reads none of its answers is closed once nothing of them
  // has been taken for as long.
  closeStalledConnections(server, () => TIMINGS.commandApiIdleTimeoutMs, o.logger);

  /** bytes of listings being written to their callers now (LIMITS.commandApiListingsHeldMaxBytes) */
  let listingsHeld = 0;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const hostRefused = hostRefusal(req);
    if (hostRefused !== undefined) {
      // As a request Node's parser refuses: the connection closed after the answer.
      res.shouldKeepAlive = false;
      throw new FieldStreamError('HTTP_MALFORMED', hostRefused);
    }
    const url = requestUrl(req);
    if (url.pathname === '/healthz') {
      const ok = o.brokerConnected();
      return send(res, ok ? 200 : 503, { status: ok ? 'ok' : 'broker unreachable' });
    }
    const who = caller(req);
    if (url.pathname === '/v1/commands') {
      if (req.method === 'POST') {
        if (!roleAllows(who.role, 'operator')) throw new FieldStreamError('API_FORBIDDEN', `${who.name} (${who.role}) may not send commands; that needs the operator role.`);
        const key = idempotencyKey(req, 'API_IDEMPOTENCY_KEY_INVALID');
        const body = await readJson(req, res);
        // Checked before anything is made of it: JSON.parse takes a body nested thousands of levels
        // deep, which JSON.stringify (the key's fingerprint, below) cannot write (a RangeError, answered
        // as the API's own failure, 500 API_INTERNAL, for the caller's mistake).
        const command = commandRequest(body);
        let request: CommandRecord['request'];
        if (key !== undefined) {
          // A client that did not get its answer (a timeout, a dropped connection) sends the request
          // again with the same key, and gets the commands the first one made, never new ones
          // (draft-ietf-httpapi-idempotency-key-header). Keys are the caller's own: scoped by its name.
          request = { by: who.name, key, sha256: createHash('sha256').update(JSON.stringify(body)).digest('hex') };
          const earlier = o.store.byRequest(who.name, key);
          if (earlier.length > 0) {
            if (earlier[0]?.request?.sha256 !== request.sha256) {
              throw new FieldStreamError('API_IDEMPOTENCY_KEY_REUSED', 'Another request was sent with this Idempotency-Key before; nothing was sent. Use a new key for a new request.');
            }
            // Not 202 while the journal may not hold them (API_STATE_UNCERTAIN, as the first answer said).
            o.store.confirmDurable(earlier);
            o.logger.info({ by: who.name, commands: earlier.map((r) => r.commandId) }, 'a request sent again with its Idempotency-Key: answered with the commands it made');
            return send(res, 202, issuedAnswer(earlier));
          }
        }
        const records = create(command, who, request);
        o.logger.info({ by: who.name, role: who.role, commands: records.map((r) => r.commandId) }, 'commands sent');
        return send(res, 202, issuedAnswer(records));
      }
      if (req.method === 'GET') {
        // Each listing is held whole until its caller has read it: any credential not reading one on
        // each of its connections held up to commandListMaxBytes on each.
        if (listingsHeld + LIMITS.commandListMaxBytes > LIMITS.commandApiListingsHeldMaxBytes) {
          throw new FieldStreamError('API_BUSY', `Listings of ${listingsHeld} bytes are being written to their callers now; try again shortly.`, { retryAfterS: 1 });
        }
        const { records, total } = list(url.searchParams);
        const text = listAnswer(records, total);
        const bytes = Buffer.byteLength(text);
        listingsHeld += bytes;
        res.once('close', () => (listingsHeld -= bytes));
        return sendText(res, 200, text);
      }
      throw new FieldStreamError('API_METHOD_NOT_ALLOWED');
    }
    const m = /^\/v1\/commands\/([A-Za-z0-9._:-]{1,128})$/.exec(url.pathname);
    if (m) {
      if (req.method !== 'GET') throw new FieldStreamError('API_METHOD_NOT_ALLOWED');
      const record = o.store.get(m[1] as string);
      if (!record) throw new FieldStreamError('API_NOT_FOUND', `No command ${m[1]}.`);
      return send(res, 200, view(record));
    }
    throw new FieldStreamError('API_NOT_FOUND');
  }

  function create(r: CommandRequest, who: Principal, request: CommandRecord['request']): CommandRecord[] {
    const params = r.command === TEST_COMMAND ? testEventParams(r.params, who) : r.params;
    let targets: readonly string[];
    if (r.group !== undefined) {
      // Own keys only: a group named after an Object.prototype member (`constructor`) is no group.
      const members = Object.hasOwn(o.groups, r.group) ? o.groups[r.group] : undefined;
      if (!members) throw new FieldStreamError('API_UNKNOWN_GROUP', `No group "${r.group}".`);
      targets = members;
    } else {
      targets = r.deviceIds ?? [r.deviceId as string];
    }
    const records = o.dispatcher.issue([...new Set(targets)], r.command, params, r.ttlSeconds ?? o.defaultTtlSeconds, request);
    o.logger.info({ command: r.command, devices: records.length }, 'command issued');
    return records;
  }

  /** The commands asked for, newest first, and how many the API keeps of those (`limit` aside). */
  function list(q: URLSearchParams): { records: CommandRecord[]; total: number } {
    const deviceId = q.get('deviceId');
    if (deviceId !== null && !DeviceIdSchema.safeParse(deviceId).success) throw new FieldStreamError('API_INVALID_BODY', 'deviceId is not a device id.');
    // A limit that is no whole number in range is refused: put in its place (limit=0 listed 100), it
    // answered another question than the one asked.
    const asked = q.get('limit');
    const limit = asked === null ? LIMITS.commandListDefault : /^[1-9][0-9]{0,3}$/.test(asked) ? Number(asked) : NaN;
    if (!(limit >= 1 && limit <= LIMITS.commandListMax)) {
      throw new FieldStreamError('API_INVALID_BODY', `limit must be a whole number from 1 to ${LIMITS.commandListMax} (default ${LIMITS.commandListDefault}).`);
    }
    const kept = [...o.store.all()].filter((r) => deviceId === null || r.deviceId === deviceId);
    return { records: kept.slice(-limit).reverse(), total: kept.length };
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(listenFailed('Command API', `${o.host}:${o.port}`, o.setting, err)));
    server.listen(o.port, o.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  o.logger.info({ host: o.host, port }, 'command API listening');
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A POST's body as a command request (CommandRequestSchema), or API_INVALID_BODY naming what is wrong. */
function commandRequest(body: unknown): CommandRequest {
  const parsed = CommandRequestSchema.safeParse(body);
  if (!parsed.success) {
    const { first, issues } = describeIssues(parsed.error, '(body)');
    throw new FieldStreamError('API_INVALID_BODY', `Invalid command — ${first}`, { issues });
  }
  return parsed.data;
}

/**
 * The request target as a URL. Node's HTTP parser takes targets the URL parser refuses (`//[`, read
 * as a host): the caller's mistake, answered 400 like any other malformed request, not a 500.
 */
function requestUrl(req: IncomingMessage): URL {
  try {
    return new URL(req.url ?? '/', 'http://api');
  } catch {
    throw new FieldStreamError('API_INVALID_REQUEST', 'The request target is not a valid path.');
  }
}

/**
 * The test event (shared/contract/test-command.ts) is the management API's, for admins: every field
 * client answers it by itself and logs who asked for it. So it needs admin here too, whichever way
 * it comes (the management API, the console's pages, a script), and `requestedBy` is the caller's
 * name, never what the request says: no one can make a device's log name someone else.
 */
function testEventParams(params: unknown, who: Principal): TestCommandParams {
  if (!roleAllows(who.role, 'admin')) throw new FieldStreamError('API_FORBIDDEN', `${who.name} (${who.role}) may not send ${TEST_COMMAND}; that needs the admin role.`);
  const p = TestCommandParamsSchema.safeParse(params ?? {});
  if (!p.success) throw new FieldStreamError('API_INVALID_BODY', `Invalid ${TEST_COMMAND} params — ${describeIssues(p.error, '(params)').first}`);
  return { ...p.data, requestedBy: who.name };
}

function view(r: CommandRecord): CommandView {
  return {
    commandId: r.commandId,
    deviceId: r.deviceId,
    command: r.command,
    ...(r.params !== undefined ? { params: r.params } : {}),
    state: r.state,
    issuedAt: new Date(r.issuedAt).toISOString(),
    expiresAt: new Date(r.expiresAt).toISOString(),
    attempts: r.attempts,
    ...(r.sentAt ? { sentAt: new Date(r.sentAt).toISOString() } : {}),
    ...(r.response ? { response: { ...r.response, at: new Date(r.response.at).toISOString() } } : {}),
    ...(r.expiredAt !== undefined ? { expiredAt: new Date(r.expiredAt).toISOString() } : {}),
  };
}

/** The commands of one request (IssuedAnswerSchema): the request's params once, not once per device. */
function issuedAnswer(records: readonly CommandRecord[]): IssuedAnswer {
  // One request's commands all carry its params (dispatcher.issue): the first's are everyone's.
  const params = records[0]?.params;
  const commands = records.map((r) => {
    const { params: _theRequests, ...rest } = view(r);
    return rest;
  });
  return { ...(params !== undefined ? { params } : {}), commands };
}

/**
 * The listed commands, newest first, as many as fit in LIMITS.commandListMaxBytes as answered (one at
 * least), and `truncated` when some were left out: each is listed whole, params and result, and a
 * thousand of them made an answer of hundreds of megabytes, held in memory while the caller read it.
 * `total`: how many commands the API keeps of those asked for (a device's, or all), listed or not.
 * The answer's text, as send() would write `{commands, truncated?, total}`, put together from each command's
 * JSON, made once: to measure it and to send it (it was made twice, up to 16 MiB of JSON each time).
 */
function listAnswer(records: readonly CommandRecord[], total: number): string {
  const pieces: string[] = [];
  let bytes = Buffer.byteLength(`{"commands":[],"truncated":true,"total":${total}}`);
  let truncated = false;
  for (const r of records) {
    // terminalText escapes character by character, so the pieces escaped add up to the whole escaped.
    const piece = terminalText(JSON.stringify(view(r)));
    const size = Buffer.byteLength(piece) + 1;
    if (pieces.length > 0 && bytes + size > LIMITS.commandListMaxBytes) {
      truncated = true;
      break;
    }
    pieces.push(piece);
    bytes += size;
  }
  return `{"commands":[${pieces.join(',')}]${truncated ? ',"truncated":true' : ''},"total":${total}}`;
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  // A device's result is read with curl in a terminal (docs/commands.md): DEL, C1 and bidi controls
  // in its strings, which JSON.stringify writes raw, are sent as \u escapes, the same JSON values.
  sendText(res, status, terminalText(JSON.stringify(body)), headers);
}

/** An answer of JSON text, its terminal controls escaped already (terminalText, as send() does). */
function sendText(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...API_ANSWER_HEADERS });
  if (text.length <= LIMITS.commandApiAnswerPieceBytes / 3) {
    res.end(text);
    return;
  }
  // In pieces, the next once the one before has gone (server.timeout: a slow reader's progress).
  const body = Buffer.from(text, 'utf8');
  let at = 0;
  const next = (): void => {
    while (at < body.length) {
      const piece = body.subarray(at, (at += LIMITS.commandApiAnswerPieceBytes));
      if (!res.write(piece)) {
        res.once('drain', next);
        return;
      }
    }
    res.end();
  };
  next();
}

async function readJson(req: IncomingMessage, res: ServerResponse): Promise<unknown> {
  // The media type alone, whatever its parameters, in any case (RFC 9110 §8.3.1): `Application/JSON`
  // was refused, and `application/json-seq`, which only begins like it, taken.
  const type = (req.headers['content-type'] ?? '').split(';', 1)[0]?.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new FieldStreamError('API_INVALID_BODY', 'Send the body as application/json.');
  }
  refuseContentCoding(req, res);
  return readJsonBody(req, res, { maxBytes: LIMITS.apiBodyMaxBytes, tooLarge: 'API_BODY_TOO_LARGE', invalid: 'API_INVALID_BODY' });
}
