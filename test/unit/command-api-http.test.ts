import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { dirname, join } from 'node:path';
import mqtt from 'mqtt';
import { CommandDispatcher } from '../../internal-network/command-api/dispatcher.ts';
import { startCommandHttp } from '../../internal-network/command-api/http.ts';
import { CommandStore } from '../../internal-network/command-api/store.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { CommandClient } from '../../internal-network/console/command-client.ts';
import { tempDir } from '../helpers/pki.ts';
import { Credentials, sha256Hex } from '../../internal-network/shared/credentials.ts';
import { ERRORS } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { terminalText } from '../../shared/terminal-text.ts';
import { oversizedChunkedThenNext, pipelinedUnread, rawRequest, requestFrom } from '../helpers/http-from.ts';
import { ipv6Networks, ipv6NetworksUnavailable } from '../helpers/ipv6-network.ts';
import { eventually } from '../helpers/ws-device.ts';

const TOKEN = 'operator-token';

/** The real command API HTTP server with one operator (TOKEN), the given dispatcher, store and logger. */
function operatorApi(dispatcher: CommandDispatcher, store: CommandStore, logger: ReturnType<typeof createLogger>) {
  return startCommandHttp({
    host: '127.0.0.1',
    port: 0,
    setting: 'COMMAND_API_PORT',
    credentials: new Credentials([[sha256Hex(TOKEN), { name: 'ops', role: 'operator' }]]),
    groups: {},
    defaultTtlSeconds: 60,
    dispatcher,
    store,
    brokerConnected: () => true,
    logger,
  });
}

/** The real command API HTTP server, with a dispatcher that fails as nothing should. */
async function failingApi() {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const dispatcher = {
    issue() {
      throw new Error('disk full while saving the command');
    },
  } as unknown as CommandDispatcher;
  const api = await operatorApi(dispatcher, { all: () => [], get: () => undefined } as unknown as CommandStore, createLogger('command-api', 'debug', sink));
  return { api, lines };
}

/**
 * The real command API HTTP server with a real store (its journal at `journal`) and dispatcher
 * (unsigned commands allowed, a broker that never connects: commands stay queued), two operators:
 * TOKEN (`ops`) and `other-token` (`ops-2`).
 */
async function issuingApi(journal: string, log: ReturnType<typeof createLogger>) {
  const store = new CommandStore(journal, log);
  const broker = mqtt.connect('mqtt://127.0.0.1:1', { reconnectPeriod: 0, connectTimeout: 100 });
  broker.on('error', () => undefined);
  const dispatcher = new CommandDispatcher(broker, store, log, { keys: new DeviceKeyRegistry(join(dirname(journal), 'keys')), allowUnsigned: true });
  const api = await startCommandHttp({
    host: '127.0.0.1',
    port: 0,
    setting: 'COMMAND_API_PORT',
    credentials: new Credentials([
      [sha256Hex(TOKEN), { name: 'ops', role: 'operator' }],
      [sha256Hex('other-token'), { name: 'ops-2', role: 'operator' }],
    ]),
    groups: {},
    defaultTtlSeconds: 60,
    dispatcher,
    store,
    brokerConnected: () => true,
    logger: log,
  });
  return {
    store,
    port: api.port,
    close: async () => {
      await api.close();
      dispatcher.close();
      broker.end(true);
    },
  };
}

