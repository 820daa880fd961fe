import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { probeEventLoop } from '../../shared/metrics/event-loop.ts';
import { ServiceMetrics } from '../../shared/metrics/registry.ts';
import { startMetricsServer } from '../../shared/metrics/server.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { pipelinedUnread, rawRequest, readSlowly } from '../helpers/http-from.ts';

describe('ServiceMetrics', () => {
  const exercise = (m: ServiceMetrics) => {
    const c = m.counter('things_total', 'Things.', ['kind']);
    c.inc({ kind: 'a' }, 2);
    c.labels('b').inc();
    m.counter('plain_total', 'Plain.').inc(3);
    m.gauge('level', 'Level.').set(7);
    const h = m.histogram('wait_seconds', 'Waits.');
    h.observe(0.2);
    h.startTimer()();
    return m.registry.metrics();
  };

  it('counts and serves what the services record', async () => {
    const text = await exercise(new ServiceMetrics('svc', { processMetrics: false }));
    assert.match(text, /^fieldstream_things_total\{kind="a",service="svc"\} 2$/m);
    assert.match(text, /^fieldstream_things_total\{kind="b",service="svc"\} 1$/m);
    assert.match(text, /^fieldstream_plain_total\{service="svc"\} 3$/m);
    assert.match(text, /^fieldstream_level\{service="svc"\} 7$/m);
    assert.match(text, /^fieldstream_wait_seconds_count\{service="svc"\} 2$/m);
  });

  it('with counting off, records nothing and holds no series (what *_METRICS_PORT=off means)', async () => {
    const m = new ServiceMetrics('svc', { counting: false });
    assert.equal(m.counting, false);
    assert.equal((await exercise(m)).trim(), '');
    assert.equal((await m.registry.getMetricsAsJSON()).length, 0);
  });
});

const busyFor = (ms: number) => {
  const until = performance.now() + ms;
  while (performance.now() < until);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the event-loop probe', () => {
  it('records a stall as one late tick, and nothing once stopped', async () => {
    const seen: number[] = [];
    const stop = probeEventLoop({ observe: (s) => seen.push(s) }, 20);
    await sleep(70);
    busyFor(300);
    await sleep(70);
    stop();
    const atStop = seen.length;
    await sleep(60);
    assert.equal(seen.length, atStop, 'no observation after stop');
    const stalls = seen.filter((s) => s >= 0.25);
    assert.equal(stalls.length, 1, `one tick late by the stall: ${seen.map((s) => s.toFixed(3)).join(' ')}`);
    assert.ok((stalls[0] as number) < 0.5);
  });

  it('is served, cumulative, by a service with process metrics (every scrape sees every stall)', async () => {
    const m = new ServiceMetrics('svc');
    const server = await startMetricsServer({ metrics: m, host: '127.0.0.1', port: 0, setting: 'GATEWAY_METRICS_PORT', log: createLogger('test', 'silent') });
    try {
      const over = async () => {
        const text = await (await fetch(`${server.url}/metrics`)).text();
        const n = (le: string) => Number(text.match(new RegExp(`^fieldstream_event_loop_delay_seconds_bucket\\{le="${le}",service="svc"\\} (\\d+)$`, 'm'))?.[1]);
        return n('\\+Inf') - n('0.25');
      };
      await sleep(250);
      busyFor(400);
      await sleep(250);
      assert.equal(await over(), 1);
      assert.equal(await over(), 1, 'a second scrape still sees it');
    } finally {
      await server.close();
    }
  });
});

