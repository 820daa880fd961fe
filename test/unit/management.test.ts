import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import { loadConsoleConfig } from '../../internal-network/console/config.ts';
import { deviceCredential, DeviceTokensView, manageStatus } from '../../internal-network/console/manage/status.ts';
import { topicStructure, validateTopic } from '../../internal-network/console/manage/topics.ts';
import type { PipelineView } from '../../internal-network/console/pipeline/pipeline-view.ts';
import { mayPublish } from '../../shared/acl.ts';
import { DATA_TYPES } from '../../shared/contract/payloads.ts';
import { answerTestCommand } from '../../shared/contract/test-command.ts';
import { readFileSync, writeFileSync } from 'node:fs';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import pino from 'pino';
import { issueDeviceToken, revokeDeviceToken, tokenPaths } from '../../pki/device-tokens.ts';
import { CONSOLE, DAY_MS, MANAGE } from '../../shared/limits.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { oversizedChunkedThenNext, pipelinedUnread, rawRequest, readSlowly } from '../helpers/http-from.ts';
import { startWebServer } from '../../internal-network/console/web/server.ts';
import { BoundedSessionStore } from '../../internal-network/console/web/session-store.ts';
import { MANAGE_PREFIX, manageRoutes } from '../../internal-network/console/manage/routes.ts';
import { Fleet } from '../../internal-network/console/fleet/fleet.ts';
import { CommandClient } from '../../internal-network/console/command-client.ts';
import { createServer } from 'node:http';
import type { CommandView } from '../../internal-network/command-api/schemas.ts';
import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import { commandTopic, gatewayPresenceTopic, gatewayUplinkTopic, gatewaySecurityTopic, parseTopic, receiptTopic, statusTopic, uplinkTopic } from '../../shared/contract/topics.ts';

/** The management API's parts that need no network: topics, the pipeline's state, the test event's answer, the device list's pages. */

/** The console's web server on a free port, without TLS or a proxy, serving `routes` (and its pages);
 * `secure`: as if reached over HTTPS (CONSOLE_COOKIE_SECURE). */
const testWebServer = (routes: Parameters<typeof startWebServer>[0]['routes'], sessions = new BoundedSessionStore(60_000), secure = false) =>
  startWebServer({ host: '127.0.0.1', port: 0, setting: 'CONSOLE_PORT', secure, sessionTtlMs: 60_000, sessions, trustedProxies: undefined, logger: pino({ level: 'silent' }), routes });

const view = (over: Partial<PipelineView> = {}): PipelineView => ({
  at: Date.UTC(2026, 0, 1),
  services: [],
  brokers: [],
  bridgeConnected: null,
  readingsPerSecond: null,
  writeFailures: null,
  deadLetters: null,
  feedDropped: null,
  feedRefused: null,
  feedConnected: null,
  feedDownSince: null,
  ...over,
});

describe('management API: topics', () => {
  it("agrees with parseTopic on every topic the builders make, and names each kind's pattern", () => {
    const made = [
      ...DATA_TYPES.map((t) => [uplinkTopic('d-1', t), 'uplink'] as const),
      [commandTopic('d-1'), 'downlink'],
      [statusTopic('d-1'), 'status'],
      [receiptTopic('g-1'), 'receipts'],
      [gatewayPresenceTopic('g-1'), 'gatewayPresence'],
      [gatewaySecurityTopic('g-1'), 'gatewaySecurity'],
      [gatewayUplinkTopic('g-1'), 'gatewayUplink'],
    ] as const;
    for (const [topic, kind] of made) {
      const v = validateTopic(topic);
      assert.equal(v.valid, true, topic);
      assert.equal(v.valid && v.kind, kind);
      assert.deepEqual({ ...parseTopic(topic) }, Object.fromEntries(Object.entries(v).filter(([k]) => !['valid', 'topic', 'pattern', 'direction'].includes(k))));
    }
  });

  it('says no exactly when parseTopic does (the stored feed aside), always with a reason', () => {
    const samples = ['', '#', 'a/b', 'fieldstream/v1/devices', 'fieldstream/v1/devices/', 'fieldstream/v1/devices/x/up', 'fieldstream/v1/devices/x/up/health/more', 'fieldstream/v1/devices/x/status/', 'fieldstream/v1/gateways/', 'fieldstream/v1/gateways/g/', 'fieldstream/v1/gateways/g/presence', 'fieldstream/v1/devices/x/down/command', '/fieldstream/v1/devices/x/status'];
    for (const t of samples) {
      let parsed = true;
      try {
        parseTopic(t);
      } catch {
        parsed = false;
      }
      const v = validateTopic(t);
      assert.equal(v.valid, parsed, t);
      if (!v.valid) assert.ok(v.reason.length > 0 && v.message.length > 0, t);
    }
  });

  it('lists as publishers of each pattern exactly the roles the ACL lets publish there', () => {
    const example: Record<string, string> = {
      uplink: uplinkTopic('d-1', 'timeseries'),
      downlink: commandTopic('d-1'),
      status: statusTopic('d-1'),
      receipts: receiptTopic('g-1'),
      gatewayPresence: gatewayPresenceTopic('g-1'),
      gatewaySecurity: gatewaySecurityTopic('g-1'),
      gatewayUplink: gatewayUplinkTopic('g-1'),
      storedFeed: 'fieldstream/v1/internal/stored',
    };
    for (const t of topicStructure()) {
      const topic = example[t.kind] as string;
      for (const role of ['gateway', 'distributor', 'command-api', 'consumer', 'console', 'bridge', 'monitor']) {
        assert.equal(t.publishers.includes(role), mayPublish(role, topic), `${role} on ${t.kind}`);
      }
    }
  });
});

