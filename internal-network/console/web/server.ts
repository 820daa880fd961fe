import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import fastifyCookie from '@fastify/cookie';
import fastifyCsrf from '@fastify/csrf-protection';
import fastifyRateLimit from '@fastify/rate-limit';
import fastifySession from '@fastify/session';
import fastifyStatic from '@fastify/static';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { ERRORS, FieldStreamError, isFieldStreamError, type ErrorCode } from '../../../shared/errors.ts';
import { hostRefusal } from '../../../shared/host-required.ts';
import { refuseContentCoding } from '../../../shared/http-body.ts';
import { listenFailed } from '../../../shared/listen-failed.ts';
import { terminalText } from '../../../shared/terminal-text.ts';
import { CONSOLE, TIMINGS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import { answerClientError } from '../../../shared/http-client-error.ts';
import { oneRequestAtATime } from '../../../shared/pipelined-requests.ts';
import { closeStalledConnections } from '../../../shared/stalled-answers.ts';
import { MANAGE_PREFIX } from '../manage/routes.ts';
import { consoleSecurityHeaders } from './security-headers.ts';
import type { BoundedSessionStore } from './session-store.ts';

export interface WebOptions {
  host: string;
  port: number;
  /** the setting that chooses `port` (CONSOLE_PORT), named when it cannot be listened on */
  setting: string;
  /** the Secure flag on the session cookie (and HSTS): the console is reached over HTTPS */
  secure: boolean;
  sessionTtlMs: number;
  /** the sessions, shared with the live streams (a stream ends with its session) */
  sessions: BoundedSessionStore;
  /** addresses or CIDRs of the TLS proxy in front (CONSOLE_TRUSTED_PROXY), whose X-Forwarded-For
   * and X-Forwarded-Proto are believed; undefined: no one's (the headers are ignored) */
  trustedProxies: readonly string[] | undefined;
  logger: Logger;
  /** registers the console's routes on the app, with its plugins in place */
  routes: (app: FastifyInstance) => void;
}

export const COOKIE_NAME = 'fieldstream_console';
/** The CSRF secret's cookie: a visitor who is not logged in has one, and no session on the server. */
export const CSRF_COOKIE_NAME = 'fieldstream_console_csrf';
const PUBLIC_DIR = join(import.meta.dirname, '..', 'public');
/** uPlot's files, served by us: the console works without internet access. */
const UPLOT_DIR = dirname(createRequire(import.meta.url).resolve('uplot'));

/**
 * The console's HTTP server: fastify with its official plugins for what they do well: signed
 * session cookies with server-side sessions (cookie, session), CSRF tokens on every state-changing
 * request (csrf-protection), login attempts per address (rate-limit), static files (static).
 * Every answer that is not a page or a stream is JSON; every error is `{ "error": { "code",
 * "message" } }` with a code of the registry. Every answer, errors too, carries the security
 * headers and strict Content-Security-Policy of security-headers.ts.
 */
export async function startWebServer(o: WebOptions): Promise<{ app: FastifyInstance; port: number; close(): Promise<void> }> {
  const securityHeaders = consoleSecurityHeaders(o.secure);
  const app = Fastify({
    bodyLimit: CONSOLE.bodyMaxBytes,
    // A path parameter too long for the router matched no route: refused by its schema instead (400).
    // In routerOptions: as a top-level option fastify 5 warns at every start, and fastify 6 drops it.
    routerOptions: { maxParamLength: CONSOLE.pathParamMaxChars },
    // Fastify's own request log would duplicate ours; errors are logged by the handler below.
    logger: false,
    requestTimeout: TIMINGS.commandApiRequestTimeoutMs * 2,
    // How often Node looks for requests past their headers' or their own timeout: its default (30 s)
    // would let a slow one linger that much past it.
    // An HTTP/1.1 request without Host is refused below (hostRequired), in the registry's shape:
    // Node's own refusal (requireHostHeader) was a 400 with no body and no code.
    http: { connectionsCheckingInterval: CONSOLE.connectionsCheckMs, requireHostHeader: false },
    // Only the configured proxy's X-Forwarded-* are believed: from anyone else they are a client's
    // claim (an https it does not use, an address that dodges the login limit).
    trustProxy: o.trustedProxies ? [...o.trustedProxies] : false,
    // A URL fastify cannot decode (`/%`) never reaches a route or the error handler: answered here,
    // in the registry's shape like every other error.
    // The management API answers MANAGE_* codes only (docs/management-api.md): a script gets its
    // API's code for a URL under its prefix too, not the pages' CONSOLE_INVALID_REQUEST.
    frameworkErrors: (err, req, reply) => sendError(err, req, reply, o.logger, isManagePath(req.url) ? 'MANAGE_INVALID_REQUEST' : undefined),
    // Nor does a request Node's HTTP parser refuses.
    clientErrorHandler: (err, socket) => answerClientError(err, socket, (code, message) => ({ error: { code, message } }), securityHeaders),
  });

  // fastify's own handler, run for one request of a connection at a time (pipelined ones wait for
  // the answer before theirs): a client pipelining requests for device lists, reading none, had a
  // thousand of them made at once.
  const [fastifyHandler] = app.server.listeners('request') as Array<(req: IncomingMessage, res: ServerResponse) => void>;
  if (fastifyHandler === undefined) throw new Error("fastify's server has no request handler");
  app.server.removeListener('request', fastifyHandler);
  app.server.on('request', oneRequestAtATime(withHeaders(securityHeaders, hostRequired(fastifyHandler)), CONSOLE.pipelinedRequestsMaxWaiting));
  // A request whose Expect names anything but 100-continue: Node's own answer was a 417 with no
  // body, no code and none of the headers. Served as if it expected nothing (RFC 9110 §10.1.1 lets
  // a server answer 417 to it, and asks nothing of one that does not).
  app.server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => app.server.emit('request', req, res));
  // A connection that sends nothing is watched by none of Node's timeouts (headersTimeout starts
  // with a request's first byte): closed once silent for CONSOLE.connectionIdleBeforeRequestMs.
  // Its first request lifts the limit: a request's own wait (a history read, a live stream that
  // the browser only reads) is no silence; between requests keepAliveTimeout takes over.
  app.server.on('connection', (socket: Socket) => void socket.setTimeout(CONSOLE.connectionIdleBeforeRequestMs));
  // How many there may be at once: one more is closed as it is accepted (Node's maxConnections).
  app.server.maxConnections = CONSOLE.maxConnections;
  app.server.on('request', (req: IncomingMessage) => void req.socket.setTimeout(0));
  // A client that stops reading its answers (requests pipelined, a device list of megabytes, a live
  // stream) is no such wait: its connection is closed once they have been stuck for CONSOLE.answerStallMs.
  closeStalledConnections(app.server, () => CONSOLE.answerStallMs, o.logger);
  // Headers trickled in a byte at a time are never silence: they must all be in within this, or 408.
  app.server.headersTimeout = CONSOLE.headersTimeoutMs;

  // Answers quote devices (a reading's strings, a test event's result) and the management API is
  // read with curl in a terminal (docs/management-api.md): DEL, C1 and bidi controls, which
  // JSON.stringify writes raw, go as \u escapes, the same JSON values (shared/terminal-text.ts).
  app.setReplySerializer((payload) => terminalText(JSON.stringify(payload)));
  await app.register(fastifyCookie);
  await app.register(fastifySession, {
    // Sessions live in this process only, so a per-process secret is enough (a restart logs everyone out).
    secret: randomBytes(32).toString('hex'),
    cookieName: COOKIE_NAME,
    store: o.sessions,
    // Only a login stores a session: nothing a visitor who is not logged in does takes room on the server.
    saveUninitialized: false,
    // Only a login (and a logout) changes a session, so only they write it. Rolling saves (the
    // default) wrote it back at the end of every request: one still running at the logout stored
    // the logged-in session again under its id. A login lasts CONSOLE_SESSION_TTL_S from loggedInAt
    // whatever the traffic (routes.ts, session-store.ts), as does the cookie's Max-Age set at login.
    rolling: false,
    cookie: { httpOnly: true, sameSite: 'strict', secure: o.secure, path: '/', maxAge: o.sessionTtlMs },
  });
  // The CSRF secret lives in a cookie of its own, not in the session, so the login form needs no
  // server-side session (a flood of visitors cannot crowd out the logged-in ones). Each token is an
  // HMAC under a per-process key of that secret and of who holds it (csrfUser): a token handed out
  // before the login, or to another session, is refused once logged in, and none can be made
  // without the key even by someone who can plant the cookie.
  await app.register(fastifyCsrf, {
    sessionPlugin: '@fastify/cookie',
    cookieKey: CSRF_COOKIE_NAME,
    cookieOpts: { httpOnly: true, sameSite: 'strict', secure: o.secure, path: '/' },
    csrfOpts: { hmacKey: randomBytes(32), userInfo: true },
    getUserInfo: csrfUser,
    getToken: (req) => {
      const h = req.headers['x-csrf-token'];
      return typeof h === 'string' ? h : undefined;
    },
  });
  await app.register(fastifyRateLimit, {
    global: false,
    errorResponseBuilder: () => new FieldStreamError('CONSOLE_LOGIN_RATE_LIMITED'),
  });
  await app.register(fastifyStatic, { root: PUBLIC_DIR, prefix: '/', index: ['index.html'], cacheControl: false, setHeaders: (res) => void res.header('cache-control', 'no-cache') });
  await app.register(fastifyStatic, {
    root: UPLOT_DIR,
    prefix: '/vendor/uplot/',
    decorateReply: false,
    allowedPath: (path) => path === '/uPlot.iife.min.js' || path === '/uPlot.min.css',
  });

  app.setErrorHandler((err, req, reply) => sendError(err, req, reply, o.logger));
  // Before fastify's parser reads the body (it does not decode one): 415, every JSON API alike.
  app.addHook('onRequest', async (req, reply) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') refuseContentCoding(req.raw, reply.raw);
  });
  app.setNotFoundHandler((_req, reply) => {
    // An error like any other (sendError): kept by no cache.
    void reply.status(404).header('cache-control', 'no-store').send({ error: { code: 'CONSOLE_NOT_FOUND', message: 'No such page or resource.' } });
  });

  o.routes(app);
  // Ready first, so that what fails in a plugin is not taken for the address's fault below.
  await app.ready();
  try {
    await app.listen({ host: o.host, port: o.port });
  } catch (err) {
    // Nothing of a server that did not start stays open in a caller that carries on.
    await app.close();
    throw listenFailed('Console', `${o.host}:${o.port}`, o.setting, err as Error);
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : o.port;
  o.logger.info({ host: o.host, port }, 'console listening');
  return { app, port, close: () => app.close() };
}

