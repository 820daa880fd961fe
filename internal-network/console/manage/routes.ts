import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { describeIssues, MessageIdSchema, DeviceIdSchema } from '../../../shared/contract/primitives.ts';
import { TEST_COMMAND, type TestCommandParams } from '../../../shared/contract/test-command.ts';
import { FieldStreamError, isFieldStreamError, type ErrorCode } from '../../../shared/errors.ts';
import { idempotencyKey } from '../../../shared/idempotency-key.ts';
import { CONSOLE, LIMITS, MANAGE } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import { throttleSource, TokenThrottle } from '../../../shared/security/throttle.ts';
import { roleAllows, type Credentials, type Principal } from '../../shared/credentials.ts';
import { CommandApiRefusal, type CommandClient, type CommandClientCode, type ConsoleCommand } from '../command-client.ts';
import type { Fleet } from '../fleet/fleet.ts';
import { DEVICE_STATES, type DeviceRow } from '../fleet/types.ts';
import { noManageAuthFailures, type ManageAuthFailures } from '../metrics.ts';
import type { PipelineView } from '../pipeline/pipeline-view.ts';
import type { TokensFile } from '../../../shared/security/device-token.ts';
import { deviceCredential, manageStatus } from './status.ts';
import { topicStructure, validateTopic } from './topics.ts';

export const MANAGE_PREFIX = '/api/v1/manage';

export interface ManageDeps {
  credentials: Pick<Credentials, 'verify'>;
  fleet: Fleet;
  pipeline: () => PipelineView;
  /** the console's own connection to the internal broker */
  brokerConnected: () => boolean;
  commands: CommandClient;
  /** where refused authentications are counted for the console's metrics (by reason) */
  authFailures?: ManageAuthFailures;
  log: Logger;
  /** the device tokens file's entries (CONSOLE_DEVICE_TOKENS_FILE); undefined: the console has none, auth is unknown */
  deviceTokens?: () => TokensFile['devices'] | undefined;
}

const DeviceParamsSchema = z.strictObject({ id: DeviceIdSchema });
const TestEventParamsSchema = z.strictObject({ commandId: MessageIdSchema });
const DevicesQuerySchema = z.strictObject({
  state: z.enum(DEVICE_STATES).optional(),
  revoked: z.enum(['true', 'false']).transform((v) => v === 'true').optional(),
  /** devices after this id (ids sorted), for the next page */
  after: DeviceIdSchema.optional(),
  // Decimal digits, as the pages' API reads its numbers: coerced, `0x10` read as 16, `1e3` as 1000, ` 5` as 5.
  limit: z
    .string()
    .regex(/^\d{1,7}$/, 'must be a count in decimal digits')
    .transform(Number)
    .pipe(z.number().int().min(1).max(CONSOLE.maxDevices))
    .default(1000),
});
const ValidateTopicSchema = z.strictObject({ topic: z.string().max(MANAGE.topicMaxChars) });
const TestEventSchema = z.strictObject({
  note: z.string().max(MANAGE.testNoteMaxChars).optional(),
  ttlSeconds: z.number().int().min(1).max(LIMITS.commandMaxTtlS).optional(),
});

/** A zod parse whose failure is the management API's coded 400, naming the first problem. */
function parse<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const r = schema.safeParse(value ?? {});
  if (r.success) return r.data;
  const { first, issues } = describeIssues(r.error);
  throw new FieldStreamError('MANAGE_INVALID_REQUEST', `Invalid ${what}: ${first}`, { issues });
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function deviceView(r: DeviceRow, tokens: TokensFile['devices'] | undefined) {
  return {
    id: r.id,
    state: r.state,
    since: iso(r.since),
    lastSeen: iso(r.lastSeen),
    certDaysLeft: r.certDaysLeft,
    ...deviceCredential(r.certDaysLeft, tokens, r.id),
    revoked: r.revoked,
    gateway: r.gateway,
    backlog: r.backlog,
  };
}

