import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLogger } from '../../shared/logger.ts';
import { probeEventLoop } from '../../shared/metrics/event-loop.ts';
import { ServiceMetrics } from '../../shared/metrics/registry.ts';
import { startMetricsServer } from '../../shared/metrics/server.ts';

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