/**
 * The console's security headers set on the answer before anything else sees the request: every
 * answer made from it carries them, fastify's errors before any hook (a URL it cannot decode), the
 * Host check below, the live streams' own heads (Node keeps headers set this way under writeHead's).
 */
function withHeaders(headers: Readonly<Record<string, string>>, handler: (req: IncomingMessage, res: ServerResponse) => void): (req: IncomingMessage, res: ServerResponse) => void {
  const list = Object.entries(headers);
  return (req, res) => {
    for (const [name, value] of list) res.setHeader(name, value);
    handler(req, res);
  };
}

/**
 * An HTTP/1.1 request without Host, or any naming it more than once (shared/host-required.ts):
 * answered here as every refusal of Node's parser, `HTTP_MALFORMED` in the registry's shape, and
 * the connection closed.
 */
function hostRequired(handler: (req: IncomingMessage, res: ServerResponse) => void): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const refusal = hostRefusal(req);
    if (refusal === undefined) return handler(req, res);
    const body = JSON.stringify({ error: { code: 'HTTP_MALFORMED', message: refusal } });
    res.writeHead(ERRORS.HTTP_MALFORMED.http, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', connection: 'close' });
    res.end(body);
  };
}

/** Who a CSRF token is made for and checked against: the session once logged in, else any visitor
 * (whose token is still bound to their own secret cookie). The same on both sides, by construction. */