describe('management API: state of the pipeline', () => {
  it('reads brokers and the bridge from the exporter, distributors and the database from their /readyz', () => {
    const s = manageStatus(
      view({
        brokers: [
          { name: 'internal', up: true },
          { name: 'dmz', up: false },
        ],
        bridgeConnected: false,
        services: [
          { name: 'distributor', service: 'distributor', ready: true, detail: 'ready', checks: ['broker', 'database', 'files'], failing: [] },
          { name: 'distributor-2', service: 'distributor', ready: false, detail: 'not ready: database failing', checks: ['broker', 'database', 'files'], failing: ['database'] },
          { name: 'distributor-3', ready: false, detail: 'no answer (timeout)' },
          // an older distributor, during a rolling upgrade: its /readyz names no checks, and had no `files`
          { name: 'distributor-old', service: 'distributor', ready: true, detail: 'ready', failing: [] },
          { name: 'broker-exporter', service: 'broker-exporter', ready: true, detail: 'ready', failing: [] },
        ],
      }),
      false,
    );
    assert.deepEqual(s.brokers, { internal: { up: true, source: 'broker-exporter' }, dmz: { up: false, source: 'broker-exporter' } });
    assert.deepEqual(s.bridge, { connected: false, source: 'broker-exporter' });
    assert.deepEqual(
      s.distributors.map((d) => [d.name, d.broker, d.database, d.files]),
      [
        ['distributor', true, true, true],
        ['distributor-2', true, false, true],
        ['distributor-3', null, null, null],
        ['distributor-old', true, true, null],
      ],
    );
    assert.equal(s.database.ok, false);
    assert.match(s.database.detail, /distributor-2/);
    assert.equal(s.at, '2026-01-01T00:00:00.000Z');
  });

  it('says unknown, never up, when nothing measured it', () => {
    const s = manageStatus(view({ at: 0 }), true);
    assert.deepEqual([s.at, s.brokers.internal, s.brokers.dmz, s.bridge.connected, s.database.ok], [null, { up: true, source: 'console' }, { up: null, source: 'none' }, null, null]);
  });
});

describe('management API: the test event on the device', () => {
  it('answers completed with when it was received, and refuses params that are not a test event', () => {
    assert.deepEqual(answerTestCommand({ requestedBy: 'admin-user', note: 'hi' }, 5, 9), { status: 'completed', result: { test: 'received', receivedAt: 9, issuedAt: 5, note: 'hi' } });
    assert.deepEqual(answerTestCommand(undefined, 5, 9), { status: 'completed', result: { test: 'received', receivedAt: 9, issuedAt: 5 } });
    assert.equal(answerTestCommand({ rm: '-rf' }, 5, 9).status, 'rejected');
  });

  it('is on by default and can be turned off (CONSOLE_MANAGE_API)', () => {
    const env = { COMMAND_API_TOKEN: 'x'.repeat(32) };
    assert.equal(loadConsoleConfig(env).CONSOLE_MANAGE_API, 'on');
    assert.equal(loadConsoleConfig({ ...env, CONSOLE_MANAGE_API: 'off' }).CONSOLE_MANAGE_API, 'off');
    assert.throws(() => loadConsoleConfig({ ...env, CONSOLE_MANAGE_API: 'maybe' }));
  });
});