function testEventView(c: ConsoleCommand) {
  return {
    commandId: c.commandId,
    deviceId: c.deviceId,
    command: c.command,
    state: c.state,
    issuedAt: iso(c.issuedAt),
    expiresAt: iso(c.expiresAt),
    ...(c.sentAt !== undefined ? { sentAt: iso(c.sentAt) } : {}),
    // resultNotKept: the command API let go of a progress answer's result (its bound on them all),
    // said so that a missing result is not read as the device having sent none.
    ...(c.response
      ? { response: { status: c.response.status, ...(c.response.result !== undefined ? { result: c.response.result } : {}), ...(c.response.resultNotKept ? { resultNotKept: true } : {}), at: iso(c.response.at) } }
      : {}),
    ...(c.expiredAt !== undefined ? { expiredAt: iso(c.expiredAt) } : {}),
  };
}

/** The console's own codes from the command client, as the management API's. */
const FROM_CONSOLE: Record<CommandClientCode, { code: ErrorCode; message?: string }> = {
  // The console's message says "log in again", which a bearer caller cannot do.
  CONSOLE_UNAUTHORIZED: { code: 'MANAGE_UNAUTHORIZED', message: 'The command API no longer accepts this bearer token (revoked there since the console started): the console refuses it too until it restarts.' },
  CONSOLE_FORBIDDEN: { code: 'MANAGE_FORBIDDEN' },
  CONSOLE_INVALID_REQUEST: { code: 'MANAGE_INVALID_REQUEST' },
  CONSOLE_COMMAND_API_FAILED: { code: 'MANAGE_COMMAND_API_FAILED' },
};

/**
 * The management API (docs/management-api.md), under /api/v1/manage on the console's server: the
 * console holds the fleet's state and the pipeline view already, so the API reads what the pages
 * show rather than keeping a second copy. Its own authentication path, apart from the pages':
 * a bearer token (the command API's role credentials, Credentials.verify) on every request, never
 * the session cookie, so no request a browser makes on its own can be authenticated here and no
 * CSRF token is needed (nor asked for). The pages' routes, in turn, read only the session.
 * Roles: any role reads; the test event needs admin, and goes through the command API with the
 * caller's own token, signed with the device's key like every command.
 */