function post(port: number, body: unknown) {
  return fetch(`http://127.0.0.1:${port}/v1/commands`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

test('an unexpected failure is answered 500 API_INTERNAL, not as a bad request, and its cause is logged', async () => {
  const { api, lines } = await failingApi();
  try {
    const res = await post(api.port, { deviceId: 'pump-1', command: 'reboot' });
    assert.equal(res.status, 500);
    assert.equal(ERRORS.API_INTERNAL.http, 500);
    const body = (await res.json()) as { code: string; message: string };
    assert.equal(body.code, 'API_INTERNAL');
    // The cause stays in the log: the answer does not carry it.
    assert.doesNotMatch(body.message, /disk full/);
    const logged = lines.find((l) => l.code === 'API_INTERNAL');
    assert.ok(logged, 'the failure is logged with its code');
    assert.equal(logged.level, 50); // error
    assert.match(JSON.stringify(logged.err), /disk full while saving the command/);
    assert.equal(logged.path, '/v1/commands');
  } finally {
    await api.close();
  }
});

test("a request Node's HTTP parser refuses is answered in the API's error shape, with the registry's code", async () => {
  const { api } = await failingApi();
  try {
    for (const [text, status, code] of [
      ['POST /v1/commands HTTP/1.1\r\nHost: x\r\nnot a header\r\n\r\n', 400, 'HTTP_MALFORMED'],
      [`GET /v1/commands HTTP/1.1\r\nHost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'HTTP_HEADERS_TOO_LARGE'],
    ] as const) {
      const r = await rawRequest(api.port, text);
      assert.equal(r.status, status, JSON.stringify(r.body));
      assert.equal(r.body.code, code, JSON.stringify(r.body));
      assert.equal(ERRORS[code].http, status);
    }
  } finally {
    await api.close();
  }
});

test('every answer, each error too, says Cache-Control: no-store and X-Content-Type-Options: nosniff, with its code in the body: those Node answered by itself included', async () => {
  const { api } = await failingApi();
  const bearer = `Authorization: Bearer ${TOKEN}\r\n`;
  try {
    const cases: Array<[string, string, number, string | undefined]> = [
      ['an answer', 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', 200, undefined],
      ['a malformed header', 'GET /v1/commands HTTP/1.1\r\nHost: x\r\nnot a header\r\n\r\n', 400, 'HTTP_MALFORMED'],
      ["headers past the parser's limit", `GET /v1/commands HTTP/1.1\r\nHost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'HTTP_HEADERS_TOO_LARGE'],
      // Node refused these itself: a 400 and a 417 with no body, no code and neither header.
      ['an HTTP/1.1 request without Host', `GET /v1/commands HTTP/1.1\r\n${bearer}\r\n`, 400, 'HTTP_MALFORMED'],
      // RFC 9112 §3.2: one Host, not the first of several (a proxy in front may have read another).
      ['two Host headers', `GET /v1/commands HTTP/1.1\r\nHost: x\r\nhost: y\r\n${bearer}\r\n`, 400, 'HTTP_MALFORMED'],
      ['an expectation other than 100-continue', 'GET /v1/commands HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\n\r\n', 401, 'API_UNAUTHORIZED'],
      ['no bearer token', 'GET /v1/commands HTTP/1.1\r\nHost: x\r\n\r\n', 401, 'API_UNAUTHORIZED'],
      ['no such path', `GET /v2/nothing HTTP/1.1\r\nHost: x\r\n${bearer}\r\n`, 404, 'API_NOT_FOUND'],
      ['no such method', `DELETE /v1/commands HTTP/1.1\r\nHost: x\r\n${bearer}\r\n`, 405, 'API_METHOD_NOT_ALLOWED'],
      ['a target the URL parser refuses', 'GET //[ HTTP/1.1\r\nHost: x\r\n\r\n', 400, 'API_INVALID_REQUEST'],
      ['a body of another type', `POST /v1/commands HTTP/1.1\r\nHost: x\r\n${bearer}Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}`, 400, 'API_INVALID_BODY'],
    ];
    for (const [what, head, status, code] of cases) {
      const r = await rawRequest(api.port, head.replace('\r\n', '\r\nConnection: close\r\n'));
      assert.deepEqual([r.status, r.body?.code], [status, code], `${what}: ${JSON.stringify(r.body).slice(0, 200)}`);
      assert.deepEqual([r.headers['cache-control'], r.headers['x-content-type-options']], ['no-store', 'nosniff'], what);
      assert.match(r.headers['content-type'] ?? '', /^application\/json/, what);
      if (code !== undefined) assert.equal(typeof r.body.message, 'string', what);
    }
    // A request without Host is refused as an HTTP/1.1 one only: an HTTP/1.0 request may name none.
    const old = await rawRequest(api.port, 'GET /healthz HTTP/1.0\r\n\r\n');
    assert.equal(old.status, 200, JSON.stringify(old.body));
  } finally {
    await api.close();
  }
});

test("a caller's mistake is still API_INVALID_BODY (400), and is not logged as an internal error", async () => {
  const { api, lines } = await failingApi();
  try {
    const res = await post(api.port, '{"deviceId": ');
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { code: string }).code, 'API_INVALID_BODY');
    // params nested deep enough (30,000 levels, 60 KB: the body limit is 64 KiB) to overflow a recursive check: a bad
    // request like any other, not an internal error
    const deepBody = `{"deviceId":"pump-1","command":"reboot","params":${'['.repeat(30_000)}${']'.repeat(30_000)}}`;
    const deep = await post(api.port, deepBody);
    assert.equal(deep.status, 400);
    const answer = (await deep.json()) as { code: string; message: string };
    assert.equal(answer.code, 'API_INVALID_BODY');
    assert.match(answer.message, /deeper than 32 levels/);
    // The same with an Idempotency-Key: the body is checked before anything (its fingerprint) is made of it.
    const keyed = await fetch(`http://127.0.0.1:${api.port}/v1/commands`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', 'idempotency-key': '"deep-1"' },
      body: deepBody,
    });
    assert.equal(keyed.status, 400);
    assert.equal(((await keyed.json()) as { code: string }).code, 'API_INVALID_BODY');
    assert.equal(lines.filter((l) => l.code === 'API_INTERNAL').length, 0);
  } finally {
    await api.close();
  }
});

/** GET /v1/commands from a given loopback address. */
const getFrom = (port: number, from: string, token: string) => requestFrom(`http://127.0.0.1:${port}/v1/commands`, { from, headers: { authorization: `Bearer ${token}` } });

test('wrong bearer tokens are throttled per source address as the management API does: 401 until the budget is spent, then 429 API_THROTTLED with Retry-After, a valid token too; another address still gets through', async () => {
  const { api, lines } = await failingApi();
  const GUESSER = '127.0.0.2';
  try {
    assert.equal((await getFrom(api.port, GUESSER, TOKEN)).status, 200, 'a valid token from the address before');
    for (let i = 0; i < LIMITS.apiAuthMaxFailures; i++) {
      const r = await getFrom(api.port, GUESSER, `wrong-token-${i}`);
      assert.deepEqual([r.status, r.body.code], [401, 'API_UNAUTHORIZED'], `guess ${i + 1}`);
      // A valid token between the guesses gets through, and buys the guesser no more guesses.
      if (i === LIMITS.apiAuthMaxFailures - 2) assert.equal((await getFrom(api.port, GUESSER, TOKEN)).status, 200, 'a valid token while below the budget');
    }
    for (const token of ['one-more-guess', TOKEN]) {
      const r = await getFrom(api.port, GUESSER, token);
      assert.deepEqual([r.status, r.body.code], [429, 'API_THROTTLED'], 'refused unchecked, a valid token too');
      const s = Number(r.headers['retry-after']);
      assert.ok(Number.isInteger(s) && s >= 1 && s <= TIMINGS.apiAuthFailureWindowMs / 1000, `Retry-After ${r.headers['retry-after']}`);
      assert.equal(r.body.details.retryAfterS, s);
    }
    assert.equal(ERRORS.API_THROTTLED.http, 429);
    // The loopback's usual address has its own record: a valid token gets through.
    assert.equal((await getFrom(api.port, '127.0.0.1', TOKEN)).status, 200);
    assert.ok(lines.some((l) => l.code === 'API_THROTTLED' && l.remote === GUESSER), 'the address blocked is logged');
  } finally {
    await api.close();
  }
});

test('the Bearer scheme is read in any case and after any number of spaces (RFC 9110 §11.1, §11.4), as the gateway reads device tokens: a valid token so written gets through, and is never charged as a wrong guess', async () => {
  const { api } = await failingApi();
  const FROM = '127.0.0.3';
  try {
    for (let i = 0; i <= LIMITS.apiAuthMaxFailures; i++) {
      for (const header of [`bearer ${TOKEN}`, `BEARER ${TOKEN}`, `Bearer  ${TOKEN}`]) {
        const r = await requestFrom(`http://127.0.0.1:${api.port}/v1/commands`, { from: FROM, headers: { authorization: header } });
        assert.equal(r.status, 200, `${header.replace(TOKEN, 'TOKEN')} (request ${i + 1}): ${JSON.stringify(r.body)}`);
      }
    }
    const wrong = await requestFrom(`http://127.0.0.1:${api.port}/v1/commands`, { from: FROM, headers: { authorization: 'bearer wrong-token' } });
    assert.deepEqual([wrong.status, wrong.body.code], [401, 'API_UNAUTHORIZED'], 'a wrong token so written is still refused');
  } finally {
    await api.close();
  }
});

