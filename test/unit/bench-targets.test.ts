import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BenchReport } from '../../bench/lib/results.ts';
import { evaluateTargets } from '../../bench/lib/targets.ts';

const report = (over: { batched?: number; p99?: number; rss?: number; held?: number; ratio?: number; quick?: boolean } = {}): Omit<BenchReport, 'targets'> => ({
  when: '2026-11-22T00:00:00Z',
  machine: { cpus: 2, cpu: 'test', memoryGiB: 24, node: 'v20' },
  quick: over.quick ?? false,
  settings: {},
  results: [
    { scenario: 'batched', clients: 8, readings: 400_000, seconds: 8, readingsPerSecond: over.batched ?? 50_000, lost: 0, duplicated: 0 },
    { scenario: 'one reading per message', clients: 8, readings: 80_000, seconds: 4, readingsPerSecond: 12_000, lost: 0, duplicated: 0 },
    { scenario: 'latency at half load', clients: 9, readings: 300, p50Ms: 40, p95Ms: 80, p99Ms: over.p99 ?? 200, maxMs: 210, lost: 0, duplicated: 0 },
  ],
  connections: { connections: over.held ?? 10_000, seconds: 80, gatewayRssBeforeMiB: 90, gatewayRssMiB: over.rss ?? 700, kibPerConnection: 62 } as BenchReport['connections'],
  batchedVsRawCeiling: over.ratio ?? 2.5,
});

describe('the benchmark report against its targets', () => {
  it('says met at the very target, and by how much a miss fell short', () => {
    assert.deepEqual(evaluateTargets(report()).map((t) => t.verdict), ['met', 'met', 'met', 'met', 'met']);
    const missed = evaluateTargets(report({ batched: 35_000, p99: 250, rss: 1126, ratio: 0.4 }));
    assert.deepEqual(missed.map((t) => t.verdict), ['missed by 30 %', 'met', 'missed by 25 %', 'missed by 10 %', 'missed by 20 %']);
    assert.equal(evaluateTargets(report({ held: 9_000 }))[3]?.verdict, 'missed: 9,000 of 10,000 devices');
  });

  it('holds a quick run to none of them', () => {
    assert.deepEqual(evaluateTargets(report({ quick: true })), []);
  });
});