export function manageRoutes(d: ManageDeps) {
  return (app: FastifyInstance): void => {
    void app.register(
      async (api) => {
        const callers = new WeakMap<FastifyRequest, { who: Principal; token: string }>();
        const throttle = new TokenThrottle(MANAGE.authMaxFailures, MANAGE.authFailureWindowMs, MANAGE.authFailureTrackedKeys);
        const failures = d.authFailures ?? noManageAuthFailures();
        const caller = (req: FastifyRequest) => {
          const c = callers.get(req);
          if (!c) throw new FieldStreamError('MANAGE_UNAUTHORIZED');
          return c;
        };

        api.addHook('onRequest', async (req, reply) => {
          void reply.header('cache-control', 'no-store');
          // Per source address: the socket's, not req.ip, which behind CONSOLE_TRUSTED_PROXY (set for
          // the pages' logins) is the X-Forwarded-For a client at the proxy's address writes itself,
          // a new budget with every new value. An address past its budget is refused before its
          // token is looked at, a valid one too, so a guesser learns nothing more until its window
          // ends; below it, a valid token gets through but clears nothing, so slipping one between
          // guesses buys no more guesses.
          const ip = req.socket.remoteAddress ?? 'unknown';
          // An IPv6 source is budgeted as its /64 (throttleSource): one host holds all of it.
          const budget = throttleSource(ip);
          const source = [`addr:${budget}`];
          if (throttle.blocked(source)) {
            failures.throttled++;
            const retryAfterS = Math.max(1, Math.ceil(throttle.retryAfterMs(source) / 1000));
            throw new FieldStreamError('MANAGE_THROTTLED', `Too many wrong bearer tokens from ${budget}; try again in ${retryAfterS} s.`, { retryAfterS });
          }
          const header = req.headers.authorization;
          // The scheme in any case, then one space or more (RFC 9110 §11.1, §11.4), as the command
          // API and the gateway read it: a valid token so written is no wrong guess.
          const m = typeof header === 'string' ? /^Bearer +([\x21-\x7e]{1,512})$/i.exec(header) : null;
          const who = m?.[1] === undefined ? undefined : d.credentials.verify(m[1]);
          if (!who) {
            // No header at all is no guess (a browser, a misconfigured script): counted, not charged.
            if (header === undefined) failures.missing++;
            else {
              failures.invalid++;
              throttle.fail(source);
              d.log.warn({ code: 'MANAGE_UNAUTHORIZED', ip, path: req.url.split('?')[0] }, 'management API request with a bearer token that is no credential');
              if (throttle.blocked(source)) d.log.warn({ code: 'MANAGE_THROTTLED', ip, budget, maxFailures: MANAGE.authMaxFailures, windowMs: MANAGE.authFailureWindowMs }, 'too many wrong bearer tokens from one address (an IPv6 one: its /64): its management API requests are refused unchecked for a while');
            }
            throw new FieldStreamError('MANAGE_UNAUTHORIZED', header === undefined && req.headers.cookie !== undefined ? 'The management API takes a bearer token (Authorization: Bearer ...), not the console session cookie.' : undefined);
          }
          callers.set(req, { who, token: m?.[1] as string });
        });

        api.setErrorHandler((err, req, reply) => {
          const coded = managementError(err);
          const retryAfterS = coded.code === 'MANAGE_THROTTLED' ? coded.details?.retryAfterS : undefined;
          if (typeof retryAfterS === 'number') void reply.header('retry-after', String(retryAfterS));
          if (coded.code === 'MANAGE_INTERNAL') d.log.error({ code: coded.code, err, method: req.method, path: req.url.split('?')[0] }, 'unexpected error answering a management request');
          else if (coded.httpStatus >= 500) d.log.warn({ code: coded.code, path: req.url.split('?')[0], err: coded.message, details: coded.details }, 'management request failed');
          // A token used for what its role does not allow: an attempt the operators' audit wants.
          else if (coded.code === 'MANAGE_FORBIDDEN') d.log.warn({ code: coded.code, method: req.method, path: req.url.split('?')[0], ip: req.ip, err: coded.message }, 'management request refused: its role does not allow it');
          void reply
            .status(coded.httpStatus)
            .header('cache-control', 'no-store')
            .send({ error: { code: coded.code, message: coded.message, ...(coded.details ? { details: coded.details } : {}) } });
        });
        // Any other path under the prefix: without this, the console's static files (its `/*` route)
        // would answer it, unauthenticated and with the pages' code.
        const noSuchEndpoint = async (req: FastifyRequest): Promise<never> => {
          caller(req);
          throw new FieldStreamError('MANAGE_NOT_FOUND', 'No such endpoint; see docs/management-api.md.');
        };
        // The prefix itself ('/' here is the prefix, with and without its slash) is no endpoint either.
        api.all('/', noSuchEndpoint);
        api.all('/*', noSuchEndpoint);
        // A method no route is registered for (PROPFIND) matches neither: the 404 of this scope,
        // after its onRequest hook (the credential first), rather than the pages' CONSOLE_NOT_FOUND.
        api.setNotFoundHandler(noSuchEndpoint);

        api.get('/status', async (req) => {
          caller(req);
          return manageStatus(d.pipeline(), d.brokerConnected());
        });

        api.get('/devices', async (req) => {
          caller(req);
          const q = parse(DevicesQuerySchema, req.query, 'query');
          // In id order from the cursor on, up to one row past the page (which says there is a next
          // page), read from the fleet's ids of the filter's state and flag only (fleet/listing.ts):
          // a page costs what it holds, whatever `limit`, the filter and the fleet's size are.
          const page = d.fleet.rowsPage(q.limit + 1, q.after, { state: q.state, revoked: q.revoked });
          const more = page.length > q.limit;
          if (more) page.pop();
          const last = page.at(-1);
          const tokens = d.deviceTokens?.();
          return { devices: page.map((r) => deviceView(r, tokens)), ...(more && last ? { next: last.id } : {}), untracked: d.fleet.untracked };
        });

        api.get('/devices/:id', async (req) => {
          caller(req);
          const { id } = parse(DeviceParamsSchema, req.params, 'device id');
          const detail = d.fleet.detail(id);
          if (!detail) throw new FieldStreamError('MANAGE_UNKNOWN_DEVICE', `No device ${id}.`);
          return {
            ...deviceView(detail.row, d.deviceTokens?.()),
            lastReading: detail.latest && { time: iso(detail.latest.time), fields: detail.latest.fields },
            health: detail.health && { time: iso(detail.health.time), fields: detail.health.fields },
            securityEvents: detail.security.length,
          };
        });

        api.get('/topics', async (req) => {
          caller(req);
          return { topics: topicStructure() };
        });

        api.post('/topics/validate', async (req) => {
          caller(req);
          const { topic } = parse(ValidateTopicSchema, req.body, 'body');
          return validateTopic(topic);
        });

        api.post('/devices/:id/test-event', async (req, reply: FastifyReply) => {
          const { who, token } = caller(req);
          if (!roleAllows(who.role, 'admin')) throw new FieldStreamError('MANAGE_FORBIDDEN', `${who.name} (${who.role}) may not send a test event; that needs the admin role.`);
          const { id } = parse(DeviceParamsSchema, req.params, 'device id');
          const body = parse(TestEventSchema, req.body, 'body');
          // Sent again with its key after an answer that never came (MANAGE_COMMAND_API_FAILED), it
          // is the test event the first request made, not a second one (the command API keeps the key).
          const key = idempotencyKey(req.raw, 'MANAGE_INVALID_REQUEST');
          const known = d.fleet.detail(id);
          if (!known) throw new FieldStreamError('MANAGE_UNKNOWN_DEVICE', `No device ${id}.`);
          // Its gateway refuses it anyway; a test would only wait for its TTL and expire.
          if (known.row.revoked) throw new FieldStreamError('MANAGE_DEVICE_REVOKED', `${id} is revoked.`);
          const params: TestCommandParams = { requestedBy: who.name, ...(body.note !== undefined ? { note: body.note } : {}) };
          // Through the command API with the caller's own token: it signs the command with the
          // device's key, journals it, and its log names who sent it, as for any command.
          const record = await d.commands.send(id, { command: TEST_COMMAND, params, ttlSeconds: body.ttlSeconds ?? MANAGE.testEventDefaultTtlS }, token, key);
          d.log.info({ user: who.name, deviceId: id, commandId: record.commandId }, 'test event sent to a device');
          return reply.status(202).send(testEventView(record));
        });

        api.get('/test-events/:commandId', async (req) => {
          const { token } = caller(req);
          const { commandId } = parse(TestEventParamsSchema, req.params, 'command id');
          let record: ConsoleCommand;
          try {
            record = await d.commands.get(commandId, token);
          } catch (err) {
            if (isFieldStreamError(err, 'API_NOT_FOUND')) throw new FieldStreamError('MANAGE_NOT_FOUND', `No test event ${commandId}.`);
            throw err;
          }
          // The command API answers for every command; this endpoint only for test events.
          if (record.command !== TEST_COMMAND) throw new FieldStreamError('MANAGE_NOT_FOUND', `No test event ${commandId}.`);
          return testEventView(record);
        });
      },
      { prefix: MANAGE_PREFIX },
    );
  };
}

