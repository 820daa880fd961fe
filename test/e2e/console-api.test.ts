import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { DeviceRow } from '../../internal-network/console/fleet/types.ts';
import { ConsoleSession, ROLE_TOKENS, writeRoleTokens, type SseEvent } from '../helpers/console-client.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';
import { parseExposition, sumOf } from '../../shared/metrics/exposition.ts';

/**
 * The operator console's API on the embedded pipeline (real WSS, MQTT, disk; the console fed by the
 * distributor's stored feed): who may log in and do what, CSRF, forged cookies, the live stream
 * (a device appearing, its readings, health, a security event, a silent device going stale then
 * offline), history, and a command sent by an operator that completes. docs/console.md.
 */

const rowOf = (id: string) => (e: SseEvent): DeviceRow | undefined => {
  const rows = e.event === 'snapshot' ? (e.data as { devices: DeviceRow[] }).devices : e.event === 'devices' ? (e.data as { rows: DeviceRow[] }).rows : [];
  return rows.find((r) => r.id === id);
};
const rowWhere = (id: string, ok: (r: DeviceRow) => boolean) => (e: SseEvent) => {
  const r = rowOf(id)(e);
  return r && ok(r) ? r : undefined;
};

describe('the operator console API', () => {
  const tmp = tempDir('console');
  let fx: EmbeddedFixture;
  let base: string;
  let field: Awaited<ReturnType<typeof startTestFieldClient>>;

  before(async () => {
    fx = await startEmbeddedFixture(
      ['meter-1', 'rogue-1', 'silent-1', 'flood-1'],
      { COMMAND_API_TOKENS_FILE: writeRoleTokens(tmp.dir), DISTRIBUTOR_REQUIRE_SIGNATURES: 'true', CONSOLE_STALE_AFTER_S: '2', CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE: '15', GATEWAY_RATE_MESSAGES_PER_S: '100', GATEWAY_RATE_BURST_S: '2' },
      { console: true },
    );
    assert.ok(fx.pipeline.console, 'the fixture runs the console');
    base = fx.pipeline.console.url;
    field = await startTestFieldClient(fx.pki.paths, 'meter-1', fx.pipeline.gatewayUrl, fx.logs.logger, { FIELD_HEALTH_INTERVAL_S: '1' });
    field.commands.register('ping', () => ({ status: 'completed', result: 'pong' }));
  });
  after(async () => {
    await field?.close();
    await fx?.stop();
    tmp.cleanup();
  });

  it('refuses everything but the session and login to a visitor who is not logged in', async () => {
    const s = new ConsoleSession(base);
    const session = await s.request('/api/session');
    assert.equal(session.status, 200);
    assert.equal(session.body.authenticated, false);
    assert.ok(s.csrf.length > 10);
    for (const path of ['/api/live', '/api/devices/meter-1', '/api/devices/meter-1/history?field=v&from=0&to=1']) {
      const r = await s.request(path);
      assert.equal(r.status, 401, path);
      assert.equal(r.body.error.code, 'CONSOLE_UNAUTHORIZED', path);
    }
  });

  it('refuses a login without the CSRF token, and a wrong token', async () => {
    const s = new ConsoleSession(base);
    await s.request('/api/session');
    const noCsrf = await s.request('/api/login', { method: 'POST', body: { token: ROLE_TOKENS.operator }, csrf: false });
    assert.equal(noCsrf.status, 403);
    assert.equal(noCsrf.body.error.code, 'CONSOLE_CSRF_INVALID');
    const wrong = await s.request('/api/login', { method: 'POST', body: { token: 'not-a-token-of-ours-at-all-0000' } });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.error.code, 'CONSOLE_LOGIN_FAILED');
    const junk = await s.request('/api/login', { method: 'POST', body: { token: 5, extra: true } });
    assert.equal(junk.status, 400);
    assert.equal(junk.body.error.code, 'CONSOLE_INVALID_REQUEST');
  });

  it('logs each role in with its own credential; the cookie is HttpOnly and SameSite=Strict, and changes at login', async () => {
    for (const role of ['viewer', 'operator', 'admin'] as const) {
      const s = new ConsoleSession(base);
      await s.request('/api/session');
      const before = s.cookie;
      const res = await fetch(new URL('/api/login', base), { method: 'POST', headers: { cookie: s.cookies(), 'x-csrf-token': s.csrf, 'content-type': 'application/json' }, body: JSON.stringify({ token: ROLE_TOKENS[role] }) });
      assert.equal(res.status, 200, role);
      const set = res.headers.getSetCookie().find((c) => c.startsWith('fieldstream_console='));
      assert.ok(set, 'a session cookie');
      assert.match(set, /HttpOnly/i);
      assert.match(set, /SameSite=Strict/i);
      assert.notEqual(set.split(';')[0], before, 'a new session id at login (no fixation)');
      const body = (await res.json()) as { user: string; role: string };
      assert.deepEqual(body.role, role);
      assert.equal(body.user, `${role}-user`);
    }
  });

  it('a forged or tampered cookie is worth nothing', async () => {
    const s = new ConsoleSession(base);
    assert.equal((await s.login(ROLE_TOKENS.admin)).status, 200);
    assert.equal((await s.request('/api/devices/meter-1')).status !== 401, true);
    const [name, value] = s.cookie.split('=') as [string, string];
    const last = value.slice(-1);
    for (const cookie of [`${name}=${value.slice(0, -1)}${last === 'A' ? 'B' : 'A'}`, `${name}=forged-session-id.c2lnbmF0dXJl`, `${name}=`]) {
      const r = await fetch(new URL('/api/devices/meter-1', base), { headers: { cookie } });
      assert.equal(r.status, 401, cookie);
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'CONSOLE_UNAUTHORIZED');
    }
  });

  it('streams the fleet live: the device appears online with its readings and health, history is there', async () => {
    const s = new ConsoleSession(base);
    await s.login(ROLE_TOKENS.viewer);
    const live = await s.live();
    const t0 = Date.now() - 60_000;
    try {
      await field.client.submitMany(Array.from({ length: 30 }, (_, i) => ({ dataType: 'timeseries' as const, payload: { level: i, label: '<img src=x onerror=alert(1)>', timestamp: t0 + i * 1000 } })));
      const row = await live.until(rowWhere('meter-1', (r) => r.state === 'online' && r.lastReading?.fields.level === 29));
      assert.equal(row.lastReading?.fields.label, '<img src=x onerror=alert(1)>', 'a value is data, shown as text by the pages');
      await live.until(rowWhere('meter-1', (r) => r.backlog !== null && r.certDaysLeft !== null));
    } finally {
      live.close();
    }
    const detail = await s.request('/api/devices/meter-1');
    assert.equal(detail.status, 200);
    assert.ok(detail.body.health, 'its last health message');
    assert.equal(typeof detail.body.health.fields.uptime_s, 'number');
    assert.deepEqual(detail.body.numericFields, ['level']);
    // A window of a minute: buckets of 30 ms, one reading each (a longer window averages them).
    const h = await s.request(`/api/devices/meter-1/history?field=level&from=${t0 - 1000}&to=${t0 + 59_000}`);
    assert.equal(h.status, 200);
    assert.deepEqual(
      h.body.points.map((p: [number, number]) => p[1]),
      Array.from({ length: 30 }, (_, i) => i),
    );
    const bad = await s.request(`/api/devices/meter-1/history?field=${encodeURIComponent('x" OR 1=1')}&from=0&to=1`);
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.code, 'CONSOLE_INVALID_REQUEST');
    for (const from of ['', '%20', '0x10', '1e3', '-1']) {
      const odd = await s.request(`/api/devices/meter-1/history?field=level&from=${from}&to=5000`);
      assert.equal(odd.body.error?.code, 'CONSOLE_INVALID_REQUEST', `from=${from}: not read as a number`);
    }
    assert.equal((await s.request('/api/devices/no-such-device')).body.error.code, 'CONSOLE_UNKNOWN_DEVICE');
  });

  it('shows a security event as it happens: an unsigned message refused by the distributor', async () => {
    const s = new ConsoleSession(base);
    await s.login(ROLE_TOKENS.viewer);
    const live = await s.live();
    try {
      const raw = await RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, 'rogue-1'));
      raw.send(JSON.stringify({ deviceId: 'rogue-1', dataType: 'timeseries', messageId: 'unsigned-1', payload: { v: 1 } }));
      const event = await live.until((e) => (e.event === 'security' ? (e.data as { events: Array<{ device: string; reason: string }> }).events.find((x) => x.device === 'rogue-1') : undefined));
      assert.equal(event.reason, 'SECURITY_UNSIGNED');
      raw.close();
    } finally {
      live.close();
    }
    const detail = await s.request('/api/devices/rogue-1');
    assert.equal(detail.body.security[0].reason, 'SECURITY_UNSIGNED');
  });

  it("shows what the gateway refused for security reasons: a device over its rate limit, counted, as the gateway's report", async () => {
    const s = new ConsoleSession(base);
    await s.login(ROLE_TOKENS.viewer);
    const live = await s.live();
    try {
      const raw = await RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, 'flood-1'));
      // 2,000 messages at once: past the burst the gateway allows (its largest batch, 1,000, here).
      for (let f = 0; f < 20; f++) raw.send(JSON.stringify({ deviceId: 'flood-1', batch: Array.from({ length: 100 }, (_, i) => ({ dataType: 'timeseries', messageId: `f${f}-${i}`, payload: { v: i } })) }));
      // A security update too large for one event comes as several: its counts in one without `events`.
      const event = await live.until(
        (e) => (e.event === 'security' ? (e.data as { events?: Array<{ device: string; reason: string; source?: string; count?: number }> }).events?.find((x) => x.device === 'flood-1' && x.reason === 'GATEWAY_RATE_LIMITED') : undefined),
        20_000,
      );
      assert.equal(event.source, 'gateway', "the gateway's word, marked as such");
      raw.close();
    } finally {
      live.close();
    }
    const stored = fx.points({ measurement: 'security_events', device: 'flood-1' });
    assert.ok(stored.some((p) => p.tags.reason === 'GATEWAY_RATE_LIMITED' && p.tags.source === 'gateway' && typeof p.fields.count === 'number'));
  });

  it('a connected device that stays silent becomes stale, then offline when it leaves; the states are stored', async () => {
    const s = new ConsoleSession(base);
    await s.login(ROLE_TOKENS.viewer);
    const live = await s.live();
    try {
      const raw = await RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, 'silent-1'));
      await live.until(rowWhere('silent-1', (r) => r.state === 'online'));
      await live.until(rowWhere('silent-1', (r) => r.state === 'stale'));
      raw.close();
      await live.until(rowWhere('silent-1', (r) => r.state === 'offline'));
    } finally {
      live.close();
    }
    await eventually(() => {
      const states = fx.points({ measurement: 'device_state', device: 'silent-1' }).map((p) => p.fields.state);
      return ['online', 'stale', 'offline'].every((x) => states.includes(x)) ? states : undefined;
    }, 10_000, 'the state changes of silent-1 stored');
  });

  it('a viewer may not send a command; an operator may, and sees it complete', async () => {
    const viewer = new ConsoleSession(base);
    await viewer.login(ROLE_TOKENS.viewer);
    const refused = await viewer.request('/api/devices/meter-1/commands', { method: 'POST', body: { command: 'ping' } });
    assert.equal(refused.status, 403);
    assert.equal(refused.body.error.code, 'CONSOLE_FORBIDDEN');
    // Logged for the operators' audit, naming the user and the role.
    const audit = fx.logs.lines.find((l) => l.code === 'CONSOLE_FORBIDDEN');
    assert.ok(audit && /\(viewer\)/.test(String(audit.err)) && audit.path === '/api/devices/meter-1/commands', JSON.stringify(audit));

    const op = new ConsoleSession(base);
    await op.login(ROLE_TOKENS.operator);
    const noCsrf = await op.request('/api/devices/meter-1/commands', { method: 'POST', body: { command: 'ping' }, csrf: false });
    assert.equal(noCsrf.body.error.code, 'CONSOLE_CSRF_INVALID');
    const sent = await op.request('/api/devices/meter-1/commands', { method: 'POST', body: { command: 'ping' } });
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    const id = sent.body.commandId as string;
    const live = await op.live('?device=meter-1');
    try {
      const done = await live.until((e) => (e.event === 'device' ? (e.data as { commands: Array<{ commandId: string; state: string }> }).commands.find((c) => c.commandId === id && c.state === 'completed') : undefined), 30_000);
      assert.equal(done.state, 'completed');
    } finally {
      live.close();
    }
    // How many commands the command API keeps for the device, beside those listed: the page says how
    // many more there are than it shows (`totals`, as of events), which it could not before.
    const detail = await op.request('/api/devices/meter-1');
    assert.equal(detail.body.totals.commands, detail.body.commands.length, JSON.stringify(detail.body.totals));
    assert.ok(detail.body.totals.commands >= 1);
    const invalid = await op.request('/api/devices/meter-1/commands', { method: 'POST', body: { command: 'bad name with spaces' } });
    assert.equal(invalid.status, 400);
    // Refused by the command API for the caller's reason: its own status and code, not a gateway failure (502).
    const noKey = await op.request('/api/devices/no-key-1/commands', { method: 'POST', body: { command: 'ping' } });
    assert.deepEqual([noKey.status, noKey.body.error.code], [409, 'API_DEVICE_KEY_MISSING'], JSON.stringify(noKey.body));
  });

  it("shows the pipeline from the services' own health and counters: ready, no write failure, readings per second", async () => {
    const s = new ConsoleSession(base);
    await s.login(ROLE_TOKENS.viewer);
    const live = await s.live();
    try {
      const view = await live.until((e) => (e.event === 'pipeline' || e.event === 'snapshot' ? ((e.event === 'snapshot' ? (e.data as { pipeline: any }).pipeline : e.data) as any) : undefined));
      assert.deepEqual(
        view.services.map((x: { name: string; ready: boolean }) => [x.name, x.ready]),
        [
          ['gateway', true],
          ['distributor', true],
          ['command-api', true],
        ],
      );
      assert.equal(view.writeFailures, 0, 'a figure the distributor gives is 0, not unknown');
      assert.equal(view.deadLetters, 0);
      assert.equal(view.feedDropped, 0);
      assert.equal(view.feedRefused, 0, "the console's own count of refused feed messages");
    } finally {
      live.close();
    }
  });

  it('serves its own metrics and health: devices by state, the feed taken, no device id as a label', async () => {
    const m = fx.pipeline.console?.metricsServer;
    assert.ok(m, 'the console serves /metrics');
    assert.equal((await fetch(`${m.url}/readyz`)).status, 200);
    const text = await (await fetch(`${m.url}/metrics`)).text();
    const samples = parseExposition(text);
    assert.ok((sumOf(samples, 'fieldstream_console_devices', { state: 'online' }) ?? 0) >= 1, 'meter-1 online');
    assert.ok((sumOf(samples, 'fieldstream_console_feed_messages_total') ?? 0) > 0);
    assert.equal(sumOf(samples, 'fieldstream_console_feed_refused_total'), 0);
    assert.equal(sumOf(samples, 'fieldstream_broker_connected', { service: 'console' }), 1);
    for (const s of samples) assert.ok(!('device' in s.labels), s.name);
  });

  it('logging out ends the session', async () => {
    const s = new ConsoleSession(base);
    await s.login(ROLE_TOKENS.operator);
    const cookie = s.cookie;
    assert.equal((await s.request('/api/logout', { method: 'POST' })).status, 200);
    const r = await fetch(new URL('/api/devices/meter-1', base), { headers: { cookie } });
    assert.equal(r.status, 401);
  });

  it('limits login attempts per address (CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE)', async () => {
    const s = new ConsoleSession(base);
    await s.request('/api/session');
    let limited: { status: number; body: any } | undefined;
    for (let i = 0; i < 20 && !limited; i++) {
      const r = await s.request('/api/login', { method: 'POST', body: { token: `wrong-${i}-0123456789abcdef0123` } });
      if (r.status === 429) limited = r;
      else assert.equal(r.body.error.code, 'CONSOLE_LOGIN_FAILED');
    }
    assert.ok(limited, 'refused once past the limit');
    assert.equal(limited.body.error.code, 'CONSOLE_LOGIN_RATE_LIMITED');
    const right = await s.request('/api/login', { method: 'POST', body: { token: ROLE_TOKENS.admin } });
    assert.equal(right.status, 429, 'the right token too, until the minute is over');
  });
});