test('an IPv6 caller is budgeted as its /64: guesses from further addresses of that network are refused unchecked; another network still gets through', { skip: ipv6NetworksUnavailable() }, async () => {
  const net6 = ipv6Networks();
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const api = await startCommandHttp({
    host: net6.server,
    port: 0,
    setting: 'COMMAND_API_PORT',
    credentials: new Credentials([[sha256Hex(TOKEN), { name: 'ops', role: 'operator' }]]),
    groups: {},
    defaultTtlSeconds: 60,
    dispatcher: {} as CommandDispatcher,
    store: { all: () => [], get: () => undefined } as unknown as CommandStore,
    brokerConnected: () => true,
    logger: createLogger('command-api', 'debug', sink),
  });
  const from = (address: string, token: string) => requestFrom(`http://[${net6.server}]:${api.port}/v1/commands`, { from: address, headers: { authorization: `Bearer ${token}` } });
  try {
    const [a, b, c] = net6.sameNetwork;
    // The budget spent from one address of the /64, then from another of it...
    for (let i = 0; i < LIMITS.apiAuthMaxFailures; i++) {
      const r = await from(i % 2 === 0 ? a : b, `wrong-token-${i}`);
      assert.deepEqual([r.status, r.body.code], [401, 'API_UNAUTHORIZED'], `guess ${i + 1}`);
    }
    // ...and a third address of it is refused unchecked, a valid token too.
    for (const token of ['one-more-guess', TOKEN]) assert.deepEqual([(await from(c, token)).body.code], ['API_THROTTLED']);
    // Another /64 has its own budget.
    assert.equal((await from(net6.otherNetwork, TOKEN)).status, 200);
    const blocked = lines.find((l) => l.code === 'API_THROTTLED');
    assert.ok(blocked, 'the network blocked is logged');
    assert.equal(blocked.remote, (LIMITS.apiAuthMaxFailures - 1) % 2 === 0 ? a : b, 'with the address of the last guess');
    assert.match(String(blocked.budget), /::\/64$/);
  } finally {
    await api.close();
    net6.close();
  }
});

test('a client dropping its upload mid-body is HTTP_REQUEST_ABORTED at info, no error-level entry, and the API stays up', async () => {
  const { api, lines } = await failingApi();
  try {
    await new Promise<void>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: api.port }, () => {
        s.write(`POST /v1/commands HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"deviceId":`);
        // Long enough for the API to be reading the body, then the client goes.
        setTimeout(() => {
          s.destroy();
          resolve();
        }, 100);
      });
      s.on('error', reject);
    });
    const logged = await eventually(() => lines.find((l) => l.code === 'HTTP_REQUEST_ABORTED' || l.code === 'API_INTERNAL'), 5_000, 'the abort logged');
    assert.equal(logged.code, 'HTTP_REQUEST_ABORTED');
    assert.ok((logged.level as number) <= 30, `logged at level ${String(logged.level)}`); // info or debug
    assert.equal(logged.path, '/v1/commands');
    // Still up: the next request is answered (the dispatcher's failure is this fixture's, as in the first test).
    assert.equal((await post(api.port, '{"deviceId": ')).status, 400);
    assert.equal((await fetch(`http://127.0.0.1:${api.port}/healthz`)).status, 200);
    assert.deepEqual(lines.filter((l) => (l.level as number) >= 50), [], 'no error-level entry');
  } finally {
    await api.close();
  }
});

test('a body refused as too large while it arrived (chunked) closes its keep-alive connection, saying so, rather than leave it open and silent; the API stays up', async () => {
  const { api, lines } = await failingApi();
  try {
    const head = `POST /v1/commands HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\n`;
    const next = `GET /v1/commands HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`;
    const { first, answered, closed } = await oversizedChunkedThenNext(api.port, head, LIMITS.apiBodyMaxBytes, next);
    assert.match(first, /^HTTP\/1\.1 413 /, `the refusal: ${first.slice(0, 200)}`);
    assert.match(first, /API_BODY_TOO_LARGE/);
    // Either the next request is answered, or the connection closed and the refusal said so, so
    // that the client sends it on another.
    const ok = /^HTTP\/1\.1 200 /.test(answered) || (closed && /\r\nconnection: close\r\n/i.test(first));
    assert.ok(ok, `the next request was ${answered ? 'answered' : `left unanswered on a connection ${closed ? 'closed' : 'open'}`}; the refusal said: ${first.split('\r\n\r\n')[0]}`);
    assert.equal((await fetch(`http://127.0.0.1:${api.port}/healthz`)).status, 200);
    assert.deepEqual(lines.filter((l) => (l.level as number) >= 50), [], 'no error-level entry');
  } finally {
    await api.close();
  }
});