/** Any error as one of the management API's codes. */
function managementError(err: unknown): FieldStreamError {
  // The command API's refusal of what the caller asked (a 4xx with its own code) is the caller's to fix.
  if (err instanceof CommandApiRefusal) return err;
  if (isFieldStreamError(err)) {
    const mapped = (FROM_CONSOLE as Partial<Record<ErrorCode, { code: ErrorCode; message?: string }>>)[err.code];
    if (mapped) return new FieldStreamError(mapped.code, mapped.message ?? err.message, err.details);
    // Any other console code reaching here is a fault of this API's (it answers MANAGE_* codes only,
    // the command API's refusals above, and the protocol's HTTP_* codes).
    // HTTP_* codes are the protocol's, answered alike by every server (a Content-Encoding refused).
    return err.code.startsWith('MANAGE_') || err.code.startsWith('HTTP_') ? err : new FieldStreamError('MANAGE_INTERNAL', undefined, undefined, { cause: err });
  }
  const e = err as { code?: string; statusCode?: number; message?: string };
  // fastify's own refusals of a request: a body that is not JSON, too large, of another media type.
  if (typeof e.code === 'string' && e.code.startsWith('FST_ERR_CTP_')) return new FieldStreamError('MANAGE_INVALID_REQUEST', e.message);
  if (e.statusCode === 400) return new FieldStreamError('MANAGE_INVALID_REQUEST', e.message);
  return new FieldStreamError('MANAGE_INTERNAL', undefined, undefined, { cause: err });
}
