import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { CommandNameSchema } from '../../../shared/contract/downlink.ts';
import { JsonValueSchema } from '../../../shared/contract/payloads.ts';
import { TEST_COMMAND } from '../../../shared/contract/test-command.ts';
import { describeIssues, DeviceIdSchema, FIELD_NAME_PATTERN } from '../../../shared/contract/primitives.ts';
import { FieldStreamError } from '../../../shared/errors.ts';
import { idempotencyKey } from '../../../shared/idempotency-key.ts';
import { CONSOLE, LIMITS } from '../../../shared/limits.ts';
import type { Logger } from '../../../shared/logger.ts';
import { throttleSource } from '../../../shared/security/throttle.ts';
import { roleAllows, type Credentials, type Principal } from '../../shared/credentials.ts';
import type { CommandClient } from '../command-client.ts';
import type { Fleet } from '../fleet/fleet.ts';
import type { LimitedHistory } from '../history/history.ts';
import { deviceAnswer } from './device-answer.ts';
import type { DeviceDetail, LiveHub } from './live.ts';
import { COOKIE_NAME, csrfUser } from './server.ts';

export interface RouteDeps {
  credentials: Pick<Credentials, 'verify'>;
  fleet: Fleet;
  hub: LiveHub;
  history: LimitedHistory;
  commands: CommandClient;
  deviceDetail: (id: string, token: string) => Promise<DeviceDetail | undefined>;
  sessionTtlMs: number;
  /** the session cookie is Secure (CONSOLE_COOKIE_SECURE): a login must come over HTTPS */
  secureCookie: boolean;
  loginAttemptsPerMinute: number;
  log: Logger;
}

const LoginSchema = z.strictObject({ token: z.string().min(1).max(512) });
const DeviceParamsSchema = z.object({ id: DeviceIdSchema });
/**
 * `parts=N`: the page reads a snapshot in parts up to version N (live.ts; a page reads every version
 * up to the one it names); this console knows version 1, and sends its parts for any N from 1. A
 * page of an earlier version sends no `parts` and gets the one `snapshot` event it knows, as does
 * one whose value this console cannot read (0, not a number): refused (400), a page of a later
 * version would have had its EventSource reconnect for ever. Only a value past
 * CONSOLE.liveQueryPartsMaxChars is refused, as no page's version.
 */
const LiveQuerySchema = z.object({
  device: DeviceIdSchema.optional(),
  parts: z
    .string()
    .max(CONSOLE.liveQueryPartsMaxChars)
    .optional()
    .transform((v) => v !== undefined && /^[0-9]+$/.test(v) && Number(v) >= 1),
});
/** A whole number in decimal digits (not coerced: an empty one read as 0, `0x10` as 16). */
const DecimalSchema = z.string().regex(/^\d{1,9}$/, 'must be a whole number in decimal digits').transform(Number);
/** A page of the per-device security counts, largest first: those after the cursor `after` (the
 * last one a page listed), or from `offset` (counts skipped: what a page of an earlier version sends;
 * not both), at most CONSOLE.securityDevicesPageMax (and by default that many). The counts are of
 * every device with a row, registered or not (fleet.ts): as many as CONSOLE.maxDevices and
 * CONSOLE.maxUnregisteredDevices together, the last of which a page past maxDevices reads. The
 * cursor is checked apart (SecurityCursorSchema), with a code of its own. */
const SecurityDevicesQuerySchema = z
  .object({
    after: z.string().optional(),
    offset: DecimalSchema.pipe(z.number().max(CONSOLE.maxDevices + CONSOLE.maxUnregisteredDevices)).optional(),
    limit: DecimalSchema.pipe(z.number().min(1).max(CONSOLE.securityDevicesPageMax)).optional(),
  })
  .refine((q) => q.after === undefined || q.offset === undefined, { message: 'give a cursor (after) or an offset, not both' });
/**
 * The keyset cursor of the per-device security counts: `COUNT:DEVICE`, the count and id of the last
 * device a page listed (an answer's `next`), in the order the console ranks them (fleet/counts.ts).
 * Paged by offset, counts that changed between two pages moved devices across the page's edge: one
 * listed again, or one never listed.
 */