describe('management API: how a device authenticates', () => {
  it('reads the tokens file as the tooling does: token devices with their expiry (or none), certificate devices with their days left, unknown without the file', async () => {
    const pki = makeTestPki([]);
    try {
      const view = new DeviceTokensView(tokenPaths(pki.dir).file, pino({ level: 'silent' }));
      assert.equal(view.current(), undefined, 'no file yet');
      assert.deepEqual(deviceCredential(700, view.current(), 'dev-a'), { auth: null, credentialExpiresAt: null, credentialDaysLeft: 700 });

      const issued = await issueDeviceToken(pki.dir, 'tok-a', { validityDays: 10 });
      await issueDeviceToken(pki.dir, 'tok-r');
      revokeDeviceToken(pki.dir, 'tok-r');
      await issueDeviceToken(pki.dir, 'tok-old');
      const file = JSON.parse(readFileSync(tokenPaths(pki.dir).file, 'utf8')) as { devices: Record<string, { expiresAt?: string }> };
      delete file.devices['tok-old']!.expiresAt;
      writeFileSync(tokenPaths(pki.dir).file, JSON.stringify(file));

      const now = Date.now() + 5_000; // past the view's recheck interval
      const tokens = view.current(now);
      assert.ok(tokens, 'the file is read');
      assert.deepEqual(deviceCredential(null, tokens, 'tok-a', now), { auth: 'token', credentialExpiresAt: issued.expiresAt, credentialDaysLeft: 9, tokenState: 'active' });
      assert.deepEqual(deviceCredential(null, tokens, 'tok-a', Date.parse(issued.expiresAt) + 1), { auth: 'token', credentialExpiresAt: issued.expiresAt, credentialDaysLeft: -1, tokenState: 'expired' });
      assert.deepEqual(deviceCredential(null, tokens, 'tok-old', now), { auth: 'token', credentialExpiresAt: null, credentialDaysLeft: null, tokenState: 'active' });
      assert.deepEqual(deviceCredential(null, tokens, 'tok-r', now), { auth: 'token', credentialExpiresAt: null, credentialDaysLeft: null, tokenState: 'revoked' });
      assert.deepEqual(deviceCredential(725, tokens, 'dev-a', now), { auth: 'certificate', credentialExpiresAt: null, credentialDaysLeft: 725 });
      assert.equal(deviceCredential(725, tokens, 'constructor', now).auth, 'certificate', 'an id that is a property of every object is no entry');

      // A damaged file: the last good one stays.
      writeFileSync(tokenPaths(pki.dir).file, '{"version":1,"devices":{"tok-a":{"state":"active"}}}');
      assert.equal(view.current(now + DAY_MS)?.['tok-a']?.state, 'active');
      assert.ok(view.current(now + DAY_MS)?.['tok-old'], 'still the last good file');
    } finally {
      pki.cleanup();
    }
  });

  it('reads CONSOLE_DEVICE_TOKENS_FILE, by default where the tooling writes it', () => {
    const env = { COMMAND_API_TOKEN: 'x'.repeat(32) };
    assert.equal(loadConsoleConfig(env).CONSOLE_DEVICE_TOKENS_FILE, 'certs/dmz/tokens/device-tokens.json');
    assert.equal(loadConsoleConfig({ ...env, CONSOLE_DEVICE_TOKENS_FILE: '/x/t.json' }).CONSOLE_DEVICE_TOKENS_FILE, '/x/t.json');
  });
});