test(`a client trickling its headers is cut off at the headers timeout, not up to 30 s later; past ${LIMITS.commandApiMaxConnections} connections one more is closed as it is accepted`, async () => {
  // Node looks for requests past their timeouts every connectionsCheckingInterval (30 s by
  // default): each slow client held its connection six times the 5 s of headersTimeout, and with
  // no bound on how many, enough of them took every file descriptor, the journal's and the
  // broker connection's included.
  const { api } = await failingApi();
  const open = (): Promise<{ socket: ReturnType<typeof connect>; closed: Promise<number> }> =>
    new Promise((resolve, reject) => {
      const socket = connect(api.port, '127.0.0.1');
      socket.on('data', () => undefined);
      socket.on('error', () => undefined);
      const closed = new Promise<number>((r) => socket.once('close', () => r(performance.now())));
      socket.once('connect', () => resolve({ socket, closed }));
      socket.once('error', reject);
    });
  const sockets: ReturnType<typeof connect>[] = [];
  try {
    const slow = await open();
    sockets.push(slow.socket);
    const start = performance.now();
    slow.socket.write('GET /v1/commands HTTP/1.1\r\nHost: api\r\n'); // and never the rest
    const bound = TIMINGS.commandApiHeadersTimeoutMs + TIMINGS.commandApiConnectionsCheckMs + 1_500;
    const cut = await Promise.race([slow.closed, new Promise<undefined>((r) => setTimeout(r, bound + 2_000))]);
    assert.ok(cut !== undefined && cut - start <= bound, `cut off after ${cut === undefined ? 'more than ' + (bound + 2_000) : Math.round(cut - start)} ms (at most ${bound})`);

    for (let i = 0; i < LIMITS.commandApiMaxConnections; i++) sockets.push((await open()).socket);
    // Accepted: each of them is answered.
    const first = sockets[1] as ReturnType<typeof connect>;
    const answered = new Promise<string>((r) => first.once('data', (d: Buffer) => r(d.toString())));
    first.write('GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n');
    assert.match(await answered, /^HTTP\/1\.1 200 /);
    const extra = await open();
    sockets.push(extra.socket);
    const closedAt = await Promise.race([extra.closed, new Promise<undefined>((r) => setTimeout(r, 2_000))]);
    assert.ok(closedAt !== undefined, 'one more connection is closed as it is accepted');
  } finally {
    for (const s of sockets) s.destroy();
    await api.close();
  }
});

test(`a client that reads none of its answers loses its connection once nothing is written to it for TIMINGS.commandApiIdleTimeoutMs; one reading a large listing slowly gets all of it`, async () => {
  // The request timeouts end once a request is in. A client pipelining requests (no token needed:
  // each is answered 401) and reading none of the answers held its connection, and the answers and
  // requests the server had made for it (megabytes), for ever: a thousand such clients took every
  // connection of the API and gigabytes of its memory.
  const tmp = tempDir('command-idle');
  const log = createLogger('command-api', 'silent');
  const api = await issuingApi(join(tmp.dir, 'commands.jsonl'), log);
  const open = (): Promise<{ socket: ReturnType<typeof connect>; closed: Promise<number> }> =>
    new Promise((resolve, reject) => {
      const socket = connect(api.port, '127.0.0.1');
      socket.on('error', () => undefined);
      const closed = new Promise<number>((r) => socket.once('close', () => r(performance.now())));
      socket.once('connect', () => resolve({ socket, closed }));
      socket.once('error', reject);
    });
  const sockets: ReturnType<typeof connect>[] = [];
  try {
    // A listing of about 8 MB: read at 300 kB/s it takes longer than the idle timeout.
    const now = Date.now();
    const big = 'p'.repeat(63_000);
    const records = Array.from({ length: 130 }, (_, i) => ({ commandId: `cmd-big-${i}`, deviceId: 'pump-1', command: 'reboot', params: big, issuedAt: now, expiresAt: now + 60_000, state: 'sent' as const, attempts: 1, updatedAt: now }));
    for (const r of records) api.store.add([r]);

    const stalled = await open();
    sockets.push(stalled.socket);
    stalled.socket.pause(); // reads nothing
    const start = performance.now();
    // Answers of more bytes than the kernel's buffers on both sides hold (about 50 MB of 401s): with
    // fewer, a machine whose buffers took every answer let the server finish writing, and then close
    // the connection with a FIN the paused client never reads, so it never saw the close.
    for (let i = 0; i < 500; i++) stalled.socket.write('GET /v1/commands HTTP/1.1\r\nHost: api\r\n\r\n'.repeat(1000));

    const reader = await open();
    sockets.push(reader.socket);
    reader.socket.pause();
    reader.socket.write(`GET /v1/commands?limit=1000 HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`);
    const got: Buffer[] = [];
    let size = 0;
    let expected: number | undefined;
    const readerStart = performance.now();
    while (expected === undefined || size < expected) {
      const c = reader.socket.read() as Buffer | null;
      // At most about 300 kB/s.
      await new Promise((r) => setTimeout(r, c === null ? 50 : c.length / 300));
      if (c !== null) {
        got.push(c);
        size += c.length;
      }
      const head = Buffer.concat(got).toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (expected === undefined && end >= 0) expected = end + 4 + Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1]);
      if (performance.now() - readerStart > 120_000) assert.fail(`the listing was not all read within 2 minutes: ${size} bytes of ${expected}`);
      assert.ok(!reader.socket.destroyed || (expected !== undefined && size >= expected), `the slow reader was cut off after ${size} bytes of ${expected}`);
    }
    const text = Buffer.concat(got).toString('utf8');
    const listing = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { commands: unknown[]; truncated?: boolean };
    assert.equal(listing.commands.length, 130, 'the whole listing, intact');
    assert.ok(performance.now() - readerStart > TIMINGS.commandApiIdleTimeoutMs, 'read for longer than the idle timeout');

    // Node looks at a connection's idleness once per timeout, and takes a write still going (its
    // queue changed since the last look) as progress: closed at twice the timeout, give or take; on
    // a busy machine the server is still answering the pipelined requests into its buffers for a
    // while (a CI run saw it open at three times the timeout). The bound only tells a hang from that.
    const bound = 6 * TIMINGS.commandApiIdleTimeoutMs;
    const cut = await Promise.race([stalled.closed, new Promise<undefined>((r) => setTimeout(r, Math.max(0, start + bound - performance.now())))]);
    assert.ok(cut !== undefined, `a connection whose client read nothing was still open after ${bound} ms`);
    assert.equal((await fetch(`http://127.0.0.1:${api.port}/healthz`)).status, 200);
  } finally {
    for (const s of sockets) s.destroy();
    await api.close();
    tmp.cleanup();
  }
});