export const SecurityCursorSchema = z
  .string()
  .max(16 + 1 + LIMITS.deviceIdMaxChars)
  .regex(/^[0-9]{1,16}:/, 'must be COUNT:DEVICE (a count in decimal digits, a device id)')
  .transform((v) => {
    const colon = v.indexOf(':');
    return [v.slice(colon + 1), Number(v.slice(0, colon))] as const;
  })
  .pipe(z.tuple([DeviceIdSchema, z.number().int().min(1).max(Number.MAX_SAFE_INTEGER)]));
const securityCursor = (device: string, count: number): string => `${count}:${device}`;
/** Epoch milliseconds in decimal digits: not coerced (an empty `from=` read as 0, `0x10` as 16). */
const QueryMsSchema = z
  .string()
  .regex(/^\d{1,16}$/, 'must be epoch milliseconds in decimal digits')
  .transform(Number)
  .pipe(z.number().int().min(0).max(CONSOLE.historyMaxTimeMs));
const HistoryQuerySchema = z
  .object({
    field: z.string().regex(FIELD_NAME_PATTERN),
    from: QueryMsSchema,
    to: QueryMsSchema,
  })
  .refine((q) => q.to > q.from, { message: 'to must be after from' })
  .refine((q) => q.to - q.from <= CONSOLE.historyMaxWindowMs, { message: `the window may span at most ${CONSOLE.historyMaxWindowMs / 86_400_000} days` });
const CommandBodySchema = z.strictObject({
  command: CommandNameSchema,
  params: JsonValueSchema.optional(),
  ttlSeconds: z.number().int().min(1).max(LIMITS.commandMaxTtlS).optional(),
});

/** A zod parse whose failure is the console's coded 400, naming the first problem. */
function parse<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  throw new FieldStreamError('CONSOLE_INVALID_REQUEST', `Invalid ${what}: ${describeIssues(r.error).first}`);
}

/**
 * The console's API (docs/console.md). Reading needs a logged-in session (any role); sending a
 * command needs operator or admin; every POST carries the session's CSRF token (x-csrf-token).
 */