describe("the console's HTTP server (the management API's routes are on it)", () => {
  it('closes a keep-alive connection, saying so, after refusing a body as too large while it arrived (chunked)', async () => {
    const web = await testWebServer((app) => {
      app.post(`${MANAGE_PREFIX}/echo`, async (req) => ({ got: req.body }));
      app.get(`${MANAGE_PREFIX}/echo`, async () => ({ ok: true }));
    });
    try {
      const head = `POST ${MANAGE_PREFIX}/echo HTTP/1.1\r\nHost: console\r\nContent-Type: application/json\r\n`;
      const { first, answered, closed } = await oversizedChunkedThenNext(web.port, head, CONSOLE.bodyMaxBytes, `GET ${MANAGE_PREFIX}/echo HTTP/1.1\r\nHost: console\r\n\r\n`);
      // fastify's FST_ERR_CTP_BODY_TOO_LARGE, in the registry's code (the management API's routes,
      // not registered here, answer it as MANAGE_INVALID_REQUEST).
      assert.match(first, /^HTTP\/1\.1 400 /, `the refusal: ${first.slice(0, 200)}`);
      assert.match(first, /CONSOLE_INVALID_REQUEST/);
      const ok = /^HTTP\/1\.1 200 /.test(answered) || (closed && /\r\nconnection: close\r\n/i.test(first));
      assert.ok(ok, `the next request was ${answered ? 'answered' : `left unanswered on a connection ${closed ? 'closed' : 'open'}`}; the refusal said: ${first.split('\r\n\r\n')[0]}`);
    } finally {
      await web.close();
    }
  });

  it("answers every page, file, API answer and error with the security headers docs/console.md names, framing refused outright as the CSP's frame-ancestors 'none' says", async () => {
    const web = await testWebServer((app) => {
      app.get('/api/session', async () => ({ authenticated: false }));
    });
    try {
      const csp = "default-src 'self';script-src 'self';style-src 'self';img-src 'self' data:;connect-src 'self';font-src 'self';object-src 'none';base-uri 'none';form-action 'self';frame-ancestors 'none'";
      for (const path of ['/', '/app.js', '/api/session', '/no-such-file']) {
        const res = await fetch(`http://127.0.0.1:${web.port}${path}`);
        await res.arrayBuffer();
        assert.equal(res.headers.get('content-security-policy'), csp, path);
        assert.equal(res.headers.get('x-content-type-options'), 'nosniff', path);
        assert.equal(res.headers.get('referrer-policy'), 'no-referrer', path);
        // The older header for browsers without CSP's frame-ancestors says the same: no framing,
        // not even by the console's own origin (SAMEORIGIN, helmet's default, said otherwise).
        assert.equal(res.headers.get('x-frame-options'), 'DENY', path);
        // Reached over plain HTTP: no HSTS (the console is told it is not behind HTTPS).
        assert.equal(res.headers.get('strict-transport-security'), null, path);
      }
    } finally {
      await web.close();
    }
  });

  it('tells browsers to keep to HTTPS on every answer once the console is reached over it, a refusal of the HTTP parser too', async () => {
    const web = await testWebServer(() => undefined, undefined, true);
    try {
      const hsts = `max-age=${CONSOLE.hstsMaxAgeS}; includeSubDomains`;
      for (const text of ['GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 'GET /% HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 'GET / HTTP/1.1\r\nHost: x\r\nnot a header\r\n\r\n']) {
        const r = await rawRequest(web.port, text);
        assert.equal(r.headers['strict-transport-security'], hsts, `${text.split('\r\n')[0]} (${r.status})`);
      }
    } finally {
      await web.close();
    }
  });
});

describe("the console's HTTP server: its router's limit on a path parameter", () => {
  it('takes a parameter of CONSOLE.pathParamMaxChars to its route, set without the option fastify warns is deprecated at every start', async () => {
    // npm start printed FastifyWarning FSTDEP022 on stderr at every start: the limit was given as a
    // top-level option, which fastify 6 drops (and with it the limit, back to 100 characters).
    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }) => warnings.push(`${w.code ?? w.name}: ${w.message}`);
    process.on('warning', onWarning);
    const web = await testWebServer((app) => {
      app.get<{ Params: { id: string } }>('/api/long/:id', async (req) => ({ length: req.params.id.length }));
    });
    try {
      const res = await fetch(`http://127.0.0.1:${web.port}/api/long/${'a'.repeat(CONSOLE.pathParamMaxChars)}`);
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { length: CONSOLE.pathParamMaxChars });
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(warnings.filter((w) => w.startsWith('FSTDEP')), []);
    } finally {
      process.off('warning', onWarning);
      await web.close();
    }
  });
});