test(`a client that reads none of a listing but keeps sending bytes (empty lines) loses its connection all the same, once nothing of it has been taken for TIMINGS.commandApiIdleTimeoutMs`, async () => {
  // Node's server.timeout counts what the client sends as activity: an empty line every few seconds
  // (which the parser skips) kept a connection whose listing nobody read, and the listing, for ever.
  const timings = TIMINGS as unknown as Record<string, number>;
  const saved = timings.commandApiIdleTimeoutMs as number;
  timings.commandApiIdleTimeoutMs = 1_000;
  const tmp = tempDir('command-stuck');
  const log = createLogger('command-api', 'silent');
  const api = await issuingApi(join(tmp.dir, 'commands.jsonl'), log);
  let stalled: Awaited<ReturnType<typeof pipelinedUnread>> | undefined;
  try {
    // A listing of about 8 MB, more than the kernel's buffers take.
    const now = Date.now();
    const big = 'p'.repeat(63_000);
    for (let i = 0; i < 130; i++) api.store.add([{ commandId: `cmd-big-${i}`, deviceId: 'pump-1', command: 'reboot', params: big, issuedAt: now, expiresAt: now + 60_000, state: 'sent' as const, attempts: 1, updatedAt: now }]);
    stalled = await pipelinedUnread(api.port, `GET /v1/commands?limit=1000 HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`, 1);
    const bound = 5 * timings.commandApiIdleTimeoutMs;
    const closed = await Promise.race([stalled.closed, new Promise<undefined>((r) => setTimeout(r, bound))]);
    assert.ok(closed !== undefined, `a connection whose client read none of its listing was still open ${bound} ms later`);
  } finally {
    timings.commandApiIdleTimeoutMs = saved;
    stalled?.destroy();
    await api.close();
    tmp.cleanup();
  }
});

test('a body is taken as JSON by its media type, in any case and with parameters (RFC 9110 §8.3.1); another type, one that merely begins with application/json too, is 400 API_INVALID_BODY', async () => {
  const tmp = tempDir('command-content-type');
  const api = await issuingApi(join(tmp.dir, 'commands.jsonl'), createLogger('command-api', 'silent'));
  const postAs = (type: string) =>
    fetch(`http://127.0.0.1:${api.port}/v1/commands`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': type },
      body: JSON.stringify({ deviceId: 'pump-1', command: 'reboot' }),
    });
  try {
    for (const type of ['application/json', 'Application/JSON', 'application/json; charset=utf-8', 'APPLICATION/JSON;charset="UTF-8"', ' application/json ']) {
      const res = await postAs(type);
      assert.equal(res.status, 202, type);
    }
    for (const type of ['application/json-seq', 'application/jsonx', 'application/json+zip', 'text/plain', 'application/x-www-form-urlencoded']) {
      const res = await postAs(type);
      assert.equal(res.status, 400, type);
      assert.equal(((await res.json()) as { code: string }).code, 'API_INVALID_BODY', type);
    }
    assert.equal([...api.store.all()].length, 5, 'a command for each body taken, none for the others');
  } finally {
    await api.close();
    tmp.cleanup();
  }
});

test('a request target the URL parser refuses is 400 API_INVALID_REQUEST before any credential is looked at, not an internal error', async () => {
  const { api, lines } = await failingApi();
  try {
    // Node's parser takes these; the URL parser reads `//…` as a host, and refuses them.
    for (const target of ['//[', '//[::1', '//x:99999/v1/commands']) {
      const r = await rawRequest(api.port, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      assert.deepEqual([r.status, r.body.code], [400, 'API_INVALID_REQUEST'], target);
    }
    assert.equal(ERRORS.API_INVALID_REQUEST.http, 400);
    assert.equal(lines.filter((l) => l.code === 'API_INTERNAL').length, 0, 'no internal error logged');
    assert.equal((await fetch(`http://127.0.0.1:${api.port}/healthz`)).status, 200, 'still up');
  } finally {
    await api.close();
  }
});

test('a group named after an Object.prototype member is an unknown group (400 API_UNKNOWN_GROUP), not an internal error', async () => {
  const { api, lines } = await failingApi();
  try {
    for (const group of ['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty']) {
      const res = await post(api.port, { group, command: 'reboot' });
      const body = (await res.json()) as { code: string };
      assert.deepEqual([res.status, body.code], [400, 'API_UNKNOWN_GROUP'], group);
    }
    assert.equal(lines.filter((l) => l.code === 'API_INTERNAL').length, 0, 'no internal error logged');
  } finally {
    await api.close();
  }
});

test('a body of thousands of unknown keys is refused naming a few, not each of them (every issue text cut at LIMITS.contractIssueMaxChars)', async () => {
  const { api } = await failingApi();
  try {
    // zod names every unknown key of a strict object in one issue: the answer (and its log line)
    // carried all of them, some 40 KB for a body the API takes.
    const body: Record<string, unknown> = { deviceId: 'pump-1', command: 'ping' };
    for (let i = 0; i < 4000; i++) body[`unknown${i}`] = 1;
    const res = await post(api.port, body);
    const text = await res.text();
    assert.equal(res.status, 400, text.slice(0, 200));
    const answer = JSON.parse(text) as { code: string; message: string; details: { issues: Array<{ message: string }> } };
    assert.equal(answer.code, 'API_INVALID_BODY');
    assert.match(answer.message, /unknown0/);
    assert.ok(text.length < 4096, `${text.length} bytes of answer`);
  } finally {
    await api.close();
  }
});

test('a list limit that is no whole number from 1 to 1000 is 400 API_INVALID_BODY, not another limit put in its place', async () => {
  const { api, lines } = await failingApi();
  const list = (query: string) => fetch(`http://127.0.0.1:${api.port}/v1/commands?${query}`, { headers: { authorization: `Bearer ${TOKEN}` } });
  try {
    // limit=0 listed 100 commands, limit=-5 one, limit=abc 100: what was asked for, silently changed.
    for (const limit of ['0', '-5', 'abc', '1.5', '1001', '', '1e3x', '0x10']) {
      const res = await list(`limit=${limit}`);
      const body = (await res.json()) as { code: string; message: string };
      assert.deepEqual([res.status, body.code], [400, 'API_INVALID_BODY'], `limit=${limit}`);
      assert.match(body.message, /limit/, `limit=${limit}`);
    }
    for (const query of ['limit=1', 'limit=1000', 'limit=10&deviceId=pump-1', 'deviceId=pump-1']) assert.equal((await list(query)).status, 200, query);
    assert.equal(lines.filter((l) => l.code === 'API_INTERNAL').length, 0, 'no internal error logged');
  } finally {
    await api.close();
  }
});

test('a request sent again with its Idempotency-Key gets the commands it made, also after a restart; another body under the key is 422; keys are per caller', async () => {
  const tmp = tempDir('command-idempotency');
  const journal = join(tmp.dir, 'commands.jsonl');
  const log = createLogger('command-api', 'silent');
  const start = () => issuingApi(journal, log);
  const send = (port: number, key: string | string[] | undefined, body: unknown, token = TOKEN) =>
    requestFrom(`http://127.0.0.1:${port}/v1/commands`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(key === undefined ? {} : { 'idempotency-key': key as string }) },
      body,
    });
  const ids = (a: { body: any }) => (a.body.commands as { commandId: string }[]).map((c) => c.commandId);
  const body = { deviceIds: ['pump-1', 'pump-2'], command: 'reboot' };
  let api = await start();
  try {
    const first = await send(api.port, '"retry-1"', body);
    assert.equal(first.status, 202);
    assert.equal(ids(first).length, 2);
    const again = await send(api.port, '"retry-1"', body);
    assert.equal(again.status, 202);
    assert.deepEqual(ids(again), ids(first), 'the same commands, none new');
    assert.equal([...api.store.all()].length, 2);
    const bare = await send(api.port, 'retry-1', body);
    assert.deepEqual(ids(bare), ids(first), 'the bare key is the same key');
    const changed = await send(api.port, '"retry-1"', { ...body, command: 'restart' });
    assert.equal(changed.status, 422);
    assert.equal(changed.body.code, 'API_IDEMPOTENCY_KEY_REUSED');
    const someoneElse = await send(api.port, '"retry-1"', body, 'other-token');
    assert.equal(someoneElse.status, 202);
    assert.equal(ids(someoneElse).filter((id) => ids(first).includes(id)).length, 0, "another caller's key is its own");
    const escaped = await send(api.port, '"a\\"b\\\\c"', { deviceId: 'pump-3', command: 'reboot' });
    assert.equal(escaped.status, 202);
    assert.equal([...api.store.all()].length, 5);
    for (const bad of ['"unterminated', '""', 'two, keys', `"${'k'.repeat(256)}"`, 'é']) {
      const r = await send(api.port, bad, body);
      assert.equal(r.status, 400, bad);
      assert.equal(r.body.code, 'API_IDEMPOTENCY_KEY_INVALID', bad);
    }
    assert.equal([...api.store.all()].length, 5, 'nothing sent for a refused key');
    await api.close();
    api = await start();
    const afterRestart = await send(api.port, '"retry-1"', body);
    assert.equal(afterRestart.status, 202);
    assert.deepEqual(ids(afterRestart), ids(first), 'the journal keeps the key with its commands');
    assert.equal((await send(api.port, '"a\\"b\\\\c"', { deviceId: 'pump-3', command: 'reboot' })).status, 202);
    assert.equal([...api.store.all()].length, 5);
  } finally {
    await api.close();
    tmp.cleanup();
  }
});

