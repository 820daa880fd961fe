import assert from 'node:assert/strict';
import { appendFileSync, cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sha256Hex } from '../../internal-network/shared/credentials.ts';
import { MANAGE } from '../../shared/limits.ts';
import { parseExposition, sumOf } from '../../shared/metrics/exposition.ts';
import { issueDeviceCertificate } from '../../pki/device-bundle.ts';
import { issueDeviceToken } from '../../pki/device-tokens.ts';
import { ConsoleSession, ROLE_TOKENS, writeRoleTokens } from '../helpers/console-client.ts';
import { extraConsole, startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { tempDir } from '../helpers/pki.ts';
import { requestFrom } from '../helpers/http-from.ts';
import { ipv6Networks, ipv6NetworksUnavailable } from '../helpers/ipv6-network.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * The management API (docs/management-api.md) on the embedded pipeline (real WSS, MQTT, disk; the
 * console fed by the distributor's stored feed, its pipeline view by the services' /readyz and
 * /metrics): its own authentication path (bearer tokens only; the session cookie authenticates
 * nothing here, a bearer token nothing on the pages' API), roles, the pipeline's state, the
 * devices, the topic structure and validator, and a test event that a real field client answers
 * through the command API, signed both ways.
 */

type Answer = { status: number; body: any; headers: Headers };

describe('the management API', () => {
  const tmp = tempDir('manage');
  let fx: EmbeddedFixture;
  let base: string;
  let field: Awaited<ReturnType<typeof startTestFieldClient>>;

  const call = async (path: string, init: { token?: string; method?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<Answer> => {
    const headers: Record<string, string> = { ...(init.headers ?? {}) };
    if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(new URL(`/api/v1/manage${path}`, base), { method: init.method ?? 'GET', headers, ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}) });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
  };
  const viewer = (path: string, init: Omit<Parameters<typeof call>[1], 'token'> = {}) => call(path, { ...init, token: ROLE_TOKENS.viewer });
  const admin = (path: string, init: Omit<Parameters<typeof call>[1], 'token'> = {}) => call(path, { ...init, token: ROLE_TOKENS.admin });

  /** Another console on the fixture's broker, command API and registry, with settings of its own. */
  const anotherConsole = (clientId: string, env: Record<string, string>) => extraConsole(fx, clientId, env);

  before(async () => {
    fx = await startEmbeddedFixture(['meter-1', 'quiet-1', 'nokey-1'], { COMMAND_API_TOKENS_FILE: writeRoleTokens(tmp.dir), DISTRIBUTOR_REQUIRE_SIGNATURES: 'true' }, { console: true });
    assert.ok(fx.pipeline.console, 'the fixture runs the console');
    base = fx.pipeline.console.url;
    field = await startTestFieldClient(fx.pki.paths, 'meter-1', fx.pipeline.gatewayUrl, fx.logs.logger, { FIELD_HEALTH_INTERVAL_S: '1' });
  });
  after(async () => {
    await field?.close();
    await fx?.stop();
    tmp.cleanup();
  });

  it('takes bearer tokens only: none, a wrong one and a logged-in session cookie are refused with MANAGE_UNAUTHORIZED', async () => {
    const endpoints: Array<[string, string, unknown?]> = [
      ['GET', '/status'],
      ['GET', '/devices'],
      ['GET', '/devices/meter-1'],
      ['GET', '/topics'],
      ['POST', '/topics/validate', { topic: 'fieldstream/v1/devices/meter-1/status' }],
      ['POST', '/devices/meter-1/test-event', {}],
      ['GET', '/no-such-endpoint'],
    ];
    const session = new ConsoleSession(base);
    await session.login(ROLE_TOKENS.admin);
    assert.equal((await session.request('/api/devices/meter-1')).status, 200, 'the session works on the pages');
    for (const [method, path, body] of endpoints) {
      for (const init of [{}, { token: 'not-a-credential-of-ours-0123456789' }, { headers: { authorization: ROLE_TOKENS.admin } }]) {
        const r = await call(path, { method, body, ...init });
        assert.equal(r.status, 401, `${method} ${path} ${JSON.stringify(init)}`);
        assert.equal(r.body.error.code, 'MANAGE_UNAUTHORIZED');
      }
      // The admin's session cookie, with the session's CSRF token too: still nothing here.
      const withCookie = await call(path, { method, body, headers: { cookie: session.cookie, 'x-csrf-token': session.csrf } });
      assert.equal(withCookie.status, 401, `${method} ${path} with a session cookie`);
      assert.equal(withCookie.body.error.code, 'MANAGE_UNAUTHORIZED');
      assert.match(withCookie.body.error.message, /bearer/i);
    }
  });

  it("a bearer token authenticates nothing on the pages' API, and the API needs no CSRF token and sets no cookie", async () => {
    for (const path of ['/api/devices/meter-1', '/api/live']) {
      const r = await fetch(new URL(path, base), { headers: { authorization: `Bearer ${ROLE_TOKENS.admin}` } });
      assert.equal(r.status, 401, path);
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'CONSOLE_UNAUTHORIZED');
    }
    const posted = await fetch(new URL('/api/devices/meter-1/commands', base), {
      method: 'POST',
      headers: { authorization: `Bearer ${ROLE_TOKENS.admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: 'ping' }),
    });
    assert.ok(posted.status === 401 || posted.status === 403, `the pages' command endpoint refuses a bearer token (${posted.status})`);
    const r = await viewer('/topics/validate', { method: 'POST', body: { topic: 'fieldstream/v1/devices/meter-1/status' } });
    assert.equal(r.status, 200, 'a POST without a CSRF token');
    assert.equal(r.headers.getSetCookie().length, 0, 'no session cookie');
    assert.equal(r.headers.get('cache-control'), 'no-store');
  });

  it('gives the state of the brokers, the bridge, each distributor and the database', async () => {
    const status = await eventually(async () => {
      const r = await viewer('/status');
      assert.equal(r.status, 200);
      // The first looks may come before every service has its broker connection.
      return r.body.at !== null && r.body.services.length === 3 && r.body.services.every((x: { ready: boolean }) => x.ready) ? r.body : undefined;
    }, 15_000, 'every service ready');
    // The embedded pipeline has one broker and no exporter: the console's own connection says it is up,
    // the DMZ broker and the bridge are unknown, not guessed.
    assert.deepEqual(status.brokers.internal, { up: true, source: 'console' });
    assert.deepEqual(status.brokers.dmz, { up: null, source: 'none' });
    assert.deepEqual(status.bridge, { connected: null, source: 'none' });
    assert.deepEqual(status.distributors, [{ name: 'distributor', ready: true, detail: 'ready', broker: true, database: true, files: true }]);
    assert.equal(status.database.ok, true);
    assert.deepEqual(
      status.services.map((s: { name: string; service: string; ready: boolean }) => [s.name, s.service, s.ready]),
      [
        ['gateway', 'gateway', true],
        ['distributor', 'distributor', true],
        ['command-api', 'command-api', true],
      ],
    );
    assert.equal(status.figures.writeFailures, 0);
  });

  it('lists the devices with their state, certificate days, revoked flag and last seen; one device; pages and filters', async () => {
    const online = await eventually(async () => {
      const r = await viewer('/devices?state=online');
      return r.body.devices.find((d: { id: string; certDaysLeft: number | null }) => d.id === 'meter-1' && d.certDaysLeft !== null);
    }, 20_000, 'meter-1 online with its certificate days');
    assert.equal(online.revoked, false);
    assert.ok(Date.parse(online.lastSeen) > Date.now() - 60_000, 'last seen is an ISO time, recent');
    assert.ok(online.certDaysLeft > 0);

    const all = await viewer('/devices');
    assert.deepEqual(all.body.devices.map((d: { id: string }) => d.id), ['meter-1', 'nokey-1', 'quiet-1'], 'every registered device, sorted');
    assert.equal(all.body.devices[2].state, 'unknown', 'a registered device never heard of');
    const page = await viewer('/devices?limit=2');
    assert.deepEqual([page.body.devices.length, page.body.next], [2, 'nokey-1']);
    const rest = await viewer(`/devices?limit=2&after=${page.body.next}`);
    assert.deepEqual([rest.body.devices.map((d: { id: string }) => d.id), rest.body.next], [['quiet-1'], undefined]);

    const one = await viewer('/devices/meter-1');
    assert.equal(one.status, 200);
    assert.equal(one.body.id, 'meter-1');
    assert.equal(one.body.state, 'online');
    assert.ok(one.body.health?.fields, 'its last health');

    for (const [path, code, status] of [
      ['/devices/nobody-1', 'MANAGE_UNKNOWN_DEVICE', 404],
      ['/devices/bad%20id', 'MANAGE_INVALID_REQUEST', 400],
      ['/devices?state=sleeping', 'MANAGE_INVALID_REQUEST', 400],
      ['/devices?limit=0', 'MANAGE_INVALID_REQUEST', 400],
      ['/devices?limit=0x10', 'MANAGE_INVALID_REQUEST', 400],
      ['/devices?limit=1e1', 'MANAGE_INVALID_REQUEST', 400],
      ['/devices?limit=%202', 'MANAGE_INVALID_REQUEST', 400],
      ['/devices?colour=red', 'MANAGE_INVALID_REQUEST', 400],
      ['/no-such-endpoint', 'MANAGE_NOT_FOUND', 404],
      // A URL that cannot be decoded is refused before any route: with this API's code all the same.
      ['/devices/%', 'MANAGE_INVALID_REQUEST', 400],
      ['/devices/%E0%A4%A', 'MANAGE_INVALID_REQUEST', 400],
    ] as const) {
      const r = await viewer(path);
      assert.equal(r.status, status, path);
      assert.equal(r.body.error.code, code, path);
    }
  });

  it("answers everything under its prefix with its own codes: its root, and a method no route of fastify's knows", async () => {
    // The prefix itself (with or without a query) and a method such as PROPFIND reached no route of
    // this API: answered by the pages' 404 (CONSOLE_NOT_FOUND) without a look at the credential.
    for (const [method, path] of [
      ['GET', ''],
      ['GET', '?x=1'],
      ['POST', ''],
      ['PROPFIND', '/status'],
      ['PROPFIND', ''],
    ] as const) {
      const none = await call(path, { method });
      assert.deepEqual([none.status, none.body?.error?.code], [401, 'MANAGE_UNAUTHORIZED'], `${method} ${path || '(the prefix)'} without a token`);
      assert.equal(none.headers.get('cache-control'), 'no-store');
      const known = await viewer(path, { method });
      assert.deepEqual([known.status, known.body?.error?.code], [404, 'MANAGE_NOT_FOUND'], `${method} ${path || '(the prefix)'} with a viewer's token`);
    }
  });

  it('flags a revoked device as the registry says', async () => {
    appendFileSync(join(fx.pki.dir, 'internal', 'revoked-devices.txt'), 'quiet-1\n');
    const row = await eventually(async () => {
      const r = await viewer('/devices?revoked=true');
      return r.body.devices.find((d: { id: string }) => d.id === 'quiet-1');
    }, 20_000, 'quiet-1 flagged revoked');
    assert.equal(row.revoked, true);
    const notRevoked = await viewer('/devices?revoked=false');
    assert.deepEqual(notRevoked.body.devices.map((d: { id: string }) => d.id), ['meter-1', 'nokey-1']);
    const test = await admin('/devices/quiet-1/test-event', { method: 'POST', body: {} });
    assert.deepEqual([test.status, test.body.error.code], [409, 'MANAGE_DEVICE_REVOKED']);
  });

  it('says how each device authenticates: unknown without a tokens file; a token device with its token expiry, a certificate device with its days left', async () => {
    const before = await viewer('/devices/meter-1');
    assert.deepEqual([before.body.auth, before.body.credentialExpiresAt], [null, null], 'no tokens file yet: not guessed');

    const issued = await issueDeviceToken(fx.pki.dir, 'tok-1', { validityDays: 30 });
    const listed = await eventually(async () => {
      const r = await viewer('/devices');
      return r.body.devices.find((d: { id: string; auth: string | null }) => d.id === 'tok-1' && d.auth === 'token');
    }, 20_000, 'the token device listed with its auth');
    assert.deepEqual([listed.credentialExpiresAt, listed.credentialDaysLeft, listed.tokenState], [issued.expiresAt, 29, 'active']);
    const one = await viewer('/devices/tok-1');
    assert.deepEqual([one.status, one.body.auth, one.body.credentialExpiresAt, one.body.tokenState], [200, 'token', issued.expiresAt, 'active']);
    const meter = await viewer('/devices/meter-1');
    assert.equal(meter.body.auth, 'certificate');
    assert.equal(meter.body.credentialDaysLeft, meter.body.certDaysLeft);
    assert.ok(meter.body.credentialDaysLeft > 0);
    assert.equal('tokenState' in meter.body, false);
  });

  it('shows the gateway of a device that connected before the console knew it, once the console does', async () => {
    // The console's copy of the keys' folder behind the distributor's (a Kubernetes Secret reaches
    // each pod on its own); on one machine, the console's next look at its registry still to come.
    const keys = join(tmp.dir, 'console-device-keys');
    cpSync(join(fx.pki.dir, 'internal', 'device-keys'), keys, { recursive: true });
    const other = await anotherConsole('console-keys-behind', { CONSOLE_DEVICE_KEYS_DIR: keys });
    let late: Awaited<ReturnType<typeof startTestFieldClient>> | undefined;
    try {
      const before = other.fleet.unregistered;
      issueDeviceCertificate(fx.pki.dir, 'late-1');
      late = await startTestFieldClient(fx.pki.paths, 'late-1', fx.pipeline.gatewayUrl, fx.logs.logger);
      // Its gateway's presence (published once, when it connected) stored, and at the console.
      await eventually(() => (other.fleet.unregistered > before ? true : undefined), 20_000, "late-1's presence at the console");
      assert.equal(other.fleet.detail('late-1'), undefined, 'not known to that console yet');
      cpSync(fx.pki.paths.deviceKeyRegistry('late-1'), join(keys, 'late-1.key'));
      const url = new URL('/api/v1/manage/devices/late-1', other.url);
      const row = await eventually(async () => {
        const r = await fetch(url, { headers: { authorization: `Bearer ${ROLE_TOKENS.viewer}` } });
        return r.status === 200 ? ((await r.json()) as { state: string; gateway: string | null }) : undefined;
      }, 20_000, 'late-1 known to that console');
      const gateway = (await viewer('/devices/meter-1')).body.gateway;
      assert.ok(gateway, "meter-1's gateway");
      assert.deepEqual([row.state, row.gateway], ['online', gateway]);
    } finally {
      await late?.close();
      await other.close();
    }
  });

  it('gives the topic structure with who publishes, and validates topics with a coded reason', async () => {
    const t = await viewer('/topics');
    assert.equal(t.status, 200);
    const byKind = Object.fromEntries(t.body.topics.map((x: { kind: string }) => [x.kind, x]));
    assert.deepEqual(Object.keys(byKind).sort(), ['downlink', 'gatewayPresence', 'gatewaySecurity', 'gatewayUplink', 'receipts', 'status', 'storedFeed', 'uplink']);
    assert.equal(byKind.gatewayUplink.pattern, 'fieldstream/v1/gateways/{gatewayId}/up/timeseries');
    assert.deepEqual(byKind.gatewayUplink.publishers, ['gateway']);
    assert.equal(byKind.uplink.pattern, 'fieldstream/v1/devices/{deviceId}/up/{dataType}');
    assert.deepEqual(byKind.uplink.publishers, ['gateway']);
    assert.deepEqual(byKind.downlink.publishers.sort(), ['bridge', 'command-api']);
    assert.deepEqual(byKind.storedFeed.publishers, ['distributor']);
    assert.equal(byKind.status.retained, true);

    const check = async (topic: string) => {
      const r = await viewer('/topics/validate', { method: 'POST', body: { topic } });
      assert.equal(r.status, 200, topic);
      return r.body;
    };
    assert.deepEqual(await check('fieldstream/v1/devices/meter-1/up/timeseries'), {
      valid: true,
      topic: 'fieldstream/v1/devices/meter-1/up/timeseries',
      kind: 'uplink',
      deviceId: 'meter-1',
      dataType: 'timeseries',
      pattern: 'fieldstream/v1/devices/{deviceId}/up/{dataType}',
      direction: 'device→internal',
    });
    assert.equal((await check('fieldstream/v1/gateways/gw-1/receipts')).gatewayId, 'gw-1');
    assert.equal((await check('fieldstream/v1/gateways/gw-1/up/timeseries')).kind, 'gatewayUplink');
    assert.equal((await check('fieldstream/v1/gateways/gw-1/up/event')).valid, false);
    assert.equal((await check('fieldstream/v1/internal/stored')).kind, 'storedFeed');
    for (const [topic, reason] of [
      ['', 'empty'],
      ['fieldstream/v1/devices/+/up/timeseries', 'wildcard'],
      ['plant/line-1/temperature', 'not-fieldstream'],
      ['fieldstream/v1/devices/a b/status', 'invalid-device-id'],
      ['fieldstream/v1/devices/meter-1/up/video', 'unknown-data-type'],
      ['fieldstream/v1/devices/meter-1/down/reboot', 'unknown-leaf'],
      ['fieldstream/v1/gateways/gw-1/receipts/extra', 'unknown-leaf'],
      ['fieldstream/v1/gateways/gw 1/presence', 'invalid-gateway-id'],
    ]) {
      const v = await check(topic as string);
      assert.deepEqual([v.valid, v.code, v.reason], [false, 'CONTRACT_INVALID_TOPIC', reason], topic);
    }
    for (const body of [{}, { topic: 5 }, { topic: 'x'.repeat(1025) }, { topic: 'a', extra: 1 }]) {
      const r = await viewer('/topics/validate', { method: 'POST', body });
      assert.equal(r.status, 400, JSON.stringify(body).slice(0, 60));
      assert.equal(r.body.error.code, 'MANAGE_INVALID_REQUEST');
    }
    const notJson = await fetch(new URL('/api/v1/manage/topics/validate', base), { method: 'POST', headers: { authorization: `Bearer ${ROLE_TOKENS.viewer}`, 'content-type': 'application/json' }, body: '{"topic": ' });
    assert.equal(notJson.status, 400);
    assert.equal(((await notJson.json()) as { error: { code: string } }).error.code, 'MANAGE_INVALID_REQUEST');
  });

  it('sends a test event as admin only, through the command API, signed; the device answers it', async () => {
    for (const role of ['viewer', 'operator'] as const) {
      const r = await call('/devices/meter-1/test-event', { token: ROLE_TOKENS[role], method: 'POST', body: {} });
      assert.equal(r.status, 403, role);
      assert.equal(r.body.error.code, 'MANAGE_FORBIDDEN');
    }
    // Each logged for the operators' audit, naming the token's user and role.
    const audits = fx.logs.lines.filter((l) => l.code === 'MANAGE_FORBIDDEN').map((l) => String(l.err));
    assert.ok(['(viewer)', '(operator)'].every((r) => audits.some((a) => a.includes(r))), JSON.stringify(audits));
    const sent = await admin('/devices/meter-1/test-event', { method: 'POST', body: { note: 'hello from the management API' } });
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    assert.equal(sent.body.command, 'fieldstream.test');
    assert.equal(sent.body.deviceId, 'meter-1');
    const done = await eventually(async () => {
      const r = await viewer(`/test-events/${sent.body.commandId}`);
      assert.equal(r.status, 200);
      return r.body.state === 'completed' ? r.body : undefined;
    }, 20_000, 'the test event answered');
    assert.equal(done.response.status, 'completed');
    assert.equal(done.response.result.test, 'received');
    assert.equal(done.response.result.note, 'hello from the management API');
    assert.equal(done.response.result.issuedAt, Date.parse(sent.body.issuedAt));
    // The command API has it under the admin's name, signed like every command (it refuses devices without a key).
    const journaled = await fetch(new URL(`/v1/commands/${sent.body.commandId}`, `http://127.0.0.1:${fx.pipeline.commandApi.port}`), { headers: { authorization: `Bearer ${ROLE_TOKENS.viewer}` } });
    const record = (await journaled.json()) as { params: { requestedBy: string } };
    assert.equal(record.params.requestedBy, 'admin-user');

    const unknown = await admin('/devices/nobody-1/test-event', { method: 'POST', body: {} });
    assert.deepEqual([unknown.status, unknown.body.error.code], [404, 'MANAGE_UNKNOWN_DEVICE']);
    const invalid = await admin('/devices/meter-1/test-event', { method: 'POST', body: { note: 'x'.repeat(201) } });
    assert.deepEqual([invalid.status, invalid.body.error.code], [400, 'MANAGE_INVALID_REQUEST']);
    const missing = await admin('/test-events/no-such-command-id', {});
    assert.deepEqual([missing.status, missing.body.error.code], [404, 'MANAGE_NOT_FOUND']);
  });

  it("refuses a test event the command API cannot sign, with the command API's own code", async () => {
    // nokey-1 stays known to the console (it saw the key at start), but the command API finds none.
    rmSync(join(fx.pki.dir, 'internal', 'device-keys', 'nokey-1.key'), { force: true });
    const r = await eventually(async () => {
      const a = await admin('/devices/nokey-1/test-event', { method: 'POST', body: {} });
      return a.status === 202 ? undefined : a;
    }, 20_000, 'the key gone from the registry');
    // The caller's problem, not a gateway failure: the command API's own status and code.
    assert.deepEqual([r.status, r.body.error.code], [409, 'API_DEVICE_KEY_MISSING'], JSON.stringify(r.body));
    assert.match(r.body.error.message, /nokey-1/);
  });

  it('answers with its own codes only: a bearer token the command API refused is MANAGE_UNAUTHORIZED, and refused from then on', async () => {
    // A console that knows a token the command API does not (revoked there, the console not restarted).
    const stale = 'stale-admin-token-0123456789abcdef';
    const tokens = join(tmp.dir, 'console-tokens.json');
    writeFileSync(tokens, JSON.stringify([...JSON.parse(readFileSync(writeRoleTokens(tmp.dir), 'utf8')), { name: 'stale-user', role: 'admin', sha256: sha256Hex(stale) }]));
    const c = await anotherConsole('console-manage-stale', { COMMAND_API_TOKENS_FILE: tokens });
    try {
      const send = async () => {
        const res = await fetch(new URL('/api/v1/manage/devices/meter-1/test-event', c.url), { method: 'POST', headers: { authorization: `Bearer ${stale}`, 'content-type': 'application/json' }, body: '{}' });
        return { status: res.status, body: (await res.json()) as any };
      };
      const refused = await send(); // reaches the command API, which refuses the token
      assert.deepEqual([refused.status, refused.body.error?.code], [401, 'MANAGE_UNAUTHORIZED'], JSON.stringify(refused.body));
      assert.ok(!/log in/i.test(refused.body.error.message), `a bearer caller is not told to log in: ${refused.body.error.message}`);
      const again = await send(); // refused by the console itself now
      assert.deepEqual([again.status, again.body.error?.code], [401, 'MANAGE_UNAUTHORIZED']);
    } finally {
      await c.close();
    }
  });

  it('serves test events only: another command id is not found here', async () => {
    const ping = await fetch(new URL('/v1/commands', `http://127.0.0.1:${fx.pipeline.commandApi.port}`), {
      method: 'POST',
      headers: { authorization: `Bearer ${ROLE_TOKENS.operator}`, 'content-type': 'application/json' },
      body: JSON.stringify({ deviceId: 'meter-1', command: 'ping' }),
    });
    const id = ((await ping.json()) as { commands: Array<{ commandId: string }> }).commands[0]?.commandId;
    assert.ok(id);
    const r = await viewer(`/test-events/${id}`);
    assert.deepEqual([r.status, r.body.error.code], [404, 'MANAGE_NOT_FOUND']);
  });

  it('throttles wrong bearer tokens per source address: 401 until the budget is spent, then 429 MANAGE_THROTTLED with Retry-After, counted and logged; another address still gets through', async () => {
    // Another loopback address as the guesser's: the console trusts no forwarded header, so the
    // socket's address is what it throttles, and Linux routes all of 127/8 to the loopback.
    const GUESSER = '127.0.0.2';
    const from = (localAddress: string, path: string, token: string) =>
      requestFrom(new URL(`/api/v1/manage${path}`, base), { from: localAddress, headers: { authorization: `Bearer ${token}` } });
    const m = fx.pipeline.console?.metricsServer;
    assert.ok(m, 'the console serves /metrics');
    const counted = async () => {
      const samples = parseExposition(await (await fetch(`${m.url}/metrics`)).text());
      const of = (reason: string) => sumOf(samples, 'fieldstream_console_manage_auth_failures_total', { reason }) ?? -1;
      return { missing: of('missing'), invalid: of('invalid'), throttled: of('throttled') };
    };
    const before = await counted();

    assert.equal((await from(GUESSER, '/topics', ROLE_TOKENS.viewer)).status, 200, 'a valid token from the address before');
    for (let i = 0; i < MANAGE.authMaxFailures; i++) {
      const r = await from(GUESSER, '/status', `wrong-token-${i}-0123456789abcdef`);
      assert.deepEqual([r.status, r.body.error.code], [401, 'MANAGE_UNAUTHORIZED'], `guess ${i + 1}`);
      // A valid token between the guesses gets through, and buys the guesser nothing.
      if (i === MANAGE.authMaxFailures - 2) assert.equal((await from(GUESSER, '/topics', ROLE_TOKENS.viewer)).status, 200, 'a valid token while below the budget');
    }
    for (const token of ['one-more-guess-0123456789abcdef', ROLE_TOKENS.admin]) {
      const r = await from(GUESSER, '/status', token);
      assert.deepEqual([r.status, r.body.error.code], [429, 'MANAGE_THROTTLED'], 'refused unchecked, a valid token too');
      const s = Number(r.headers['retry-after']);
      assert.ok(Number.isInteger(s) && s >= 1 && s <= MANAGE.authFailureWindowMs / 1000, `Retry-After ${r.headers['retry-after']}`);
      assert.equal(r.body.error.details.retryAfterS, s);
    }
    // The loopback's usual address has its own record: a valid token gets through.
    assert.equal((await viewer('/topics')).status, 200);

    assert.deepEqual(await counted(), { missing: before.missing, invalid: before.invalid + MANAGE.authMaxFailures, throttled: before.throttled + 2 });
    assert.ok(
      fx.logs.lines.some((l) => l.code === 'MANAGE_THROTTLED' && l.ip === GUESSER),
      'the address blocked is logged',
    );
  });

  it('throttles an IPv6 source as its /64: guesses from further addresses of that network are refused unchecked; another network still gets through', { skip: ipv6NetworksUnavailable() }, async () => {
    const net6 = ipv6Networks();
    try {
      const c = await anotherConsole('console-manage-ipv6', { CONSOLE_HOST: net6.server });
      const from = (address: string, token: string) => requestFrom(`http://[${net6.server}]:${c.port}/api/v1/manage/status`, { from: address, headers: { authorization: `Bearer ${token}` } });
      const [a, b, third] = net6.sameNetwork;
      try {
        for (let i = 0; i < MANAGE.authMaxFailures; i++) {
          const r = await from(i % 2 === 0 ? a : b, `wrong-token-${i}-0123456789abcdef`);
          assert.deepEqual([r.status, r.body.error.code], [401, 'MANAGE_UNAUTHORIZED'], `guess ${i + 1}`);
        }
        const r = await from(third, ROLE_TOKENS.viewer);
        assert.deepEqual([r.status, r.body.error?.code], [429, 'MANAGE_THROTTLED'], 'a third address of the /64 finds the budget spent, a valid token too');
        assert.equal((await from(net6.otherNetwork, ROLE_TOKENS.viewer)).status, 200, 'another /64 has its own budget');
      } finally {
        await c.close();
      }
    } finally {
      net6.close();
    }
  });

  it("behind CONSOLE_TRUSTED_PROXY too, throttles by the connection's own address: an X-Forwarded-For of the caller's choosing buys no more guesses", async () => {
    // The proxy setting makes req.ip the forwarded address for the pages' logins; whoever connects
    // from the proxy's address writes that header, so a new value each time was a new budget.
    const c = await anotherConsole('console-manage-proxy', { CONSOLE_TRUSTED_PROXY: '127.0.0.1' });
    try {
      const from = (address: string, token: string, forwarded: string) =>
        requestFrom(new URL('/api/v1/manage/status', c.url), { from: address, headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': forwarded } });
      for (let i = 0; i < MANAGE.authMaxFailures; i++) {
        const r = await from('127.0.0.1', `wrong-token-${i}-0123456789abcdef`, `198.51.100.${i + 1}`);
        assert.deepEqual([r.status, r.body.error.code], [401, 'MANAGE_UNAUTHORIZED'], `guess ${i + 1}`);
      }
      const r = await from('127.0.0.1', ROLE_TOKENS.viewer, '198.51.100.200');
      assert.deepEqual([r.status, r.body.error?.code], [429, 'MANAGE_THROTTLED'], 'the connection address spent its budget, whatever it forwards');
      assert.match(r.body.error?.message, /from 127\.0\.0\.1;/);
      assert.ok(fx.logs.lines.some((l) => l.code === 'MANAGE_THROTTLED' && l.ip === '127.0.0.1'), 'logged with the connection address');
      assert.ok(!fx.logs.lines.some((l) => l.code === 'MANAGE_UNAUTHORIZED' && typeof l.ip === 'string' && l.ip.startsWith('198.51.100.')), 'no forwarded address logged as the source');
      // Another connection address has its own budget.
      assert.equal((await from('127.0.0.3', ROLE_TOKENS.viewer, '198.51.100.1')).status, 200);
    } finally {
      await c.close();
    }
  });
});
