import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ServiceMetrics } from '../../shared/metrics/registry.ts';

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