test('a command to many devices is answered with its params once, not once per device: the answer grows with the devices by their ids and states only', async () => {
  // Each device's command was answered whole, the request's params in each: 200 devices and params
  // of 50 KB made an answer of 10 MB, built in memory, for a request of 52 KB.
  const tmp = tempDir('command-api-fleet-answer');
  const log = createLogger('command-api', 'silent');
  const api = await issuingApi(join(tmp.dir, 'commands.jsonl'), log);
  const params = { blob: 'p'.repeat(50_000), pct: 30 };
  const deviceIds = Array.from({ length: 200 }, (_, i) => `pump-${i}`);
  const send = (key: string) =>
    requestFrom(`http://127.0.0.1:${api.port}/v1/commands`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', 'idempotency-key': key },
      body: { deviceIds, command: 'open_valve', params },
    });
  try {
    const first = await send('fleet-1');
    assert.equal(first.status, 202, JSON.stringify(first.body).slice(0, 200));
    // As the replay of the request with its Idempotency-Key is answered too.
    const again = await send('fleet-1');
    assert.equal(again.status, 202);
    for (const answer of [first, again]) {
      const bytes = Buffer.byteLength(JSON.stringify(answer.body));
      assert.ok(bytes < JSON.stringify(params).length + deviceIds.length * 400, `${bytes} bytes answered`);
      const body = answer.body as { params: unknown; commands: Array<Record<string, unknown>> };
      assert.deepEqual(body.params, params, 'the params, once');
      assert.deepEqual(
        body.commands.map((c) => c.deviceId),
        deviceIds,
        'a command for each device, in the order asked',
      );
      for (const c of body.commands) {
        assert.equal(c.params, undefined, 'no params per device');
        const stored = api.store.get(c.commandId as string);
        assert.ok(stored, `${String(c.commandId)} is kept`);
        assert.deepEqual(stored.params, params);
        assert.deepEqual(
          { ...c },
          {
            commandId: stored.commandId,
            deviceId: stored.deviceId,
            command: 'open_valve',
            state: 'queued',
            issuedAt: new Date(stored.issuedAt).toISOString(),
            expiresAt: new Date(stored.expiresAt).toISOString(),
            attempts: 0,
          },
        );
      }
    }
    assert.deepEqual(
      (again.body.commands as Array<{ commandId: string }>).map((c) => c.commandId),
      (first.body.commands as Array<{ commandId: string }>).map((c) => c.commandId),
    );
    // A command without params is answered without any.
    const bare = await post(api.port, { deviceIds: ['pump-1', 'pump-2'], command: 'reboot' });
    const bareBody = (await bare.json()) as Record<string, unknown>;
    assert.equal(bare.status, 202);
    assert.equal('params' in bareBody, false);
    assert.equal((bareBody.commands as unknown[]).length, 2);
  } finally {
    await api.close();
    api.store.flush();
    tmp.cleanup();
  }
});