export function csrfUser(req: FastifyRequest): string {
  return req.session?.principal ? req.session.sessionId : 'anonymous';
}

/** Whether a request's target is the management API's. */
const isManagePath = (url: string): boolean => url === MANAGE_PREFIX || url.startsWith(`${MANAGE_PREFIX}/`) || url.startsWith(`${MANAGE_PREFIX}?`);

/** Every error answer: `{ "error": { "code", "message" } }` with the registry's code and status;
 * `invalidAs`: the code a client's invalid request gets instead of CONSOLE_INVALID_REQUEST. */
function sendError(err: unknown, req: FastifyRequest, reply: FastifyReply, logger: Logger, invalidAs?: ErrorCode): void {
  let coded = codedError(err);
  if (invalidAs !== undefined && coded.code === 'CONSOLE_INVALID_REQUEST') coded = new FieldStreamError(invalidAs, coded.message);
  const path = req.url.split('?')[0];
  if (coded.code === 'CONSOLE_INTERNAL') logger.error({ code: coded.code, err, method: req.method, path }, 'unexpected error answering a request');
  else if (coded.httpStatus >= 500) logger.warn({ code: coded.code, path, err: coded.message }, 'request failed');
  // A user asking for what its role does not allow: an attempt the operators' audit wants (the
  // message names the user and the role). The management API's are logged by its own handler.
  else if (coded.code === 'CONSOLE_FORBIDDEN') logger.warn({ code: coded.code, method: req.method, path, ip: req.ip, err: coded.message }, 'request refused: its role does not allow it');
  void reply
    .status(coded.httpStatus)
    .header('cache-control', 'no-store')
    .send({ error: { code: coded.code, message: coded.message, ...(coded.details ? { details: coded.details } : {}) } });
}

