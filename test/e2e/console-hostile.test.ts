import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { OperatorConsole } from '../../internal-network/console/console.ts';
import { CONSOLE, TIMINGS } from '../../shared/limits.ts';
import { sha256Hex } from '../../internal-network/shared/credentials.ts';
import { ConsoleSession, ROLE_TOKENS, writeRoleTokens } from '../helpers/console-client.ts';
import { extraConsole, startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { rawRequest, requestFrom, type Answer as HttpAnswer } from '../helpers/http-from.ts';
import { ipv6Networks, ipv6NetworksUnavailable } from '../helpers/ipv6-network.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * The operator console against hostile or unlucky clients, on the embedded pipeline (real HTTP,
 * MQTT, disk): anonymous visits store no session, so none can log an operator out; a malformed URL gets the registry's
 * error; a live stream ends with its login (logout, expiry) and one user cannot take every stream;
 * behind a TLS proxy named in CONSOLE_TRUSTED_PROXY a Secure cookie is set and each operator has
 * their own login limit, while the same headers from anyone else are ignored; history over the
 * local store reads only the days of its window, and only so many reads run at once. docs/console.md.
 */

/** An answer of the console, with the cookies it set. */
type Answer = HttpAnswer & { cookies: string[] };

/** One request to the console from a chosen address (any 127.x is loopback). */
async function call(port: number, path: string, o: { method?: string; headers?: Record<string, string>; body?: unknown; from?: string; host?: string } = {}): Promise<Answer> {
  const host = o.host ?? '127.0.0.1';
  const a = await requestFrom(`http://${host.includes(':') ? `[${host}]` : host}:${port}${path}`, o);
  return { ...a, cookies: a.headers['set-cookie'] ?? [] };
}

/** A client of the console through node:http: its cookies, its CSRF token, its address and headers. */
class RawClient {
  readonly jar = new Map<string, string>();
  csrf = '';
  constructor(
    readonly port: number,
    readonly from: string,
    readonly headers: Record<string, string> = {},
    /** the console's address, when not the loopback's usual one */
    readonly host?: string,
  ) {}