describe("the console's HTTP server and clients that stop reading", () => {
  it('closes a connection whose answers its client does not read once one has been stuck for CONSOLE.answerStallMs; a request the console works on longer, and a client reading slowly, are answered whole', async () => {
    // Pipelined requests, each answered with a device list's worth, read by nobody: Node's own
    // timeouts end once a request is in, and the connection, its answers and the requests read
    // meanwhile were held for ever.
    const limits = CONSOLE as unknown as Record<string, number>;
    const saved = limits.answerStallMs as number;
    limits.answerStallMs = 1_000;
    const big = 'd'.repeat(4 * 1024 * 1024);
    const web = await testWebServer((app) => {
      app.get(`${MANAGE_PREFIX}/devices`, async () => ({ devices: big }));
      app.get(`${MANAGE_PREFIX}/status`, async () => {
        await new Promise((r) => setTimeout(r, 2_500));
        return { ok: true };
      });
    });
    const stalled = await pipelinedUnread(web.port, `GET ${MANAGE_PREFIX}/devices HTTP/1.1\r\nHost: console\r\n\r\n`, 20);
    try {
      const slow = fetch(`http://127.0.0.1:${web.port}${MANAGE_PREFIX}/status`);
      // Some 4 MB read at 1 MB/s: far longer than the stall bound, never stuck.
      const reader = await readSlowly(web.port, `GET ${MANAGE_PREFIX}/devices HTTP/1.1\r\nHost: console\r\n\r\n`, 1024 * 1024);
      assert.ok(reader.whole, `a client reading slowly was cut off after ${reader.bytes} bytes`);
      assert.ok(reader.ms > 2 * limits.answerStallMs, 'read for longer than the bound');
      const res = await slow;
      assert.equal(res.status, 200, 'a request the console worked on for longer than the bound is answered');
      await res.arrayBuffer();
      const bound = 5 * limits.answerStallMs;
      const closed = await Promise.race([stalled.closed, new Promise<undefined>((r) => setTimeout(r, bound))]);
      assert.ok(closed !== undefined, `a connection whose client read none of its answers was still open ${reader.ms.toFixed(0)} + ${bound} ms after its requests`);
    } finally {
      limits.answerStallMs = saved;
      stalled.destroy();
      await web.close();
    }
  });
});

describe("the console's HTTP server and pipelined requests", () => {
  it('answers the requests pipelined on a connection one at a time, in order: a client that reads none of its answers has a few made, not one per request it sent', async () => {
    // Answered as they were parsed, the thousand requests of one 64 KiB read each had its answer
    // (here 256 KiB, a device list can be megabytes) made and held at once.
    const big = 'd'.repeat(256 * 1024);
    let made = 0;
    const web = await testWebServer((app) => {
      app.get(`${MANAGE_PREFIX}/devices`, async () => {
        made++;
        return { devices: big };
      });
      // Each waits a while, the later ones less: answered as they are done, they would come out of order.
      app.get(`${MANAGE_PREFIX}/devices/:n`, async (req) => {
        const n = Number((req.params as { n: string }).n);
        await new Promise((r) => setTimeout(r, 40 - n));
        return { n };
      });
    });
    const stalled = await pipelinedUnread(web.port, `GET ${MANAGE_PREFIX}/devices HTTP/1.1\r\nHost: console\r\n\r\n`, 2_000);
    try {
      await new Promise((r) => setTimeout(r, 1_500));
      assert.ok(made <= 64, `${made} answers of 256 KiB made for a client that read none of them`);

      // A client that pipelines and reads gets every answer, in order.
      const text = await new Promise<string>((resolve, reject) => {
        const socket = connect(web.port, '127.0.0.1');
        let got = '';
        socket.setEncoding('utf8');
        socket.on('data', (c: string) => {
          got += c;
          if ((got.match(/\r\n\r\n\{"n":\d+\}/g) ?? []).length === 40) {
            socket.destroy();
            resolve(got);
          }
        });
        socket.on('error', reject);
        socket.write(Array.from({ length: 40 }, (_, n) => `GET ${MANAGE_PREFIX}/devices/${n} HTTP/1.1\r\nHost: console\r\n\r\n`).join(''));
      });
      assert.deepEqual([...text.matchAll(/\{"n":(\d+)\}/g)].map((m) => Number(m[1])), Array.from({ length: 40 }, (_, n) => n));
    } finally {
      stalled.destroy();
      await web.close();
    }
  });
});