test("the console reads a command sent with its params, given once beside the commands, and from a command API that gave them per command", async () => {
  const tmp = tempDir('command-api-console-send');
  const api = await issuingApi(join(tmp.dir, 'commands.jsonl'), createLogger('command-api', 'silent'));
  // As a command API of before answered: each command whole, its params in it.
  const now = new Date().toISOString();
  const earlier = createServer((req, res) => {
    req.resume();
    const c = { commandId: 'cmd-old-1', deviceId: 'pump-1', command: 'open_valve', params: { pct: 30 }, state: 'queued', issuedAt: now, expiresAt: now, attempts: 0 };
    res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ commands: [c] }));
  });
  await new Promise<void>((r) => earlier.listen(0, '127.0.0.1', r));
  try {
    const sent = await new CommandClient(`http://127.0.0.1:${api.port}`).send('pump-1', { command: 'open_valve', params: { pct: 30 } }, TOKEN);
    const stored = api.store.get(sent.commandId);
    assert.ok(stored);
    assert.deepEqual(sent, {
      commandId: stored.commandId,
      deviceId: 'pump-1',
      command: 'open_valve',
      params: { pct: 30 },
      state: 'queued',
      issuedAt: stored.issuedAt,
      expiresAt: stored.expiresAt,
      attempts: 0,
      updatedAt: stored.issuedAt,
    });
    const bare = await new CommandClient(`http://127.0.0.1:${api.port}`).send('pump-1', { command: 'reboot' }, TOKEN);
    assert.equal('params' in bare, false);
    const old = await new CommandClient(`http://127.0.0.1:${(earlier.address() as AddressInfo).port}`).send('pump-1', { command: 'open_valve', params: { pct: 30 } }, TOKEN);
    assert.deepEqual([old.commandId, old.params], ['cmd-old-1', { pct: 30 }]);
  } finally {
    await api.close();
    await new Promise((r) => earlier.close(r));
    api.store.flush();
    tmp.cleanup();
  }
});

test('the console reads at most LIMITS.consoleCommandApiAnswerMaxBytes of an answer of the command API, and says so past it', async () => {
  // An answer was read whole into memory, however large: a command API gone wrong (or another
  // server at CONSOLE_COMMAND_API_URL) streaming without end filled the console's memory.
  const limits = LIMITS as unknown as Record<string, number>;
  const saved = limits.consoleCommandApiAnswerMaxBytes as number;
  limits.consoleCommandApiAnswerMaxBytes = 64 * 1024;
  let sent = 0;
  const endless = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('{"commands": [');
    const more = (): void => {
      while (sent < 64 * 1024 * 1024 && res.write(`${' '.repeat(16 * 1024)}`)) sent += 16 * 1024;
      if (sent < 64 * 1024 * 1024 && !res.destroyed) res.once('drain', more);
      else res.end(']}');
    };
    more();
  });
  await new Promise<void>((r) => endless.listen(0, '127.0.0.1', r));
  try {
    const client = new CommandClient(`http://127.0.0.1:${(endless.address() as AddressInfo).port}`);
    await assert.rejects(client.list('pump-1', TOKEN, 10), (err: Error & { code?: string }) => err.code === 'CONSOLE_COMMAND_API_FAILED' && /longer than 65536 bytes/.test(err.message));
    assert.ok(sent < 16 * 1024 * 1024, `${sent} bytes sent: the answer was not read on`);
  } finally {
    limits.consoleCommandApiAnswerMaxBytes = saved;
    endless.closeAllConnections();
    await new Promise((r) => endless.close(r));
  }
});