export function consoleRoutes(d: RouteDeps) {
  return (root: FastifyInstance): void => {
    // In a context of their own, so that the hook below is theirs alone (the pages' files and the
    // management API have their own headers).
    void root.register(async (app) => {
      // Every answer here is one user's (a CSRF token, a login, a device's data and commands): no
      // cache, the browser's or a proxy's, may keep it, as no cache may keep an error (server.ts).
      app.addHook('onRequest', async (_req, reply) => {
        void reply.header('cache-control', 'no-store');
      });

      // A login's token is checked again each time, against the credentials as they are now: one
      // taken out of the tokens file, or refused by the command API since, is refused here; one
      // whose role changed has its new role. The same token under another name is another user's.
      const loggedIn = (s: FastifyRequest['session']) => {
        if (!s.principal || !s.commandToken || s.loggedInAt === undefined || Date.now() - s.loggedInAt > d.sessionTtlMs) return undefined;
        const who = d.credentials.verify(s.commandToken);
        return who && who.name === s.principal.name ? { who, token: s.commandToken, loggedInAt: s.loggedInAt } : undefined;
      };
      const user = (req: FastifyRequest): { who: Principal; token: string; loggedInAt: number } => {
        const u = loggedIn(req.session);
        if (!u) throw new FieldStreamError('CONSOLE_UNAUTHORIZED');
        return u;
      };
      const csrf = { onRequest: app.csrfProtection };
      // With a Secure cookie, a login over plain HTTP would "succeed" without any cookie being set
      // (and a browser drops the Secure CSRF cookie): refused with a code that says why, before the CSRF check.
      const https = (req: FastifyRequest, _reply: unknown, done: (err?: Error) => void): void => {
        if (!d.secureCookie || req.protocol === 'https') return done();
        d.log.warn({ code: 'CONSOLE_HTTPS_REQUIRED', ip: req.ip }, 'console login over plain HTTP refused (CONSOLE_COOKIE_SECURE=true; behind a TLS proxy, set CONSOLE_TRUSTED_PROXY)');
        done(new FieldStreamError('CONSOLE_HTTPS_REQUIRED'));
      };

      app.get('/api/session', async (req, reply) => {
        const csrfToken = reply.generateCsrf({ userInfo: csrfUser(req) });
        // Expired is not logged in, here as everywhere else (the page would show a login that every request refuses).
        const u = loggedIn(req.session);
        if (!u) return { authenticated: false, csrfToken };
        return { authenticated: true, user: u.who.name, role: u.who.role, csrfToken };
      });

      // The route's limit counts req.ip: behind CONSOLE_TRUSTED_PROXY the address the proxy forwards,
      // one budget per operator. Whoever reaches the proxy's address writes that header themselves,
      // a fresh budget with every value (Docker's gateway address is every client of the published
      // port), so the connection's own address has a budget too, larger as the proxy's operators share it.
      const connectionMax = d.loginAttemptsPerMinute * CONSOLE.loginAttemptsPerConnectionFactor;
      // Both budgets key an IPv6 address by its /64, as one host holds all of it and a budget per
      // address would give it 2^64 of them: the route's, on req.ip, by @fastify/rate-limit's own key
      // (its ipv6Subnet, 64 by default); this one by throttleSource.
      const connectionBudget = app.createRateLimit({ max: connectionMax, timeWindow: 60_000, keyGenerator: (req) => throttleSource(req.socket.remoteAddress ?? 'unknown') });
      const perConnection = async (req: FastifyRequest): Promise<void> => {
        const r = await connectionBudget(req);
        if (r.isAllowed) return;
        const connection = req.socket.remoteAddress;
        // Logged once a window, as the last attempt it allows goes through.
        if (r.remaining === 0 && !r.isExceeded) d.log.warn({ code: 'CONSOLE_LOGIN_RATE_LIMITED', connection, max: connectionMax, windowMs: 60_000 }, "login attempts through one connection's address reached its limit: further ones refused until the minute ends, whatever X-Forwarded-For says");
        if (r.isExceeded) throw new FieldStreamError('CONSOLE_LOGIN_RATE_LIMITED', `Too many login attempts through ${connection} (every client of that address together); wait a minute.`);
      };

      app.post('/api/login', { onRequest: [https, app.csrfProtection, perConnection], config: { rateLimit: { max: d.loginAttemptsPerMinute, timeWindow: 60_000 } } }, async (req, reply) => {
        const { token } = parse(LoginSchema, req.body, 'login');
        const who = d.credentials.verify(token);
        if (!who) {
          d.log.warn({ code: 'CONSOLE_LOGIN_FAILED', ip: req.ip }, 'console login refused');
          throw new FieldStreamError('CONSOLE_LOGIN_FAILED');
        }
        // A new session id at login: one planted before it (session fixation) is worth nothing.
        await req.session.regenerate();
        req.session.principal = who;
        req.session.commandToken = token;
        req.session.loggedInAt = Date.now();
        d.log.info({ user: who.name, role: who.role, ip: req.ip }, 'console login');
        return { user: who.name, role: who.role, csrfToken: reply.generateCsrf({ userInfo: csrfUser(req) }) };
      });

      app.post('/api/logout', csrf, async (req, reply) => {
        const name = req.session.principal?.name;
        const id = req.session.sessionId;
        await req.session.destroy();
        // The browser forgets the id too: the store no longer has it, and a copy of the cookie (a
        // stolen one) is worth nothing, but the page keeps no dead credential either.
        void reply.clearCookie(COOKIE_NAME, { path: '/', httpOnly: true, sameSite: 'strict', secure: d.secureCookie });
        // Its live streams read as this user: they end now, not at their next look at the session.
        d.hub.endSession(id);
        if (name !== undefined) d.log.info({ user: name }, 'console logout');
        return { ok: true };
      });

      // No HEAD route (fastify adds one for each GET): a HEAD would open a stream that sends nothing
      // and hold one of the user's places among CONSOLE.maxLiveStreamsPerUser until its socket closed.
      app.get('/api/live', { exposeHeadRoute: false }, async (req, reply) => {
        const { who, token, loggedInAt } = user(req);
        const q = parse(LiveQuerySchema, req.query, 'query');
        const sessionId = req.session.sessionId;
        if (d.hub.size >= CONSOLE.maxLiveStreams) throw new FieldStreamError('CONSOLE_TOO_MANY_STREAMS');
        if (d.hub.countFor(who.name) >= CONSOLE.maxLiveStreamsPerUser) throw new FieldStreamError('CONSOLE_TOO_MANY_USER_STREAMS');
        reply.hijack();
        await d.hub.open(reply.raw, { sessionId, user: who.name, expiresAt: loggedInAt + d.sessionTtlMs }, q.device !== undefined ? { id: q.device, token } : undefined, q.parts);
      });

      // The security page's list of devices past those the live stream names (the ones with most
      // events): every count in the stream was megabytes under an attack across the fleet.
      app.get('/api/security/devices', async (req) => {
        user(req);
        const q = parse(SecurityDevicesQuerySchema, req.query, 'query');
        const limit = q.limit ?? CONSOLE.securityDevicesPageMax;
        const counts = d.fleet.security.byDevice;
        const total = counts.ranked().length;
        let page: ReadonlyArray<readonly [string, number]>;
        let more: boolean;
        if (q.offset !== undefined) {
          page = counts.ranked().slice(q.offset, q.offset + limit);
          more = q.offset + limit < total;
        } else {
          let after: readonly [string, number] | undefined;
          if (q.after !== undefined) {
            const c = SecurityCursorSchema.safeParse(q.after);
            if (!c.success) throw new FieldStreamError('CONSOLE_INVALID_CURSOR', `Invalid cursor (after): ${describeIssues(c.error).first}`);
            after = c.data;
          }
          ({ page, more } = counts.rankedAfter(after, limit));
        }
        const last = page.at(-1);
        return {
          total,
          ...(q.offset !== undefined ? { offset: q.offset } : {}),
          devices: page.map(([device, count]) => ({ device, count })),
          // Where the next page starts: after the last device of this one (null: none after it).
          next: more && last ? securityCursor(last[0], last[1]) : null,
        };
      });

      app.get('/api/devices/:id', async (req) => {
        const { token } = user(req);
        const { id } = parse(DeviceParamsSchema, req.params, 'device id');
        const detail = await d.deviceDetail(id, token);
        if (!detail) throw new FieldStreamError('CONSOLE_UNKNOWN_DEVICE', `No device ${id}.`);
        // Each list bounded, what was left out counted (device-answer.ts); the readings whole.
        return deviceAnswer(detail);
      });

      app.get('/api/devices/:id/history', async (req) => {
        const { who } = user(req);
        const { id } = parse(DeviceParamsSchema, req.params, 'device id');
        const q = parse(HistoryQuerySchema, req.query, 'query');
        return { field: q.field, points: await d.history.series(who.name, id, q.field, q.from, q.to) };
      });

      app.post('/api/devices/:id/commands', csrf, async (req, reply) => {
        const { who, token } = user(req);
        if (!roleAllows(who.role, 'operator')) throw new FieldStreamError('CONSOLE_FORBIDDEN', `${who.name} (${who.role}) may not send commands; that needs the operator role.`);
        const { id } = parse(DeviceParamsSchema, req.params, 'device id');
        const body = parse(CommandBodySchema, req.body, 'command');
        // The command API refuses it too; refused here with the console's own code, before any call.
        if (body.command === TEST_COMMAND && !roleAllows(who.role, 'admin')) throw new FieldStreamError('CONSOLE_FORBIDDEN', `${who.name} (${who.role}) may not send ${TEST_COMMAND}; that needs the admin role.`);
        // The page's key for this command, kept until it is confirmed: sent again after an answer
        // that never came (CONSOLE_COMMAND_API_FAILED), the command API answers with the command it
        // took rather than making a second one.
        const key = idempotencyKey(req.raw, 'CONSOLE_INVALID_REQUEST');
        const record = await d.commands.send(id, body, token, key);
        d.log.info({ user: who.name, deviceId: id, command: body.command, commandId: record.commandId }, 'command sent from the console');
        return reply.status(202).send(record);
      });
    });
  };
}