describe('the metrics server and clients that stop reading', () => {
  it('makes the answers to requests pipelined on a connection one at a time, and closes a connection whose client reads none of them once they have been stuck for TIMINGS.metricsAnswerStallMs, and logs it', async () => {
    // Answered as they were parsed, the thousand requests of one 64 KiB read each had the service's
    // metrics collected and held at once, and the connection, reading nothing, stayed for ever.
    const timings = TIMINGS as unknown as Record<string, number>;
    const saved = timings.metricsAnswerStallMs as number;
    timings.metricsAnswerStallMs = 500;
    const m = new ServiceMetrics('svc', { processMetrics: false });
    // Some 200 KB of metrics.
    const g = m.gauge('level', 'Level.', ['kind']);
    for (let i = 0; i < 2_000; i++) g.set({ kind: `kind-${i}` }, i);
    let collected = 0;
    const metrics = m.registry.metrics.bind(m.registry);
    m.registry.metrics = () => {
      collected++;
      return metrics();
    };
    const logs = new LogCapture();
    const server = await startMetricsServer({ metrics: m, host: '127.0.0.1', port: 0, setting: 'GATEWAY_METRICS_PORT', log: logs.logger });
    const stalled = await pipelinedUnread(server.port, 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', 2_000);
    try {
      const bound = 5 * timings.metricsAnswerStallMs;
      const closed = await Promise.race([stalled.closed, sleep(bound)]);
      assert.ok(closed !== undefined, `a connection whose client read none of its answers was still open ${bound} ms after its requests`);
      assert.ok(collected <= 100, `${collected} answers of 200 KB made for a client that read none of them`);
      // Told, with whose connection it was and what it left unsent: without a line a client holding
      // connections on purpose, or a scraper that hung, showed only as gaps.
      const told = logs.lines.filter((l) => l.code === 'HTTP_CLIENT_NOT_READING');
      assert.equal(told.length, 1, 'the closing logged once');
      assert.equal(told[0]?.remoteAddress, '127.0.0.1');
      assert.ok(Number(told[0]?.unsentBytes) > 0);
      // Some 2 MB read at 1 MB/s, for longer than the bound: never stuck.
      const reader = await readSlowly(server.port, 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'.repeat(10), 1024 * 1024, 10);
      assert.ok(reader.ms > 2 * timings.metricsAnswerStallMs, 'read for longer than the bound');
      assert.ok(reader.whole, `a client reading slowly was cut off after ${reader.bytes} bytes`);
      assert.equal(logs.lines.filter((l) => l.code === 'HTTP_CLIENT_NOT_READING').length, 1, 'the slow reader is not logged as stuck');
      assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    } finally {
      timings.metricsAnswerStallMs = saved;
      stalled.destroy();
      await server.close();
    }
  });
});

describe('the metrics server and connections that send nothing', () => {
  it('closes a connection silent before its first request after TIMINGS.metricsIdleBeforeRequestMs, holds at most LIMITS.metricsMaxConnections, and serves once one has gone', async () => {
    // Node's headersTimeout starts with a request's first byte: a connection that sent nothing was
    // held for ever, and the server took any number of them, each a file descriptor of the service.
    const timings = TIMINGS as unknown as Record<string, number>;
    const limits = LIMITS as unknown as Record<string, number>;
    const saved = [timings.metricsIdleBeforeRequestMs as number, limits.metricsMaxConnections as number] as const;
    timings.metricsIdleBeforeRequestMs = 500;
    limits.metricsMaxConnections = 3;
    const server = await startMetricsServer({ metrics: new ServiceMetrics('svc', { processMetrics: false }), host: '127.0.0.1', port: 0, setting: 'GATEWAY_METRICS_PORT', log: createLogger('test', 'silent') });
    const sockets: Socket[] = [];
    const open = async () => {
      const s = connect(server.port, '127.0.0.1');
      s.on('error', () => undefined);
      sockets.push(s);
      await new Promise<void>((resolve) => s.once('connect', () => resolve()));
      const start = performance.now();
      return { closed: new Promise<number>((resolve) => s.once('close', () => resolve(performance.now() - start))) };
    };
    const within = (p: Promise<number>, ms: number): Promise<number | undefined> => Promise.race([p, sleep(ms).then(() => undefined)]);
    try {
      const silent = [await open(), await open(), await open()];
      assert.ok((await within((await open()).closed, 300)) !== undefined, 'one past the bound is closed as it is accepted');
      for (const { closed } of silent) {
        const ms = await within(closed, 3_000);
        assert.ok(ms !== undefined, 'a connection that sent nothing was still open 3 s later');
        assert.ok(ms >= 400, `closed after ${ms} ms, before its time`);
      }
      assert.equal((await fetch(`${server.url}/healthz`)).status, 200, 'served again once they have gone');
    } finally {
      [timings.metricsIdleBeforeRequestMs, limits.metricsMaxConnections] = saved;
      for (const s of sockets) s.destroy();
      await server.close();
    }
  });
});

describe('the metrics server and a page rebound to its address', () => {
  it('answers only requests naming localhost, an IP address or one of its names (HTTP_HOST_NOT_SERVED, 421), /metrics, /healthz and /readyz alike', async () => {
    // It asks for no credential: a page whose name was made to answer with 127.0.0.1 read the
    // service's metrics (its devices, its errors) as its own origin's.
    const server = await startMetricsServer({
      metrics: new ServiceMetrics('svc', { processMetrics: false }),
      host: '127.0.0.1',
      port: 0,
      setting: 'GATEWAY_METRICS_PORT',
      hostNames: { setting: 'GATEWAY_METRICS_HOST_NAMES', names: ['gateway-metrics'] },
      log: createLogger('test', 'silent'),
    });
    try {
      const ask = (path: string, host: string) => rawRequest(server.port, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      for (const path of ['/metrics', '/healthz', '/readyz']) {
        const answer = await ask(path, `rebind.attacker.example:${server.port}`);
        assert.equal(answer.status, 421, `${path}: ${JSON.stringify(answer.body)}`);
        assert.equal(answer.body.code, 'HTTP_HOST_NOT_SERVED');
        assert.match(answer.body.message, /GATEWAY_METRICS_HOST_NAMES/);
      }
      for (const host of ['localhost', `127.0.0.1:${server.port}`, '[::1]', '10.1.2.3:9464', 'gateway-metrics:9464', 'Gateway-Metrics']) {
        assert.equal((await ask('/healthz', host)).status, 200, host);
      }
      assert.equal((await fetch(`${server.url}/metrics`)).status, 200, 'its own URL is served');
      // A second Host line is looked at too (Node keeps only the first in req.headers).
      const twice = await rawRequest(server.port, `GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: rebind.attacker.example\r\nConnection: close\r\n\r\n`);
      assert.equal(twice.status, 421, JSON.stringify(twice.body));
    } finally {
      await server.close();
    }
  });

  it("answers what Node's parser refuses, and an unknown Expect, with a code and its headers (nosniff, no-store), never Node's bare 400 or 417", async () => {
    const server = await startMetricsServer({ metrics: new ServiceMetrics('svc', { processMetrics: false }), host: '127.0.0.1', port: 0, setting: 'GATEWAY_METRICS_PORT', log: createLogger('test', 'silent') });
    try {
      const ours = (h: Record<string, string>) => [h['x-content-type-options'], h['cache-control']];
      const page = await rawRequest(server.port, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
      assert.deepEqual([page.status, ...ours(page.headers)], [200, 'nosniff', 'no-store']);
      const malformed = await rawRequest(server.port, 'GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\n\r\n');
      assert.deepEqual([malformed.status, malformed.body.code, ...ours(malformed.headers)], [400, 'HTTP_MALFORMED', 'nosniff', 'no-store']);
      const tooLarge = await rawRequest(server.port, `GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
      assert.deepEqual([tooLarge.status, tooLarge.body.code, ...ours(tooLarge.headers)], [431, 'HTTP_HEADERS_TOO_LARGE', 'nosniff', 'no-store']);
      const expect = await rawRequest(server.port, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: something-else\r\nConnection: close\r\n\r\n');
      assert.deepEqual([expect.status, expect.body.status, ...ours(expect.headers)], [200, 'alive', 'nosniff', 'no-store']);
    } finally {
      await server.close();
    }
  });
});