test("a device's result is answered with its DEL, C1 and bidi controls as JSON escapes: read with curl, it never drives the operator's terminal", async () => {
  const tmp = tempDir('command-api-terminal');
  const log = createLogger('command-api', 'silent');
  const store = new CommandStore(join(tmp.dir, 'commands.jsonl'), log);
  // As the dispatcher records a device's response: the result is the device's to choose.
  const result = { out: 'ok\u009b2J\u001b]0;t\u0007\u202e', lines: ['\u007f', '\u2066x\u2069'] };
  const now = Date.now();
  store.put({ commandId: 'cmd-t1', deviceId: 'pump-1', command: 'reboot', issuedAt: now, expiresAt: now + 60_000, state: 'completed', attempts: 1, sentAt: now, response: { status: 'completed', result, at: now }, updatedAt: now });
  const api = await operatorApi({} as unknown as CommandDispatcher, store, log);
  try {
    const res = await fetch(`http://127.0.0.1:${api.port}/v1/commands/cmd-t1`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(res.status, 200);
    const text = await res.text();
    // eslint-disable-next-line no-control-regex
    assert.doesNotMatch(text, /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/, text);
    assert.deepEqual((JSON.parse(text) as { response: { result: unknown } }).response.result, result);
  } finally {
    await api.close();
    store.flush();
    tmp.cleanup();
  }
});

test(`a list is answered within LIMITS.commandListMaxBytes: the newest commands that fit, saying more were left out`, async () => {
  // Each command is listed whole, its params (up to 64 KiB) and its device's result (up to 64 Ki
  // characters, six times that as C1 controls escaped): 1,000 of them made an answer of hundreds of
  // megabytes, built whole in memory and held there for as long as the caller took to read it. Any
  // credential may list: a viewer not reading a few such answers held gigabytes.
  const tmp = tempDir('command-api-list-bytes');
  const log = createLogger('command-api', 'silent');
  const store = new CommandStore(join(tmp.dir, 'commands.jsonl'), log);
  const now = Date.now();
  const params = { blob: 'p'.repeat(60_000) };
  const result = '\u0085'.repeat(60_000);
  const n = 400;
  for (let i = 0; i < n; i++) {
    store.put({ commandId: `cmd-big-${i}`, deviceId: 'pump-1', command: 'reboot', params, issuedAt: now, expiresAt: now + 60_000, state: 'completed', attempts: 1, response: { status: 'completed', result, at: now }, updatedAt: now + i });
  }
  store.flush();
  const api = await operatorApi({} as unknown as CommandDispatcher, store, log);
  try {
    const res = await fetch(`http://127.0.0.1:${api.port}/v1/commands?limit=1000`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.ok(Buffer.byteLength(text) <= LIMITS.commandListMaxBytes, `${Buffer.byteLength(text)} bytes answered`);
    const body = JSON.parse(text) as { commands: { commandId: string }[]; truncated?: boolean; total?: number };
    assert.equal(body.truncated, true);
    assert.equal(body.total, n, 'how many the API keeps of what was asked for, listed or not');
    assert.ok(body.commands.length >= 1 && body.commands.length < n);
    assert.equal(body.commands[0]?.commandId, `cmd-big-${n - 1}`, 'the newest first');
    // Within the bound, the answer says nothing more.
    const few = (await (await fetch(`http://127.0.0.1:${api.port}/v1/commands?limit=2`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { commands: unknown[]; truncated?: boolean; total?: number };
    assert.deepEqual([few.commands.length, few.truncated, few.total], [2, undefined, n]);
    const other = (await (await fetch(`http://127.0.0.1:${api.port}/v1/commands?deviceId=pump-2`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { commands: unknown[]; total?: number };
    assert.deepEqual([other.commands.length, other.total], [0, 0]);
  } finally {
    await api.close();
    tmp.cleanup();
  }
});

test('listings being written at once hold at most LIMITS.commandApiListingsHeldMaxBytes: past it 503 API_BUSY with Retry-After, and room comes back as they go', async () => {
  // Each listing was built whole (up to LIMITS.commandListMaxBytes) and held until its caller read
  // it: any credential, a viewer's, not reading a listing on each of 1,000 connections held 16 GiB.
  const tmp = tempDir('command-api-listings-held');
  const log = createLogger('command-api', 'silent');
  const store = new CommandStore(join(tmp.dir, 'commands.jsonl'), log);
  const now = Date.now();
  for (let i = 0; i < 130; i++) store.put({ commandId: `cmd-held-${i}`, deviceId: 'pump-1', command: 'reboot', params: { blob: 'p'.repeat(63_000) }, issuedAt: now, expiresAt: now + 60_000, state: 'sent', attempts: 1, updatedAt: now + i });
  store.flush();
  const limits = LIMITS as unknown as Record<string, number>;
  const saved = limits.commandApiListingsHeldMaxBytes as number;
  limits.commandApiListingsHeldMaxBytes = LIMITS.commandListMaxBytes + 1;
  const api = await operatorApi({} as unknown as CommandDispatcher, store, log);
  const reader = connect(api.port, '127.0.0.1');
  reader.on('error', () => undefined);
  try {
    reader.pause(); // reads nothing: its listing stays held
    reader.write(`GET /v1/commands?limit=1000 HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`);
    const list = () => fetch(`http://127.0.0.1:${api.port}/v1/commands?limit=1`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const busy = await eventually(async () => {
      const r = await list();
      return r.status === 503 ? r : undefined;
    });
    assert.equal(((await busy.json()) as { code: string }).code, 'API_BUSY');
    assert.ok(Number(busy.headers.get('retry-after')) >= 1, 'Retry-After');
    reader.destroy();
    await eventually(async () => (await list()).status === 200);
  } finally {
    limits.commandApiListingsHeldMaxBytes = saved;
    reader.destroy();
    await api.close();
    tmp.cleanup();
  }
});

test('a listing serialises each command once, and answers the very JSON of the listing as a whole: escaped, truncated or not', async () => {
  // Each command was serialised to measure it against LIMITS.commandListMaxBytes, then all again to
  // be sent: up to 16 MiB of JSON made twice per answer.
  const tmp = tempDir('command-api-list-once');
  const log = createLogger('command-api', 'silent');
  const store = new CommandStore(join(tmp.dir, 'commands.jsonl'), log);
  const now = Date.now();
  let serialised = 0;
  const blob = 'p'.repeat(60_000);
  // The params of every command, counting each time a command is made JSON.
  const params = { toJSON: () => (serialised++, { blob }) } as unknown as { blob: string };
  const result = { out: '\u0085\u202e'.repeat(30_000) };
  const n = 60;
  for (let i = 0; i < n; i++) {
    store.put({ commandId: `cmd-once-${i}`, deviceId: 'pump-1', command: 'reboot', params, issuedAt: now, expiresAt: now + 60_000, state: 'completed', attempts: 1, sentAt: now, response: { status: 'completed', result, at: now }, updatedAt: now + i });
  }
  store.flush();
  const api = await operatorApi({} as unknown as CommandDispatcher, store, log);
  const list = async (limit: number) => {
    serialised = 0;
    const res = await fetch(`http://127.0.0.1:${api.port}/v1/commands?limit=${limit}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/json');
    const text = await res.text();
    assert.equal(Number(res.headers.get('content-length')), Buffer.byteLength(text));
    return { text, body: JSON.parse(text) as { commands: Array<{ commandId: string }>; truncated?: true }, serialised };
  };
  try {
    for (const [limit, truncated] of [[1000, true], [3, false]] as const) {
      const { text, body, serialised: made } = await list(limit);
      assert.equal(body.truncated, truncated ? true : undefined, `limit=${limit}`);
      assert.ok(Buffer.byteLength(text) <= LIMITS.commandListMaxBytes);
      // The very text the whole listing makes, each command as GET /v1/commands/{id} answers it.
      const each = await Promise.all(
        body.commands.map(async (c) => JSON.parse(await (await fetch(`http://127.0.0.1:${api.port}/v1/commands/${c.commandId}`, { headers: { authorization: `Bearer ${TOKEN}` } })).text()) as unknown),
      );
      const whole = terminalText(JSON.stringify({ commands: each, ...(truncated ? { truncated: true } : {}), total: n }));
      // Compared as a whole, not by assert's diff: of two 16 MiB texts that takes many minutes.
      assert.ok(text === whole, `limit=${limit}: the listing is not the JSON of its commands (${text.length} and ${whole.length} characters; ${text.slice(-80)})`);
      assert.deepEqual(
        body.commands.map((c) => c.commandId),
        Array.from({ length: body.commands.length }, (_, i) => `cmd-once-${n - 1 - i}`),
      );
      // Each command listed made JSON once, and when the listing is cut, the one that did not fit too.
      assert.equal(made, body.commands.length + (truncated ? 1 : 0), `limit=${limit}: ${made} serialisations for ${body.commands.length} commands`);
    }
  } finally {
    await api.close();
    tmp.cleanup();
  }
});