describe('management API: the device list', () => {
  /** The management API's routes alone on a fleet, called with fastify's inject (no network). */
  async function manageOn(fleet: Fleet) {
    const app = Fastify();
    manageRoutes({
      credentials: { verify: (t) => (t === 'viewer-token' ? { name: 'viewer-user', role: 'viewer' } : undefined) },
      fleet,
      pipeline: () => view(),
      brokerConnected: () => true,
      commands: {} as CommandClient,
      log: pino({ level: 'silent' }),
    })(app);
    await app.ready();
    const devices = async (query: string) => {
      const res = await app.inject({ url: `${MANAGE_PREFIX}/devices?${query}`, headers: { authorization: 'Bearer viewer-token' } });
      assert.equal(res.statusCode, 200, res.body);
      const body = res.json() as { devices: Array<{ id: string; state: string }>; next?: string };
      return { ids: body.devices.map((d) => d.id), next: body.next };
    };
    /** Every page of `query`, `limit` at a time, with `between(page)` run after each. */
    const walk = async (query: string, limit: number, between: (page: number) => void = () => {}) => {
      const ids: string[] = [];
      let after: string | undefined;
      for (let page = 0; ; page++) {
        const r = await devices(`${query}&limit=${limit}${after === undefined ? '' : `&after=${after}`}`);
        assert.ok(r.ids.length <= limit);
        ids.push(...r.ids);
        if (r.next === undefined) return ids;
        assert.equal(r.next, r.ids.at(-1), 'next is the last id of the page');
        after = r.next;
        between(page);
      }
    };
    return { app, devices, walk };
  }
  const status = (device: string, state: 'online' | 'offline', time: number): StoredPoint => ({ measurement: 'device_status', tags: { device, gateway: 'gw-1' }, fields: { state }, time });

  it('reads the Bearer scheme in any case and after any number of spaces (RFC 9110 §11.1, §11.4), as the gateway reads device tokens; a valid token so written is never charged as a wrong guess', async () => {
    const { app } = await manageOn(new Fleet({ staleAfterMs: 180_000 }));
    for (let i = 0; i <= MANAGE.authMaxFailures; i++) {
      for (const authorization of ['bearer viewer-token', 'BEARER viewer-token', 'Bearer  viewer-token']) {
        const res = await app.inject({ url: `${MANAGE_PREFIX}/status`, headers: { authorization } });
        assert.equal(res.statusCode, 200, `${authorization} (request ${i + 1}): ${res.body}`);
      }
    }
    const wrong = await app.inject({ url: `${MANAGE_PREFIX}/status`, headers: { authorization: 'bearer wrong-token' } });
    assert.equal(wrong.json().error.code, 'MANAGE_UNAUTHORIZED', 'a wrong token so written is still refused');
  });

  it('pages in id order, each device once; a device added between pages appears in its place if after the cursor; filters page the same', async () => {
    const fleet = new Fleet({ staleAfterMs: 180_000 });
    // Registered out of order, with ids that sort differently by code unit than by locale.
    const ids = ['m-10', 'b-2', 'Z-1', 'm-02', 'a_1', 'a-1', 'x-9', 'c-3'];
    for (const id of ids) fleet.register(id);
    const { app, devices, walk } = await manageOn(fleet);
    try {
      const sorted = (list: string[]) => [...list].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      assert.deepEqual(await walk('', 3), sorted(ids));
      assert.deepEqual((await devices('limit=100')).ids, sorted(ids));
      assert.deepEqual(await devices(`limit=${ids.length}`), { ids: sorted(ids), next: undefined }, 'no next when the page holds the last device');

      // Between pages: one device after the cursor (it is in a later page), one before it (it is
      // not: the pages already given went past it).
      const added: string[] = [];
      const seen = await walk('', 3, (page) => {
        if (page !== 0) return;
        for (const id of ['b-3', 'n-5', 'A-0']) {
          fleet.register(id);
          added.push(id);
        }
      });
      assert.deepEqual(seen, sorted([...ids, 'b-3', 'n-5']), 'the new devices after the cursor, in their place');
      assert.deepEqual(await walk('', 4), sorted([...ids, ...added]));
      // A device first heard of (not registered) between pages, and a state filter.
      fleet.apply(status('a-1', 'online', 1));
      fleet.apply(status('m-10', 'online', 1));
      const online = await walk('state=online', 1, (page) => {
        if (page === 0) fleet.apply({ measurement: 'readings', tags: { device: 'k-7' }, fields: { v: 1 }, time: 2 });
      });
      assert.deepEqual(online, ['a-1', 'k-7', 'm-10']);
      assert.deepEqual((await devices('state=unknown&limit=2&after=b-3')).ids, ['c-3', 'm-02']);
      assert.deepEqual((await devices('state=unknown&limit=2&after=x-9')), { ids: [], next: undefined });
    } finally {
      await app.close();
    }
  });

  it('a filtered listing pages each matching device once across changes between pages: states and revoked flags changing, the cursor leaving the filter, devices added', async () => {
    let clock = 1_000_000;
    const fleet = new Fleet({ staleAfterMs: 180_000, now: () => clock });
    const ids = Array.from({ length: 12 }, (_, i) => `d-${String(i).padStart(2, '0')}`);
    for (const id of ids) fleet.register(id);
    let t = 1;
    const set = (state: 'online' | 'offline', ...list: string[]) => {
      for (const id of list) fleet.apply(status(id, state, t++));
    };
    const reading = (id: string) => fleet.apply({ measurement: 'readings', tags: { device: id }, fields: { v: 1 }, time: t++ });
    set('online', 'd-01', 'd-03', 'd-05', 'd-07', 'd-09');
    const { app, devices, walk } = await manageOn(fleet);
    try {
      const online = await walk('state=online', 2, (page) => {
        if (page === 0) {
          // The page ended at d-03: the next one starts after it, though it left the filter.
          set('offline', 'd-03', 'd-05');
          set('online', 'd-00', 'd-06'); // one behind the cursor (not given), one ahead (given)
          reading('d-04a'); // first heard of: a new row, online, ahead of the cursor
          reading('d-02a'); // and one behind it
        }
        if (page === 1) {
          set('offline', 'd-07', 'd-09');
          set('online', 'd-07', 'd-11'); // d-07 back before its turn came
          reading('d-08'); // unknown until now
        }
      });
      assert.deepEqual(online, ['d-01', 'd-03', 'd-04a', 'd-06', 'd-07', 'd-08', 'd-11']);

      fleet.setRevoked(new Set(['d-02', 'd-05', 'd-10']));
      const revoked = await walk('revoked=true', 1, (page) => {
        // The cursor's device (d-02) and one ahead of it (d-05) no longer revoked; one behind, one
        // ahead and a new device revoked.
        if (page === 0) fleet.setRevoked(new Set(['d-01', 'd-08', 'd-10', 'd-12']));
      });
      assert.deepEqual(revoked, ['d-02', 'd-08', 'd-10', 'd-12']);

      // Both filters; d-06 leaves (revoked), d-08 comes in (no longer revoked).
      const both = await walk('state=online&revoked=false', 2, (page) => {
        if (page === 0) fleet.setRevoked(new Set(['d-01', 'd-05', 'd-06', 'd-10', 'd-12']));
      });
      assert.deepEqual(both, ['d-00', 'd-02a', 'd-04a', 'd-07', 'd-08', 'd-11']);

      // The revoked devices of every state, in one id order.
      assert.deepEqual(await walk('revoked=true', 2), ['d-01', 'd-05', 'd-06', 'd-10', 'd-12']);
      assert.deepEqual(await walk('state=unknown', 3), ['d-02', 'd-04', 'd-10', 'd-12']);
      assert.deepEqual(await walk('state=offline', 3), ['d-03', 'd-05', 'd-09']);
      assert.deepEqual(await walk('state=offline&revoked=true', 1), ['d-05']);
      assert.deepEqual(await devices('state=offline&after=d-03x&limit=1'), { ids: ['d-05'], next: 'd-05' }, 'a cursor that is no device');
      const all = [...ids, 'd-02a', 'd-04a', 'd-12'].sort();
      assert.deepEqual(await walk('', 5), all);

      // Every connected device goes stale at once: the filters follow.
      clock += 200_000;
      fleet.sweep();
      assert.deepEqual(await walk('state=stale', 4), ['d-00', 'd-01', 'd-02a', 'd-04a', 'd-06', 'd-07', 'd-08', 'd-11']);
      assert.deepEqual(await devices('state=online'), { ids: [], next: undefined });
      assert.deepEqual(await walk('state=stale&revoked=true', 4), ['d-01', 'd-06']);
      assert.deepEqual(await walk('revoked=false', 7), all.filter((id) => !['d-01', 'd-05', 'd-06', 'd-10', 'd-12'].includes(id)));
    } finally {
      await app.close();
    }
  });

  it('a filtered page reads the devices it gives, not the fleet: a few matching of 50,000 cost no more than a page each', async () => {
    const fleet = new Fleet({ staleAfterMs: 180_000 });
    const n = 50_000;
    const id = (i: number) => `d-${String(i).padStart(6, '0')}`;
    for (let i = n - 1; i >= 0; i--) fleet.register(id(i));
    const online = [3, 9_000, 21_001, 33_333, 49_999].map(id);
    online.forEach((d, i) => fleet.apply(status(d, 'online', i + 1)));
    const revoked = [0, 9_000, 40_000].map(id);
    fleet.setRevoked(new Set(revoked));
    const { app, devices, walk } = await manageOn(fleet);
    // Rows looked up: every device a page reads, whether it is given or skipped.
    const entries = (fleet as unknown as { entries: { devices: Map<string, unknown> } }).entries.devices;
    let read = 0;
    const get = entries.get.bind(entries);
    entries.get = (key: string) => {
      read++;
      return get(key);
    };
    try {
      await devices('limit=1');
      read = 0;
      assert.deepEqual(await walk('state=online', 2), online);
      assert.ok(read <= 3 * 3, `${read} rows read for 3 pages of 2`);
      read = 0;
      assert.deepEqual(await walk('revoked=true', 2), revoked);
      assert.deepEqual(await walk('state=online&revoked=true', 2), [id(9_000)]);
      assert.deepEqual(await walk('state=stale', 2), []);
      assert.ok(read <= 2 * 3 + 3 + 1, `${read} rows read for 4 pages of at most 2`);
      read = 0;
      const r = await devices(`state=unknown&revoked=false&limit=5&after=${id(39_998)}`);
      assert.deepEqual(r.ids, [39_999, 40_001, 40_002, 40_003, 40_004].map(id));
      assert.ok(read <= 6, `${read} rows read for a page of 5`);
    } finally {
      await app.close();
    }
  });

  it('a page costs what it returns: no sort, nor copy, of the whole fleet per request', async () => {
    const fleet = new Fleet({ staleAfterMs: 180_000 });
    const n = 50_000;
    for (let i = n - 1; i >= 0; i--) fleet.register(`d-${String(i).padStart(6, '0')}`);
    const { app, devices } = await manageOn(fleet);
    const entries = (fleet as unknown as { entries: { devices: Map<string, unknown> } }).entries.devices;
    let scans = 0;
    const values = entries.values.bind(entries);
    entries.values = () => {
      scans++;
      return values();
    };
    const sort = Array.prototype.sort;
    let sorted = 0;
    Array.prototype.sort = function (this: unknown[], ...args) {
      sorted += this.length;
      return sort.apply(this, args);
    } as typeof sort;
    try {
      // The first request puts the fleet in order once (the devices registered since the last).
      await devices('limit=1');
      scans = 0;
      sorted = 0;
      for (let i = 0; i < 100; i++) {
        const r = await devices(`limit=5&after=d-${String(i * 100).padStart(6, '0')}`);
        assert.deepEqual(r.ids, Array.from({ length: 5 }, (_, k) => `d-${String(i * 100 + k + 1).padStart(6, '0')}`));
      }
      assert.equal(scans, 0, 'the fleet was scanned');
      assert.ok(sorted < 1000, `${sorted} elements sorted for 100 pages of 5`);
      // A device added: put in its place, without sorting the fleet again.
      fleet.register('d-000000a');
      assert.deepEqual((await devices('limit=2')).ids, ['d-000000', 'd-000000a']);
      assert.ok(sorted < 1000, `${sorted} elements sorted`);
    } finally {
      Array.prototype.sort = sort;
      await app.close();
    }
  });
});