/** fastify's and its plugins' errors as the registry's codes. */
function codedError(err: unknown): FieldStreamError {
  if (isFieldStreamError(err)) return err;
  const e = err as { code?: string; statusCode?: number; message?: string };
  const map: Record<string, ErrorCode> = {
    FST_CSRF_INVALID_TOKEN: 'CONSOLE_CSRF_INVALID',
    FST_CSRF_MISSING_SECRET: 'CONSOLE_CSRF_INVALID',
    FST_ERR_CTP_BODY_TOO_LARGE: 'CONSOLE_INVALID_REQUEST',
    FST_ERR_CTP_INVALID_MEDIA_TYPE: 'CONSOLE_INVALID_REQUEST',
    FST_ERR_CTP_EMPTY_JSON_BODY: 'CONSOLE_INVALID_REQUEST',
    FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'CONSOLE_INVALID_REQUEST',
    FST_ERR_BAD_URL: 'CONSOLE_INVALID_REQUEST',
    FST_ERR_MAX_PARAM_LENGTH: 'CONSOLE_INVALID_REQUEST',
  };
  const messages: Record<string, string> = {
    FST_ERR_BAD_URL: 'The URL is not valid (a malformed percent-encoding).',
    FST_ERR_MAX_PARAM_LENGTH: 'A part of the URL is too long.',
  };
  const code = e.code !== undefined ? map[e.code] : undefined;
  if (code) return new FieldStreamError(code, (e.code !== undefined ? messages[e.code] : undefined) ?? e.message);
  // A body that is not JSON: fastify's parser says so with a 400 and a SyntaxError.
  if (e.statusCode === 400) return new FieldStreamError('CONSOLE_INVALID_REQUEST', e.message);
  if (e.statusCode === 429) return new FieldStreamError('CONSOLE_LOGIN_RATE_LIMITED');
  // Any other 4xx is a plugin refusing the client's request (static files: a path with `/./` or a
  // NUL, an If-Match or a Range the file does not meet): the client's doing, answered with a code
  // and its own status, not a 500 logged as the console's fault.
  if (e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500) {
    const byStatus: Record<number, ErrorCode> = {
      // a path that names no file served, as a 404 says (without telling why)
      403: 'CONSOLE_NOT_FOUND',
      404: 'CONSOLE_NOT_FOUND',
      412: 'CONSOLE_PRECONDITION_FAILED',
      416: 'CONSOLE_RANGE_NOT_SATISFIABLE',
    };
    return new FieldStreamError(byStatus[e.statusCode] ?? 'CONSOLE_INVALID_REQUEST');
  }
  return new FieldStreamError('CONSOLE_INTERNAL', undefined, undefined, { cause: err });
}
