import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CONSOLE, LIMITS, MANAGE } from '../../shared/limits.ts';
import { ERRORS } from '../../shared/errors.ts';
import { ConsoleSession, ROLE_TOKENS, writeRoleTokens } from '../helpers/console-client.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { rawRequest, requestFrom } from '../helpers/http-from.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * The operator console's answers to requests that are odd rather than hostile, on the embedded
 * pipeline (real HTTP, MQTT, disk, the local store): each gets a coded 4xx, never a 500 with an
 * error-level log line; what every answer of the pages' API says to caches; and that every error,
 * those no route sees too, carries the pages' security headers. docs/console.md.
 */
describe('the operator console answering odd requests', () => {
  const tmp = tempDir('console-requests');
  let fx: EmbeddedFixture;
  let base: string;

  before(async () => {
    fx = await startEmbeddedFixture(['meter-1'], { COMMAND_API_TOKENS_FILE: writeRoleTokens(tmp.dir), CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE: '200' }, { console: true });
    assert.ok(fx.pipeline.console, 'the fixture runs the console');
    base = fx.pipeline.console.url;
  });
  after(async () => {
    await fx?.stop();
    tmp.cleanup();
  });

  const internalErrors = () => fx.logs.lines.filter((l) => l.code === 'CONSOLE_INTERNAL');

  it('a history window past the end of year 9999 is 400 CONSOLE_INVALID_REQUEST, not a 500 from the store', async () => {
    const s = new ConsoleSession(base);
    await s.login(ROLE_TOKENS.viewer);
    const before = internalErrors().length;
    const max = CONSOLE.historyMaxTimeMs;
    for (const [from, to] of [
      [9_000_000_000_000_000, 9_000_000_000_001_000],
      [8.64e15 - 1000, 8.64e15],
      [max, max + 1],
    ]) {
      const r = await s.request(`/api/devices/meter-1/history?field=v&from=${from}&to=${to}`);
      assert.deepEqual([r.status, r.body.error?.code], [400, 'CONSOLE_INVALID_REQUEST'], `${from}..${to}: ${JSON.stringify(r.body)}`);
    }
    // The last window a request may ask for is read (nothing there), not refused.
    const last = await s.request(`/api/devices/meter-1/history?field=v&from=${max - 1000}&to=${max}`);
    assert.equal(last.status, 200, JSON.stringify(last.body));
    assert.deepEqual(last.body.points, []);
    assert.equal(internalErrors().length, before, 'no internal error logged');
  });

  it('opens the live stream whatever a newer page puts in `parts` (none it does not know is refused), and refuses only a value past its bound', async () => {
    // A page of a later version may ask for parts this console does not know: refused, its
    // EventSource reconnected for ever; served as a page that asked for none (or for the parts this
    // console knows), it gets a snapshot it reads.
    const s = new ConsoleSession(base);
    await s.login(ROLE_TOKENS.viewer);
    for (const parts of ['1', '2', '17', '0', 'v2', '', 'x'.repeat(CONSOLE.liveQueryPartsMaxChars)]) {
      const live = await s.live(`?${new URLSearchParams({ parts })}`);
      try {
        const snapshot = await live.until((e) => (e.event === 'snapshot' ? (e.data as { total?: number }) : undefined), 10_000);
        assert.equal(snapshot.total, 1, `parts=${parts}: the fleet`);
      } finally {
        live.close();
      }
    }
    const past = await s.request(`/api/live?parts=${'1'.repeat(CONSOLE.liveQueryPartsMaxChars + 1)}`);
    assert.deepEqual([past.status, past.body.error?.code], [400, 'CONSOLE_INVALID_REQUEST'], JSON.stringify(past.body));
  });

  it('lists the per-device security counts a page at a time, and refuses a page past its bound', async () => {
    // The live stream names the devices with most events only: the security page reads the rest here.
    const s = new ConsoleSession(base);
    const visitor = await s.request('/api/security/devices');
    assert.equal(visitor.status, 401);
    await s.login(ROLE_TOKENS.viewer);
    const r = await s.request('/api/security/devices?offset=0&limit=10');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(Object.keys(r.body).sort(), ['devices', 'next', 'offset', 'total']);
    assert.ok(Array.isArray(r.body.devices) && r.body.devices.length <= 10);
    // The counts are of every device with a row, registered or not: an offset among the last of them is a page like any other.
    const rows = CONSOLE.maxDevices + CONSOLE.maxUnregisteredDevices;
    const last = await s.request(`/api/security/devices?offset=${rows - 1}&limit=1`);
    assert.deepEqual([last.status, last.body.offset], [200, rows - 1], JSON.stringify(last.body));
    for (const q of ['limit=0', `limit=${CONSOLE.securityDevicesPageMax + 1}`, 'offset=-1', 'offset=0x10', 'limit=', `offset=${rows + 1}`]) {
      const bad = await s.request(`/api/security/devices?${q}`);
      assert.deepEqual([bad.status, bad.body.error?.code], [400, 'CONSOLE_INVALID_REQUEST'], q);
    }
  });

  it(`answers a device's page with each of its lists within ${CONSOLE.deviceAnswerListMaxBytes} bytes of JSON (CONSOLE.deviceAnswerListMaxBytes), newest first, saying how many items of each it left out`, async () => {
    // 50 events of 64 Ki characters each (a device may send that much): every one held, megabytes in one answer.
    const c = fx.pipeline.console;
    assert.ok(c);
    const big = 'x'.repeat(LIMITS.stringMaxChars);
    const t0 = Date.now();
    for (let i = 0; i < CONSOLE.perDeviceRing; i++) c.fleet.apply({ measurement: 'events', tags: { device: 'bulky-1' }, fields: { n: i, note: big }, time: t0 + i });
    const s = new ConsoleSession(base);
    await s.login(ROLE_TOKENS.viewer);
    const r = await s.request('/api/devices/bulky-1');
    assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 500));
    const events = r.body.events as Array<{ fields: { n: number } }>;
    const listBytes = (items: unknown[]) => Buffer.byteLength(JSON.stringify(items));
    assert.ok(events.length > 0 && events.length < CONSOLE.perDeviceRing, `some events, not all: ${events.length}`);
    assert.ok(listBytes(events) <= CONSOLE.deviceAnswerListMaxBytes, `the events within the bound: ${listBytes(events)} bytes`);
    // The newest kept, the next one would not have fitted, and the count left out is the rest.
    assert.deepEqual(events.map((e) => e.fields.n), Array.from({ length: events.length }, (_, i) => CONSOLE.perDeviceRing - 1 - i));
    const next = { time: t0 + CONSOLE.perDeviceRing - 1 - events.length, fields: { n: CONSOLE.perDeviceRing - 1 - events.length, note: big } };
    assert.ok(listBytes([...events, next]) > CONSOLE.deviceAnswerListMaxBytes, 'no more fitted');
    assert.deepEqual(r.body.omitted, { events: CONSOLE.perDeviceRing - events.length });
    // A device whose lists fit says nothing left out.
    const small = await s.request('/api/devices/meter-1');
    assert.equal(small.status, 200);
    assert.equal(small.body.omitted, undefined);
  });

  it('pages the per-device security counts by a cursor on their order: counts that change between two pages neither repeat nor skip a device; a bad cursor is 400 CONSOLE_INVALID_CURSOR', async () => {
    const c = fx.pipeline.console;
    assert.ok(c);
    const t0 = Date.now();
    const refused = (device: string, count: number) => c.fleet.apply({ measurement: 'security_events', tags: { device, reason: 'SECURITY_UNSIGNED' }, fields: { count }, time: t0 });
    // Ten devices with rows (their data stored), with counts far above any other device's: 1,090 down to 1,000.
    const ids = Array.from({ length: 10 }, (_, i) => `paged-${i}`);
    for (const [i, id] of ids.entries()) {
      c.fleet.apply({ measurement: 'events', tags: { device: id }, fields: { n: 1 }, time: t0 });
      refused(id, 1090 - 10 * i);
    }
    const s = new ConsoleSession(base);
    await s.login(ROLE_TOKENS.viewer);
    // The ranking is worked out at most once a CONSOLE.securityDevicesRankEveryMs: each page reads a fresh one.
    const settle = () => new Promise((r) => setTimeout(r, CONSOLE.securityDevicesRankEveryMs + 100));
    await settle();
    const first = await s.request('/api/security/devices?limit=4');
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.deepEqual(first.body.devices.map((d: { device: string }) => d.device), ids.slice(0, 4));
    assert.equal(first.body.next, `1060:${ids[3]}`, 'the cursor: the last device listed, as COUNT:DEVICE');
    // Meanwhile: a device new to the counts ranks first, one already listed gains, one not yet listed gains but stays after the cursor.
    c.fleet.apply({ measurement: 'events', tags: { device: 'paged-new' }, fields: { n: 1 }, time: t0 });
    refused('paged-new', 5000);
    refused(ids[1]!, 3);
    refused(ids[6]!, 5);
    await settle();
    const second = await s.request(`/api/security/devices?limit=4&after=${encodeURIComponent(first.body.next)}`);
    assert.equal(second.status, 200, JSON.stringify(second.body));
    assert.deepEqual(second.body.devices, [
      { device: ids[4], count: 1050 },
      { device: ids[5], count: 1040 },
      { device: ids[6], count: 1035 },
      { device: ids[7], count: 1020 },
    ], 'the devices after the last one listed, none again and none skipped');
    const third = await s.request(`/api/security/devices?limit=4&after=${encodeURIComponent(second.body.next)}`);
    assert.deepEqual(third.body.devices.slice(0, 2).map((d: { device: string }) => d.device), ids.slice(8, 10));
    for (const after of ['', 'x', '12', '-1:paged-1', '0x10:paged-1', '1:', '1:bad id', '1:paged-1:x', `1:${'a'.repeat(LIMITS.deviceIdMaxChars + 1)}`, `${'9'.repeat(17)}:paged-1`]) {
      const bad = await s.request(`/api/security/devices?after=${encodeURIComponent(after)}`);
      assert.deepEqual([bad.status, bad.body.error?.code], [400, 'CONSOLE_INVALID_CURSOR'], `after=${after}: ${JSON.stringify(bad.body)}`);
    }
    const both = await s.request(`/api/security/devices?offset=0&after=${encodeURIComponent(first.body.next)}`);
    assert.deepEqual([both.status, both.body.error?.code], [400, 'CONSOLE_INVALID_REQUEST'], 'a cursor or an offset, not both');
  });

  it('answers an HTTP/1.1 request without Host with the registry\'s error (HTTP_MALFORMED), not an empty 400, on the pages\' API, the management API and the files alike', async () => {
    const port = fx.pipeline.console!.port;
    for (const target of ['/api/session', '/api/v1/manage/status', '/index.html']) {
      const r = await rawRequest(port, `GET ${target} HTTP/1.1\r\nConnection: close\r\n\r\n`);
      assert.deepEqual([r.status, r.body?.error?.code], [400, 'HTTP_MALFORMED'], `${target}: ${JSON.stringify(r.body).slice(0, 200)}`);
      assert.match(r.body.error.message, /Host/);
    }
    // An HTTP/1.0 request may name no host (RFC 9112 §3.2 asks it of HTTP/1.1): served as ever.
    const old = await rawRequest(port, 'GET /api/session HTTP/1.0\r\n\r\n');
    assert.equal(old.status, 200, JSON.stringify(old.body));
    const named = await rawRequest(port, 'GET /api/session HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.equal(named.status, 200);
  });

  it('answers a path parameter longer than any id with its API\'s invalid-request code (400), not "no such page" or "no such endpoint" (404)', async () => {
    const s = new ConsoleSession(base);
    await s.login(ROLE_TOKENS.viewer);
    const long = 'a'.repeat(LIMITS.deviceIdMaxChars * 2 + 1);
    for (const path of [`/api/devices/${long}`, `/api/devices/${long}/history?field=v&from=1&to=2`]) {
      const r = await s.request(path);
      assert.deepEqual([r.status, r.body.error?.code], [400, 'CONSOLE_INVALID_REQUEST'], `${path.slice(0, 40)}: ${JSON.stringify(r.body)}`);
    }
    const bearer = { authorization: `Bearer ${ROLE_TOKENS.admin}` };
    for (const path of [`/api/v1/manage/devices/${long}`, `/api/v1/manage/test-events/${'c'.repeat(300)}`]) {
      const r = await fetch(new URL(path, base), { headers: bearer });
      const body = (await r.json()) as { error?: { code: string } };
      assert.deepEqual([r.status, body.error?.code], [400, 'MANAGE_INVALID_REQUEST'], `${path.slice(0, 40)}: ${JSON.stringify(body)}`);
    }
  });

  it("answers static-file requests it refuses with a coded 4xx, without credentials and without an error-level log", async () => {
    const port = fx.pipeline.console!.port;
    const before = internalErrors().length;
    for (const [what, head, status, code] of [
      ['a dot segment', 'GET /./index.html', 404, 'CONSOLE_NOT_FOUND'],
      ['a dot-dot segment inside the folder', 'GET /pages/../app.js', 404, 'CONSOLE_NOT_FOUND'],
      ['a NUL', 'GET /index.html%00', 404, 'CONSOLE_NOT_FOUND'],
      ['a range past the end', 'GET /index.html\r\nRange: bytes=999999-', 416, 'CONSOLE_RANGE_NOT_SATISFIABLE'],
      ['an If-Match that fails', 'GET /index.html\r\nIf-Match: "x"', 412, 'CONSOLE_PRECONDITION_FAILED'],
    ] as const) {
      const [line, ...headers] = head.split('\r\n');
      const r = await rawRequest(port, `${line} HTTP/1.1\r\nHost: x\r\n${headers.map((h) => `${h}\r\n`).join('')}Connection: close\r\n\r\n`);
      assert.deepEqual([r.status, r.body?.error?.code], [status, code], `${what}: ${JSON.stringify(r.body).slice(0, 200)}`);
    }
    assert.equal(internalErrors().length, before, 'none logged as the console\'s fault');
    // The same file is served as ever.
    const page = await fetch(new URL('/index.html', base));
    assert.equal(page.status, 200);
    await page.arrayBuffer();
  });

  it('answers every request of the pages\' API with Cache-Control: no-store: CSRF tokens, logins and device data are kept by no cache', async () => {
    const seen: Array<[string, number, string | null]> = [];
    const call = async (path: string, init: { method?: string; body?: unknown; cookie?: string; csrf?: string } = {}) => {
      const headers: Record<string, string> = {};
      if (init.cookie) headers.cookie = init.cookie;
      if (init.csrf) headers['x-csrf-token'] = init.csrf;
      if (init.body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetch(new URL(path, base), { method: init.method ?? 'GET', headers, ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}) });
      const text = await res.text();
      seen.push([`${init.method ?? 'GET'} ${path}`, res.status, res.headers.get('cache-control')]);
      return text;
    };
    // A visitor's session and CSRF token, a login that fails, then one that succeeds.
    const s = new ConsoleSession(base);
    await s.request('/api/session');
    await call('/api/session', { cookie: s.cookies() });
    await call('/api/login', { method: 'POST', body: { token: 'not-a-token-of-ours-0123456789abcdef' }, cookie: s.cookies(), csrf: s.csrf });
    await s.login(ROLE_TOKENS.operator);
    const now = Date.now();
    for (const path of ['/api/session', '/api/devices/meter-1', `/api/devices/meter-1/history?field=v&from=${now - 60_000}&to=${now}`]) await call(path, { cookie: s.cookies() });
    await call('/api/devices/meter-1/commands', { method: 'POST', body: { command: 'ping' }, cookie: s.cookies(), csrf: s.csrf });
    const login = await fetch(new URL('/api/login', base), { method: 'POST', headers: { cookie: s.cookies(), 'x-csrf-token': s.csrf, 'content-type': 'application/json' }, body: JSON.stringify({ token: ROLE_TOKENS.viewer }) });
    seen.push(['POST /api/login (succeeding)', login.status, login.headers.get('cache-control')]);
    const viewerCookie = login.headers.getSetCookie().find((c) => c.startsWith('fieldstream_console='))?.split(';')[0];
    const { csrfToken } = (await login.json()) as { csrfToken: string };
    const live = await fetch(new URL('/api/live', base), { headers: { cookie: [viewerCookie, s.csrfCookie].join('; ') } });
    seen.push(['GET /api/live', live.status, live.headers.get('cache-control')]);
    await live.body?.cancel();
    await call('/api/logout', { method: 'POST', cookie: [viewerCookie, s.csrfCookie].join('; '), csrf: csrfToken });
    const statuses = seen.map(([what, status]) => `${what} ${status}`);
    assert.ok(seen.every(([, status]) => status < 300 || status === 401), `answered as meant: ${statuses.join(', ')}`);
    assert.deepEqual(
      seen.filter(([, , cache]) => cache !== 'no-store'),
      [],
      'every answer no-store',
    );
    // Errors too, a path that names nothing among them (under /api/ or not).
    for (const path of ['/api/nothing', '/no-such-page']) {
      const res = await fetch(new URL(path, base));
      const body = (await res.json()) as { error?: { code?: string } };
      assert.deepEqual([res.status, body.error?.code, res.headers.get('cache-control')], [404, 'CONSOLE_NOT_FOUND', 'no-store'], path);
    }
    // The management API's prefix itself is that API's (docs/management-api.md): its code, no-store too.
    const prefix = await fetch(new URL('/api/v1/manage', base));
    const prefixBody = (await prefix.json()) as { error?: { code?: string } };
    assert.deepEqual([prefix.status, prefixBody.error?.code, prefix.headers.get('cache-control')], [401, 'MANAGE_UNAUTHORIZED', 'no-store'], '/api/v1/manage');
    // The pages themselves stay cacheable with revalidation (server.ts), as before.
    const page = await fetch(new URL('/index.html', base));
    await page.arrayBuffer();
    assert.equal(page.headers.get('cache-control'), 'no-cache');
  });

  it('answers every error with the security headers of its pages (CSP, nosniff, no framing, no referrer) and no-store, each with its code: those no route sees too', async () => {
    const port = fx.pipeline.console!.port;
    // What a page is answered with, named one by one (docs/console.md): the values every error must carry.
    const protective = ['content-security-policy', 'x-frame-options', 'x-content-type-options', 'referrer-policy', 'cross-origin-opener-policy', 'cross-origin-resource-policy', 'origin-agent-cluster', 'x-dns-prefetch-control', 'x-download-options', 'x-permitted-cross-domain-policies', 'x-xss-protection'];
    const page = await rawRequest(port, 'GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.equal(page.status, 200);
    assert.match(page.headers['content-security-policy'] ?? '', /^default-src 'self';.*frame-ancestors 'none'$/);
    assert.deepEqual([page.headers['x-frame-options'], page.headers['x-content-type-options'], page.headers['referrer-policy']], ['DENY', 'nosniff', 'no-referrer']);
    const expected = Object.fromEntries(protective.map((h) => [h, page.headers[h]]));
    assert.ok(protective.every((h) => page.headers[h] !== undefined), `the page has them all: ${JSON.stringify(expected)}`);
    const admin = `Authorization: Bearer ${ROLE_TOKENS.admin}\r\n`;
    const json = (body: string) => `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    const cases: Array<[string, string, number, string]> = [
      ['a URL it cannot decode', 'GET /% HTTP/1.1\r\nHost: x\r\n\r\n', 400, 'CONSOLE_INVALID_REQUEST'],
      ["one under the management API's prefix", `GET /api/v1/manage/devices/% HTTP/1.1\r\nHost: x\r\n${admin}\r\n`, 400, 'MANAGE_INVALID_REQUEST'],
      ['an HTTP/1.1 request without Host', 'GET /api/session HTTP/1.1\r\n\r\n', 400, 'HTTP_MALFORMED'],
      // RFC 9112 §3.2: one Host, not the first of several (a proxy in front may have read another).
      ['two Host headers', 'GET /api/session HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n', 400, 'HTTP_MALFORMED'],
      ['two Host headers in HTTP/1.0', 'GET /api/session HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n', 400, 'HTTP_MALFORMED'],
      ['a malformed header', 'GET /api/session HTTP/1.1\r\nHost: x\r\nnot a header\r\n\r\n', 400, 'HTTP_MALFORMED'],
      ['a Content-Length that is no number', 'POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n', 400, 'HTTP_MALFORMED'],
      ['headers past the parser\'s limit', `GET /api/session HTTP/1.1\r\nHost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`, ERRORS.HTTP_HEADERS_TOO_LARGE.http, 'HTTP_HEADERS_TOO_LARGE'],
      ['an expectation other than 100-continue', 'GET /no-such-page HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\n\r\n', 404, 'CONSOLE_NOT_FOUND'],
      ['no such page', 'GET /no-such-page HTTP/1.1\r\nHost: x\r\n\r\n', 404, 'CONSOLE_NOT_FOUND'],
      ['no such method', 'PROPFIND /api/session HTTP/1.1\r\nHost: x\r\n\r\n', 404, 'CONSOLE_NOT_FOUND'],
      ['a static file refused for its path', 'GET /./index.html HTTP/1.1\r\nHost: x\r\n\r\n', 404, 'CONSOLE_NOT_FOUND'],
      ['a Range past the end of a file', 'GET /index.html HTTP/1.1\r\nHost: x\r\nRange: bytes=999999-\r\n\r\n', 416, 'CONSOLE_RANGE_NOT_SATISFIABLE'],
      ['a login without its CSRF token', `POST /api/login HTTP/1.1\r\nHost: x\r\n${json('{}')}`, 403, 'CONSOLE_CSRF_INVALID'],
      ['no login', 'GET /api/devices/meter-1 HTTP/1.1\r\nHost: x\r\n\r\n', 401, 'CONSOLE_UNAUTHORIZED'],
      ['no bearer token', 'GET /api/v1/manage/status HTTP/1.1\r\nHost: x\r\n\r\n', 401, 'MANAGE_UNAUTHORIZED'],
      ['a body that is not JSON', `POST /api/v1/manage/topics/validate HTTP/1.1\r\nHost: x\r\n${admin}${json('{x')}`, 400, 'MANAGE_INVALID_REQUEST'],
      ['a body past the bound', `POST /api/v1/manage/topics/validate HTTP/1.1\r\nHost: x\r\n${admin}Content-Type: application/json\r\nContent-Length: ${CONSOLE.bodyMaxBytes + 1}\r\n\r\n{}`, 400, 'MANAGE_INVALID_REQUEST'],
    ];
    for (const [what, head, status, code] of cases) {
      // Each on a connection of its own, closed after it (the parser's refusals close theirs anyway).
      const text = head.replace('\r\n', '\r\nConnection: close\r\n');
      const r = await rawRequest(port, text);
      assert.deepEqual([r.status, r.body?.error?.code], [status, code], `${what}: ${JSON.stringify(r.body).slice(0, 200)}`);
      assert.deepEqual(Object.fromEntries(protective.map((h) => [h, r.headers[h]])), expected, `${what}: its security headers`);
      assert.equal(r.headers['cache-control'], 'no-store', `${what}: kept by no cache`);
      assert.match(r.headers['content-type'] ?? '', /^application\/json/, what);
      // A message of the console's own: nothing of fastify's text or a stack.
      assert.equal(typeof r.body.error.message, 'string', what);
      assert.ok(!/FST_|\n\s+at /.test(JSON.stringify(r.body)), `${what}: ${JSON.stringify(r.body)}`);
    }
    // The refusals of a budget, each from an address of its own (any 127.x is the loopback): the
    // management API's wrong bearer tokens, the pages' login attempts (200 a minute in this fixture).
    const manage = `http://127.0.0.1:${port}/api/v1/manage/status`;
    for (let i = 0; i < MANAGE.authMaxFailures; i++) await requestFrom(manage, { from: '127.0.0.77', headers: { authorization: 'Bearer not-a-credential' } });
    const throttled = await requestFrom(manage, { from: '127.0.0.77', headers: { authorization: `Bearer ${ROLE_TOKENS.admin}` } });
    // A login attempt counts once past its CSRF check: with a visitor's cookie and token.
    const visitor = await requestFrom(`http://127.0.0.1:${port}/api/session`, { from: '127.0.0.78' });
    const attempt = {
      from: '127.0.0.78',
      method: 'POST',
      headers: { cookie: (visitor.headers['set-cookie'] ?? []).map((c) => c.split(';')[0]).join('; '), 'x-csrf-token': String(visitor.body.csrfToken) },
      body: { token: 'not-a-token-of-ours' },
    };
    let limited = await requestFrom(`http://127.0.0.1:${port}/api/login`, attempt);
    for (let i = 0; i < 200 && limited.status === 401; i++) limited = await requestFrom(`http://127.0.0.1:${port}/api/login`, attempt);
    for (const [what, r, code] of [
      ['too many wrong bearer tokens', throttled, 'MANAGE_THROTTLED'],
      ['too many login attempts', limited, 'CONSOLE_LOGIN_RATE_LIMITED'],
    ] as const) {
      assert.deepEqual([r.status, r.body?.error?.code], [429, code], `${what}: ${JSON.stringify(r.body)}`);
      assert.deepEqual(Object.fromEntries(protective.map((h) => [h, r.headers[h]])), expected, `${what}: its security headers`);
      assert.equal(r.headers['cache-control'], 'no-store', what);
    }
  });
});