  async req(path: string, method = 'GET', body?: unknown): Promise<Answer> {
    const headers: Record<string, string> = { ...this.headers };
    if (this.jar.size > 0) headers.cookie = [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
    if (method === 'POST') headers['x-csrf-token'] = this.csrf;
    const a = await call(this.port, path, { method, headers, body, from: this.from, ...(this.host ? { host: this.host } : {}) });
    for (const c of a.cookies) {
      const [pair = ''] = c.split(';');
      const eq = pair.indexOf('=');
      this.jar.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
    if (a.body && typeof a.body.csrfToken === 'string') this.csrf = a.body.csrfToken;
    return a;
  }

  async login(token: string): Promise<Answer> {
    await this.req('/api/session');
    return this.req('/api/login', 'POST', { token });
  }
}

const sessionCookie = (a: Answer) => a.cookies.find((c) => c.startsWith('fieldstream_console='));

describe('the operator console against hostile clients', () => {
  const tmp = tempDir('console-hostile');
  let fx: EmbeddedFixture;
  let base: string;
  let port: number;
  const extra: OperatorConsole[] = [];

  /** Another console on the fixture's broker and store, with settings of its own. */
  async function anotherConsole(env: Record<string, string>): Promise<OperatorConsole> {
    const c = await extraConsole(fx, `console-hostile-${extra.length}`, { CONSOLE_MANAGE_API: 'off', ...env });
    extra.push(c);
    return c;
  }

  before(async () => {
    fx = await startEmbeddedFixture(
      ['meter-1'],
      // Every login of this file comes from 127.0.0.1 within a minute or so.
      { COMMAND_API_TOKENS_FILE: writeRoleTokens(tmp.dir), CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE: '200' },
      { console: true },
    );
    assert.ok(fx.pipeline.console, 'the fixture runs the console');
    base = fx.pipeline.console.url;
    port = fx.pipeline.console.port;
  });
  after(async () => {
    for (const c of extra) await c.close();
    await fx?.stop();
    tmp.cleanup();
  });

  it('anonymous visits store no session, so no flood of them can push an operator\'s out; a new login still works', async () => {
    const op = new ConsoleSession(base);
    await op.login(ROLE_TOKENS.operator);
    // Were a visit's CSRF secret kept in a session, each would set the session cookie, and past
    // CONSOLE.maxSessions of them the oldest sessions (the operators') would go. The store's own
    // order of dropping is checked in test/unit/console-fleet.test.ts.
    const visits = 500;
    let next = 0;
    const worker = async () => {
      while (next < visits) {
        next++;
        const r = await call(port, '/api/session');
        assert.equal(r.status, 200);
        assert.equal(sessionCookie(r), undefined, 'no session for an anonymous visit');
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));

    const s = await op.request('/api/session');
    assert.equal(s.body.authenticated, true, 'the operator logged in before the flood is still logged in');
    assert.equal(s.body.user, 'operator-user');
    const device = await op.request('/api/devices/meter-1');
    assert.notEqual(device.status, 401, JSON.stringify(device.body));
    // A POST with the session's CSRF token: the token still belongs to the session.
    const bad = await op.request('/api/devices/meter-1/commands', { method: 'POST', body: { command: 'bad name' } });
    assert.equal(bad.body.error?.code, 'CONSOLE_INVALID_REQUEST', 'past the CSRF check, refused for its body');
    const newcomer = new ConsoleSession(base);
    assert.equal((await newcomer.login(ROLE_TOKENS.viewer)).status, 200);
  });

  it('answers a URL it cannot decode with the registry\'s error, not fastify\'s', async () => {
    for (const path of ['/%', '/api/devices/%E0%A4%A', '/api/devices/%E0%A4%A/history?field=v&from=0&to=1']) {
      const r = await call(port, path);
      assert.equal(r.status, 400, path);
      assert.equal(r.body.error?.code, 'CONSOLE_INVALID_REQUEST', `${path}: ${JSON.stringify(r.body)}`);
      assert.equal(typeof r.body.error.message, 'string');
      assert.ok(!JSON.stringify(r.body).includes('FST_'), 'no fastify code');
    }
    // Nor fastify's body for what Node's HTTP parser refuses: the registry's code, in the console's shape.
    for (const [text, status, code] of [
      ['GET /api/session HTTP/1.1\r\nHost: x\r\nnot a header\r\n\r\n', 400, 'HTTP_MALFORMED'],
      [`GET /api/session HTTP/1.1\r\nHost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'HTTP_HEADERS_TOO_LARGE'],
    ] as const) {
      const r = await rawRequest(port, text);
      assert.equal(r.status, status, JSON.stringify(r.body));
      assert.equal(r.body.error?.code, code, JSON.stringify(r.body));
    }
    // The console is still up, and answers as before.
    assert.equal((await call(port, '/api/session')).status, 200);
  });

  it('logging out ends the live streams of that login at once; another login\'s stream goes on', async () => {
    const a = new ConsoleSession(base);
    await a.login(ROLE_TOKENS.operator);
    const b = new ConsoleSession(base);
    await b.login(ROLE_TOKENS.operator);
    const fleet = await a.live();
    const device = await a.live('?device=meter-1');
    const other = await b.live();
    try {
      await fleet.until((e) => (e.event === 'snapshot' ? true : undefined));
      await device.until((e) => (e.event === 'snapshot' ? true : undefined));
      assert.equal((await a.request('/api/logout', { method: 'POST' })).status, 200);
      const timeout = new Promise<string>((r) => setTimeout(() => r('still open'), 3_000));
      assert.equal(await Promise.race([fleet.ended.then(() => 'ended'), timeout]), 'ended', 'the fleet stream ended');
      assert.equal(await Promise.race([device.ended.then(() => 'ended'), timeout]), 'ended', "the device stream (which reads with the user's token) ended");
      // The other login's stream still gets the pipeline view every 2 s.
      const seen = other.events.length;
      await other.until((e) => (other.events.indexOf(e) >= seen && e.event === 'pipeline' ? true : undefined), 10_000);
      const again = await fetch(new URL('/api/live', base), { headers: { cookie: a.cookies() } });
      assert.equal(again.status, 401, 'and the logged-out cookie opens no new stream');
      await again.arrayBuffer();
    } finally {
      fleet.close();
      device.close();
      other.close();
    }
  });

  it('a request still running at the logout, or at a new login, does not bring the ended session back; the logout clears the cookie', async () => {
    // A command API that takes its time: a device page (which reads the device's commands as the
    // user) is still running when the same browser logs out, or logs in again.
    const slow = createServer((req, res) => {
      req.resume();
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"commands":[]}'), 600);
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    try {
      const c = await anotherConsole({ CONSOLE_COMMAND_API_URL: `http://127.0.0.1:${(slow.address() as AddressInfo).port}` });
      const s = new ConsoleSession(c.url);
      await s.login(ROLE_TOKENS.operator);
      const atLogin = s.cookie;
      const running = s.request('/api/devices/meter-1');
      await new Promise((r) => setTimeout(r, 150));
      const out = await fetch(new URL('/api/logout', c.url), { method: 'POST', headers: { cookie: s.cookies(), 'x-csrf-token': s.csrf } });
      assert.equal(out.status, 200);
      const cleared = out.headers.getSetCookie().find((k) => k.startsWith('fieldstream_console='));
      assert.ok(cleared && /^fieldstream_console=;/.test(cleared) && /Expires=Thu, 01 Jan 1970/i.test(cleared), `the logout clears the cookie: ${cleared}`);
      assert.equal((await running).status, 200, 'the request begun before the logout is answered');
      // A copy of the cookie from before the logout (a stolen one, or a page that kept it) is worth nothing.
      s.cookie = atLogin;
      assert.equal((await s.request('/api/session')).body.authenticated, false, 'the session came back after its logout');
      assert.equal((await s.request('/api/devices/meter-1')).status, 401);

      // Logging in again while a request of the previous login runs: that login stays replaced, and
      // the running request's answer does not hand the browser its old cookie back.
      await s.login(ROLE_TOKENS.operator);
      const first = s.cookie;
      const stillRunning = fetch(new URL('/api/devices/meter-1', c.url), { headers: { cookie: s.cookies() } });
      await new Promise((r) => setTimeout(r, 150));
      await s.login(ROLE_TOKENS.operator);
      const second = s.cookie;
      assert.notEqual(second, first);
      const answer = await stillRunning;
      await answer.arrayBuffer();
      assert.deepEqual(answer.headers.getSetCookie().filter((k) => k.startsWith('fieldstream_console=')), [], 'no session cookie set by a request that did not change the session');
      s.cookie = first;
      assert.equal((await s.request('/api/session')).body.authenticated, false, 'the login that a new one replaced came back');
      s.cookie = second;
      assert.equal((await s.request('/api/session')).body.authenticated, true, 'the new login holds');
    } finally {
      slow.closeAllConnections();
      await new Promise((r) => slow.close(r));
    }
  });

  it('a live stream ends when its login expires (CONSOLE_SESSION_TTL_S)', async () => {
    const short = await anotherConsole({ CONSOLE_SESSION_TTL_S: '2' });
    const s = new ConsoleSession(short.url);
    await s.login(ROLE_TOKENS.viewer);
    const live = await s.live('?device=meter-1');
    // The page keeps asking meanwhile: being busy does not make a login last longer.
    const busy = setInterval(() => void s.request('/api/session').catch(() => {}), 300);
    try {
      await live.until((e) => (e.event === 'snapshot' ? true : undefined));
      const timeout = new Promise<string>((r) => setTimeout(() => r('still open'), 6_000));
      assert.equal(await Promise.race([live.ended.then(() => 'ended'), timeout]), 'ended');
      assert.equal((await s.request('/api/session')).body.authenticated, false, 'the session says so too');
      assert.equal((await s.request('/api/devices/meter-1')).status, 401);
    } finally {
      clearInterval(busy);
      live.close();
    }
  });

  it(`one user holds at most ${CONSOLE.maxLiveStreamsPerUser} live streams over all their logins (CONSOLE_TOO_MANY_USER_STREAMS); other users still get theirs`, async () => {
    // The streams of one credential spread over logins: logging in again buys no more.
    const logins = [new ConsoleSession(base), new ConsoleSession(base), new ConsoleSession(base)];
    for (const s of logins) await s.login(ROLE_TOKENS.viewer);
    const [first, second, third] = logins as [ConsoleSession, ConsoleSession, ConsoleSession];
    const streams = [];
    try {
      for (let i = 0; i < CONSOLE.maxLiveStreamsPerUser; i++) streams.push(await (i % 2 === 0 ? first : second).live());
      for (const s of logins) {
        const refused = await fetch(new URL('/api/live', base), { headers: { cookie: s.cookies() } });
        assert.equal(refused.status, 429);
        assert.equal(((await refused.json()) as { error: { code: string } }).error.code, 'CONSOLE_TOO_MANY_USER_STREAMS');
      }
      const other = new ConsoleSession(base);
      await other.login(ROLE_TOKENS.operator);
      streams.push(await other.live());
      // A stream closed frees its place, for any login of that user.
      streams[0]?.close();
      await eventually(async () => {
        const r = await fetch(new URL('/api/live', base), { headers: { cookie: third.cookies() } });
        if (r.status !== 200) {
          await r.arrayBuffer();
          return undefined;
        }
        await r.body?.cancel();
        return true;
      }, 5_000, 'a place again after closing a stream');
    } finally {
      for (const l of streams) l.close();
    }
  });

  it('HEAD /api/live opens no stream and holds no place among a user\'s streams', async () => {
    const s = new ConsoleSession(base);
    await s.login(ROLE_TOKENS.viewer);
    for (let i = 0; i <= CONSOLE.maxLiveStreamsPerUser; i++) {
      const head = await fetch(new URL('/api/live', base), { method: 'HEAD', headers: { cookie: s.cookies() } });
      assert.equal(head.status, 404, 'no stream for a HEAD: no such route');
    }
    const live = await s.live();
    live.close();
  });

  it('a login whose token the command API refused ends, and is refused from then on: the command API never throttles the console for it', async () => {
    // This console knows a token the command API does not (revoked there, the console not restarted).
    const stale = 'stale-operator-token-0123456789abcd';
    const staleViewer = 'stale-viewer-token-0123456789abcdef';
    const tokens = join(tmp.dir, 'console-tokens.json');
    writeFileSync(
      tokens,
      JSON.stringify([
        ...JSON.parse(readFileSync(writeRoleTokens(tmp.dir), 'utf8')),
        { name: 'stale-user', role: 'operator', sha256: sha256Hex(stale) },
        { name: 'stale-viewer', role: 'viewer', sha256: sha256Hex(staleViewer) },
      ]),
    );
    const c = await anotherConsole({ COMMAND_API_TOKENS_FILE: tokens });
    const user = new RawClient(c.port, '127.0.0.1');
    assert.equal((await user.login(stale)).status, 200, 'the console still knows the token');
    const refused = await user.req('/api/devices/meter-1/commands', 'POST', { command: 'ping' }); // to the command API as this user
    assert.equal(refused.body.error?.code, 'CONSOLE_UNAUTHORIZED', JSON.stringify(refused.body));
    assert.equal((await user.req('/api/session')).body.authenticated, false, 'the login ended at the refusal');
    // A device page reads the device's commands from the command API as its user: refused, not
    // shown as a device without commands.
    const viewer = new RawClient(c.port, '127.0.0.1');
    assert.equal((await viewer.login(staleViewer)).status, 200);
    const page = await viewer.req('/api/devices/meter-1');
    assert.equal(page.body.error?.code, 'CONSOLE_UNAUTHORIZED', JSON.stringify(page.body));
    assert.equal((await viewer.req('/api/session')).body.authenticated, false, 'the login ended at the refusal');
    // More tries than the command API's budget of wrong tokens per address (20): none reaches it.
    for (let i = 0; i < 25; i++) {
      const again = new RawClient(c.port, '127.0.0.1');
      const login = await again.login(stale);
      assert.equal(login.body.error?.code, 'CONSOLE_LOGIN_FAILED');
      await again.req('/api/devices/meter-1/commands', 'POST', { command: 'ping' });
    }
    // Every other operator of the console is served by the command API as before.
    const op = new RawClient(c.port, '127.0.0.1');
    assert.equal((await op.login(ROLE_TOKENS.operator)).status, 200);
    const sent = await op.req('/api/devices/meter-1/commands', 'POST', { command: 'ping' });
    assert.ok(sent.status < 300, `the command API still serves the console: ${JSON.stringify(sent.body)}`);
  });

  it('a token taken out of COMMAND_API_TOKENS_FILE is refused within a second, no restart: its logins, streams, history and bearer calls end; a changed role applies to open logins; an invalid or removed file keeps the last valid set', async () => {
    const dir = join(tmp.dir, 'reloaded-tokens');
    mkdirSync(dir, { recursive: true });
    const tokens = writeRoleTokens(dir);
    type Entry = { name: string; role: string; sha256: string };
    const all = JSON.parse(readFileSync(tokens, 'utf8')) as Entry[];
    // As an operator should: a new file renamed over the old, never seen half-written.
    const replace = (content: string) => {
      writeFileSync(`${tokens}.new`, content);
      renameSync(`${tokens}.new`, tokens);
    };
    const within = <T>(check: () => Promise<T | undefined>, what: string) => eventually(check, TIMINGS.roleTokensReloadMs + 3_000, what);
    // The command API of the fixture knows every token still: the console alone must notice.
    const c = await anotherConsole({ COMMAND_API_TOKENS_FILE: tokens, CONSOLE_MANAGE_API: 'on' });
    const manage = async (token: string) => {
      const r = await fetch(new URL('/api/v1/manage/devices', c.url), { headers: { authorization: `Bearer ${token}` } });
      return { status: r.status, code: ((await r.json()) as { error?: { code?: string } }).error?.code };
    };
    const now = Date.now();
    const historyPath = `/api/devices/meter-1/history?field=temp&from=${now - 60_000}&to=${now}`;

    const viewer = new ConsoleSession(c.url);
    await viewer.login(ROLE_TOKENS.viewer);
    const operator = new ConsoleSession(c.url);
    await operator.login(ROLE_TOKENS.operator);
    const live = await viewer.live('?device=meter-1');
    try {
      await live.until((e) => (e.event === 'snapshot' ? true : undefined));
      assert.equal((await viewer.request(historyPath)).status, 200);
      assert.equal((await manage(ROLE_TOKENS.viewer)).status, 200);

      // The viewer's token taken out, the operator made a viewer.
      replace(JSON.stringify(all.filter((e) => e.role !== 'viewer').map((e) => (e.role === 'operator' ? { ...e, role: 'viewer' } : e))));
      await within(async () => ((await viewer.request('/api/session')).body.authenticated === false ? true : undefined), 'the viewer logged out');
      const timeout = new Promise<string>((r) => setTimeout(() => r('still open'), 3_000));
      assert.equal(await Promise.race([live.ended.then(() => 'ended'), timeout]), 'ended', 'its live stream ended');
      const history = await viewer.request(historyPath);
      assert.deepEqual([history.status, history.body.error?.code], [401, 'CONSOLE_UNAUTHORIZED']);
      const again = await fetch(new URL('/api/live', c.url), { headers: { cookie: viewer.cookies() } });
      assert.equal(again.status, 401, 'no new stream');
      await again.arrayBuffer();
      assert.deepEqual(await manage(ROLE_TOKENS.viewer), { status: 401, code: 'MANAGE_UNAUTHORIZED' }, 'its bearer refused');
      const relogin = new ConsoleSession(c.url);
      await relogin.request('/api/session');
      const login = await relogin.request('/api/login', { method: 'POST', body: { token: ROLE_TOKENS.viewer } });
      assert.deepEqual([login.status, login.body.error?.code], [401, 'CONSOLE_LOGIN_FAILED'], 'no new login');
      // The operator's login goes on, as the viewer it now is.
      const role = await operator.request('/api/session');
      assert.deepEqual([role.body.authenticated, role.body.role], [true, 'viewer']);
      const command = await operator.request('/api/devices/meter-1/commands', { method: 'POST', body: { command: 'ping' } });
      assert.deepEqual([command.status, command.body.error?.code], [403, 'CONSOLE_FORBIDDEN']);
      assert.ok(fx.logs.lines.some((l) => l.msg === 'role tokens file read again' && l.path === tokens));

      // The token given back: the login it ended stays ended, a new one works.
      // Polled with the admin's token: a poll with the viewer's before the file is read again would
      // count as a wrong token, and 20 of them in a second would throttle this address.
      const reads = () => fx.logs.lines.filter((l) => l.msg === 'role tokens file read again' && l.path === tokens).length;
      const readsBefore = reads();
      replace(JSON.stringify(all));
      await within(async () => ((await manage(ROLE_TOKENS.admin)).status === 200 && reads() > readsBefore ? true : undefined), 'the file read again');
      assert.equal((await manage(ROLE_TOKENS.viewer)).status, 200, 'the viewer known again');
      assert.equal((await viewer.request('/api/session')).body.authenticated, false, 'the ended login did not come back');
      await viewer.login(ROLE_TOKENS.viewer);
      assert.equal((await viewer.request(historyPath)).status, 200);

      // Files that are no tokens file, then none: each logged, the last valid set in force, the console up.
      const invalid = () => fx.logs.lines.filter((l) => l.code === 'ROLE_TOKENS_INVALID' && l.path === tokens);
      for (const [what, change, cause] of [
        ['not JSON', () => replace('[{"name": "admin-user", '), 'CONFIG_INVALID'],
        ['an unknown role', () => replace(JSON.stringify([{ ...all[0], role: 'root' }])), 'CONFIG_INVALID'],
        ['removed', () => rmSync(tokens), 'CONFIG_FILE_UNREADABLE'],
      ] as const) {
        const seen = invalid().length;
        change();
        // Looked at when a token is next checked (here: the admin's bearer).
        const line = await within(async () => (await manage(ROLE_TOKENS.admin)).status === 200 ? invalid()[seen] : undefined, `ROLE_TOKENS_INVALID for ${what}`);
        assert.equal(line.level, 50, `${what}: logged as an error`);
        assert.equal(line.cause, cause, what);
        assert.equal((await viewer.request('/api/session')).body.role, 'viewer', `${what}: the viewer's login holds`);
        assert.equal((await manage(ROLE_TOKENS.admin)).status, 200, `${what}: the admin's token still works`);
        const admin = new ConsoleSession(c.url);
        assert.equal((await admin.login(ROLE_TOKENS.admin)).status, 200, `${what}: a new login works`);
      }
    } finally {
      live.close();
    }
  });

  describe('behind a TLS proxy', () => {
    let viaProxy: OperatorConsole;
    let noProxy: OperatorConsole;
    before(async () => {
      viaProxy = await anotherConsole({ CONSOLE_COOKIE_SECURE: 'true', CONSOLE_TRUSTED_PROXY: '127.0.0.1', CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE: '3' });
      noProxy = await anotherConsole({ CONSOLE_COOKIE_SECURE: 'true' });
    });

    it('with CONSOLE_TRUSTED_PROXY, a request the proxy marks https gets a Secure cookie and logs in; the log names the operator\'s address', async () => {
      const c = new RawClient(viaProxy.port, '127.0.0.1', { 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.7' });
      const login = await c.login(ROLE_TOKENS.operator);
      assert.equal(login.status, 200, JSON.stringify(login.body));
      const cookie = sessionCookie(login);
      assert.ok(cookie, 'a session cookie');
      assert.match(cookie, /;\s*Secure/i);
      assert.equal((await c.req('/api/session')).body.authenticated, true);
      assert.ok(
        fx.logs.lines.some((l) => l.msg === 'console login' && l.ip === '203.0.113.7'),
        "the login is logged with the operator's address, not the proxy's",
      );
    });

    it('the same headers from an address that is not the proxy, or with no proxy configured, are ignored: no login over plain HTTP (CONSOLE_HTTPS_REQUIRED)', async () => {
      for (const [name, p, from] of [
        ['not the proxy', viaProxy.port, '127.0.0.2'],
        ['no proxy configured', noProxy.port, '127.0.0.1'],
      ] as const) {
        const c = new RawClient(p, from, { 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.50' });
        const login = await c.login(ROLE_TOKENS.operator);
        assert.equal(login.status, 403, `${name}: ${JSON.stringify(login.body)}`);
        assert.equal(login.body.error?.code, 'CONSOLE_HTTPS_REQUIRED', name);
        assert.equal(sessionCookie(login), undefined, name);
        assert.equal((await c.req('/api/session')).body.authenticated, false, name);
      }
      const refused = fx.logs.lines.filter((l) => l.code === 'CONSOLE_HTTPS_REQUIRED').map((l) => l.ip);
      assert.ok(refused.includes('127.0.0.2') && refused.includes('127.0.0.1'), `logged with the real peer, never the claimed one: ${refused.join(', ')}`);
      assert.ok(!refused.includes('203.0.113.50'));
    });

    it('through the proxy, each operator has their own login limit (X-Forwarded-For), not one for the proxy', async () => {
      const a = new RawClient(viaProxy.port, '127.0.0.1', { 'x-forwarded-proto': 'https', 'x-forwarded-for': '198.51.100.1' });
      await a.req('/api/session');
      const codes: string[] = [];
      for (let i = 0; i < 4; i++) codes.push((await a.req('/api/login', 'POST', { token: `wrong-${i}-0123456789abcdef0123` })).body.error?.code);
      assert.deepEqual(codes, ['CONSOLE_LOGIN_FAILED', 'CONSOLE_LOGIN_FAILED', 'CONSOLE_LOGIN_FAILED', 'CONSOLE_LOGIN_RATE_LIMITED']);
      const b = new RawClient(viaProxy.port, '127.0.0.1', { 'x-forwarded-proto': 'https', 'x-forwarded-for': '198.51.100.2' });
      const login = await b.login(ROLE_TOKENS.operator);
      assert.equal(login.status, 200, `another operator behind the same proxy: ${JSON.stringify(login.body)}`);
    });

    it(`through the proxy's address, ${CONSOLE.loginAttemptsPerConnectionFactor} times the login limit at most, whatever X-Forwarded-For says: a client at that address cannot guess without end`, async () => {
      const c = await anotherConsole({ CONSOLE_TRUSTED_PROXY: '127.0.0.1', CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE: '2' });
      const budget = 2 * CONSOLE.loginAttemptsPerConnectionFactor;
      const attempt = async (from: string, forwarded: string, token: string) => {
        const client = new RawClient(c.port, from, { 'x-forwarded-for': forwarded });
        return (await client.login(token)).body.error?.code;
      };
      for (let i = 0; i < budget; i++) {
        assert.equal(await attempt('127.0.0.1', `198.51.100.${i + 1}`, `wrong-${i}-0123456789abcdef0123`), 'CONSOLE_LOGIN_FAILED', `attempt ${i + 1}, each with an address of its own`);
      }
      assert.equal(await attempt('127.0.0.1', '198.51.100.250', ROLE_TOKENS.operator), 'CONSOLE_LOGIN_RATE_LIMITED', 'the proxy address spent its budget, a valid token too');
      assert.ok(fx.logs.lines.some((l) => l.code === 'CONSOLE_LOGIN_RATE_LIMITED' && l.connection === '127.0.0.1'), 'the spent budget is logged with the connection address');
      // Another connection address has its own.
      assert.equal(await attempt('127.0.0.2', '198.51.100.1', ROLE_TOKENS.operator), undefined);
    });

    it('through the proxy, operators forwarding addresses of one IPv6 /64 share one login limit (one host holds all of it); another /64 has its own', async () => {
      const from = (forwarded: string) => new RawClient(viaProxy.port, '127.0.0.1', { 'x-forwarded-proto': 'https', 'x-forwarded-for': forwarded });
      const codes: string[] = [];
      for (const [i, forwarded] of ['2001:db8:aa:1::1', '2001:db8:aa:1::2', '2001:db8:aa:1:8000::3'].entries()) {
        codes.push((await from(forwarded).login(`wrong-${i}-0123456789abcdef0123`)).body.error?.code);
      }
      assert.deepEqual(codes, ['CONSOLE_LOGIN_FAILED', 'CONSOLE_LOGIN_FAILED', 'CONSOLE_LOGIN_FAILED']);
      assert.equal((await from('2001:db8:aa:1:ffff::4').login(ROLE_TOKENS.operator)).body.error?.code, 'CONSOLE_LOGIN_RATE_LIMITED', 'a fourth address of the /64, a valid token too');
      assert.equal((await from('2001:db8:aa:2::1').login(ROLE_TOKENS.operator)).status, 200, 'another /64');
    });

    it("the connection's own budget keeps an IPv6 proxy network as one: connections from several addresses of a /64 share it", { skip: ipv6NetworksUnavailable() }, async () => {
      const net6 = ipv6Networks();
      try {
        const c = await anotherConsole({ CONSOLE_HOST: net6.server, CONSOLE_TRUSTED_PROXY: `${net6.server}/64,${net6.otherNetwork}/64`, CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE: '2' });
        const budget = 2 * CONSOLE.loginAttemptsPerConnectionFactor;
        const attempt = async (from: string, forwarded: string, token: string) =>
          (await new RawClient(c.port, from, { 'x-forwarded-proto': 'https', 'x-forwarded-for': forwarded }, net6.server).login(token)).body.error?.code;
        const [a, b, third] = net6.sameNetwork;
        for (let i = 0; i < budget; i++) {
          assert.equal(await attempt(i % 2 === 0 ? a : b, `198.51.100.${i + 1}`, `wrong-${i}-0123456789abcdef0123`), 'CONSOLE_LOGIN_FAILED', `attempt ${i + 1}`);
        }
        assert.equal(await attempt(third, '198.51.100.250', ROLE_TOKENS.operator), 'CONSOLE_LOGIN_RATE_LIMITED', 'a third address of the /64 finds the budget spent, a valid token too');
        assert.equal(await attempt(net6.otherNetwork, '198.51.100.251', ROLE_TOKENS.operator), undefined, 'another /64 has its own');
      } finally {
        net6.close();
      }
    });
  });

  describe('history over the local store', () => {
    const HOUR = 3_600_000;
    const day = (n: number) => Date.parse(`2020-01-${String(n).padStart(2, '0')}T00:00:00Z`);
    const line = (device: string, time: number, v: number) => JSON.stringify({ measurement: 'readings', tags: { device }, fields: { v }, time: new Date(time).toISOString() });

    it('reads the day files from the day before the window on: a backlog written days later is in its history', async () => {
      // Ten day files, each holding a reading taken inside the window (written late, as a backlog
      // would be), its value the file's day: what the answer holds says which files were read.
      const from = day(3) + 12 * HOUR;
      const to = day(4) + 12 * HOUR;
      for (let n = 1; n <= 10; n++) writeFileSync(join(fx.data.timeseries, `2020-01-${String(n).padStart(2, '0')}.jsonl`), line('old-1', from + n * HOUR, n) + '\n');
      const s = new ConsoleSession(base);
      await s.login(ROLE_TOKENS.viewer);
      const h = await s.request(`/api/devices/old-1/history?field=v&from=${from}&to=${to}`);
      assert.equal(h.status, 200, JSON.stringify(h.body));
      assert.deepEqual(
        h.body.points.map((p: [number, number]) => p[1]),
        [2, 3, 4, 5, 6, 7, 8, 9, 10],
        'from the day before the window on, not the day before that',
      );
    });

    it(`takes at most ${CONSOLE.historyMaxPerUser} reads from one user at once, CONSOLE_HISTORY_BUSY past it, while another user is served`, async () => {
      // A day of many readings: each read takes a while, so the requests below overlap.
      const start = Date.parse('2020-02-01T00:00:00Z');
      const lines: string[] = [];
      for (let i = 0; i < 5_000; i++) lines.push(line('big-1', start + i * 1000, i));
      writeFileSync(join(fx.data.timeseries, '2020-02-01.jsonl'), lines.join('\n') + '\n');
      const path = `/api/devices/big-1/history?field=v&from=${start}&to=${start + 20 * HOUR}`;
      // The same user in two sessions: counted together.
      const greedy = [new ConsoleSession(base), new ConsoleSession(base)];
      for (const s of greedy) await s.login(ROLE_TOKENS.viewer);
      const other = new ConsoleSession(base);
      await other.login(ROLE_TOKENS.operator);
      const asked = CONSOLE.historyMaxPerUser + 6;
      // As many connections as requests opened first (fetch keeps them), so the requests below
      // arrive together rather than one connection set-up apart.
      await Promise.all([...Array.from({ length: asked }, (_, i) => greedy[i % 2]!.request('/api/session')), ...Array.from({ length: 3 }, () => other.request('/api/session'))]);
      const [mine, theirs] = await Promise.all([
        Promise.all(Array.from({ length: asked }, (_, i) => greedy[i % 2]!.request(path))),
        Promise.all(Array.from({ length: 3 }, () => other.request(path))),
      ]);
      const busy = mine.filter((a) => a.status !== 200);
      for (const a of busy) {
        assert.equal(a.status, 503);
        assert.equal(a.body.error?.code, 'CONSOLE_HISTORY_BUSY');
        assert.equal(a.body.error?.details?.perUser, CONSOLE.historyMaxPerUser);
      }
      assert.ok(busy.length >= 1 && mine.length - busy.length >= CONSOLE.historyMaxPerUser, `${busy.length} of ${asked} refused`);
      for (const a of theirs) assert.equal(a.status, 200, `the other user is served: ${JSON.stringify(a.body)}`);
      const later = await greedy[0]!.request(path);
      assert.equal(later.status, 200, 'every place given back');
      assert.ok(later.body.points.length > 0);
    });
  });
});