describe('management API: the test event as the command API holds it', () => {
  it("passes response.resultNotKept on: a progress answer's result the command API let go", async () => {
    const commandId = 'cmd-test-not-kept';
    const at = new Date(Date.UTC(2026, 0, 1, 12)).toISOString();
    // The command API's answer to GET /v1/commands/ID, on a real socket, read by the console's real client.
    const answer: CommandView = { commandId, deviceId: 'meter-1', command: 'fieldstream.test', state: 'accepted', issuedAt: at, expiresAt: at, attempts: 1, sentAt: at, response: { status: 'accepted', resultNotKept: true, at } };
    const api = createServer((req, res) => {
      res.writeHead(req.url === `/v1/commands/${commandId}` ? 200 : 404, { 'content-type': 'application/json' });
      res.end(JSON.stringify(req.url === `/v1/commands/${commandId}` ? answer : { code: 'API_NOT_FOUND', message: 'no' }));
    });
    await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
    const app = Fastify();
    try {
      manageRoutes({
        credentials: { verify: (t) => (t === 'viewer-token' ? { name: 'viewer-user', role: 'viewer' } : undefined) },
        fleet: new Fleet({ staleAfterMs: 180_000 }),
        pipeline: () => view(),
        brokerConnected: () => true,
        commands: new CommandClient(`http://127.0.0.1:${(api.address() as AddressInfo).port}`),
        log: pino({ level: 'silent' }),
      })(app);
      await app.ready();
      const res = await app.inject({ url: `${MANAGE_PREFIX}/test-events/${commandId}`, headers: { authorization: 'Bearer viewer-token' } });
      assert.equal(res.statusCode, 200, res.body);
      assert.deepEqual(res.json().response, { status: 'accepted', resultNotKept: true, at });
    } finally {
      await app.close();
      await new Promise((resolve) => api.close(resolve));
    }
  });
});
