import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BenchReport } from '../../bench/lib/results.ts';
import { evaluateTargets } from '../../bench/lib/targets.ts';
import { DATABASE_CEILING } from '../../bench/scenarios/database-ceiling.ts';
import { NODE_RED_PEER } from '../../bench/scenarios/node-red-peer.ts';
import { shortfalls } from '../../bench/scenarios/throughput.ts';
import { tally } from '../../bench/lib/tally.ts';
import { PUBLISH_WINDOW, publishWindowed } from '../../bench/lib/brokers.ts';
import { benchCommand, renderMarkdown, runLine } from '../../bench/lib/report.ts';

const report = (over: { batched?: number; p99?: number; rss?: number; held?: number; database?: number; peer?: number; single?: number; quick?: boolean } = {}): Omit<BenchReport, 'targets'> => ({
  when: '2026-11-22T00:00:00Z',
  machine: { cpus: 2, cpu: 'test', memoryGiB: 24, node: 'v20' },
  quick: over.quick ?? false,
  settings: {},
  results: [
    { scenario: 'batched', clients: 8, readings: 400_000, seconds: 8, readingsPerSecond: over.batched ?? 50_000, lost: 0, duplicated: 0 },
    { scenario: 'one reading per message', clients: 8, readings: 80_000, seconds: 4, readingsPerSecond: 12_000, lost: 0, duplicated: 0 },
    { scenario: DATABASE_CEILING, clients: 1, readings: 800_000, seconds: 1, readingsPerSecond: 700_000, lost: 0, duplicated: 0 },
    { scenario: NODE_RED_PEER, clients: 8, readings: 400_000, seconds: 12, readingsPerSecond: 33_000, lost: 0, duplicated: 0 },
    { scenario: 'latency at half load', clients: 9, readings: 300, p50Ms: 40, p95Ms: 80, p99Ms: over.p99 ?? 200, maxMs: 210, lost: 0, duplicated: 0 },
  ],
  connections: { connections: over.held ?? 10_000, seconds: 80, gatewayRssBeforeMiB: 90, gatewayRssMiB: over.rss ?? 700, kibPerConnection: 62 } as BenchReport['connections'],
  references: { batchedShareOfDatabase: over.database ?? 0.15, batchedVsPeer: over.peer ?? 3, singleVsPeer: over.single ?? 1, batchedShareOfBroker: 0.5, envelopes: 1600, envelopeBytes: 30_000, peerCpu: [], warmUp: { batched: 40_000, peer: 30_000 } },
});

describe('the benchmark report against its targets', () => {
  it('says met at the very target, and by how much a miss fell short', () => {
    assert.deepEqual(evaluateTargets(report()).map((t) => t.verdict), ['met', 'met', 'met', 'met', 'met', 'met', 'met']);
    const missed = evaluateTargets(report({ batched: 35_000, p99: 250, rss: 1126, database: 0.12, peer: 2.4, single: 0.5 }));
    assert.deepEqual(missed.map((t) => t.verdict), ['missed by 30 %', 'met', 'missed by 25 %', 'missed by 10 %', 'missed by 20 %', 'missed by 20 %', 'missed by 50 %']);
    assert.deepEqual(missed.slice(4).map((t) => t.measured), ['12 % of 700,000', "2.40 × the peer's 33,000", "0.50 × the peer's 33,000"]);
    assert.equal(evaluateTargets(report({ held: 9_000 }))[3]?.verdict, 'missed: 9,000 of 10,000 devices');
    // A hair short is still short: "missed by 0 %" would read as met.
    assert.equal(evaluateTargets(report({ batched: 49_999 }))[0]?.verdict, 'missed by under 1 %');
  });

  it('holds a quick run to none of them', () => {
    assert.deepEqual(evaluateTargets(report({ quick: true })), []);
  });
});

describe('a throughput round whose readings were receipted but are not stored', () => {
  it('names each device short of what it sent, with how many of its readings are there', () => {
    const devices = ['b-0', 'b-1', 'b-2', 'b-3'];
    assert.equal(shortfalls({ 'b-0': 49_500, 'b-1': 50_000, 'b-3': 50_000 }, devices, 50_000), 'b-0 49,500 of 50,000; b-2 0 of 50,000');
    assert.equal(shortfalls({ 'b-0': 2, 'b-1': 2 }, ['b-0', 'b-1'], 2), '');
  });
});

describe('readings counted device by device (the latency and sustained loads)', () => {
  it('adds up each device\'s shortfall and excess: one device short and another over do not cancel out', () => {
    assert.deepEqual(tally({ 'p-0': 100, 'p-1': 100 }, { 'p-0': 100, 'p-1': 100 }), { readings: 200, stored: 200, lost: 0, duplicated: 0, off: '' });
    // 200 stored of 200 sent, yet 3 lost and 3 too many.
    assert.deepEqual(tally({ 'p-0': 100, 'p-1': 100 }, { 'p-0': 97, 'p-1': 103 }), { readings: 200, stored: 200, lost: 3, duplicated: 3, off: 'p-0 97 of 100; p-1 103 of 100' });
    // A device with nothing stored is all lost; points of a device that sent nothing are all extra.
    assert.deepEqual(tally({ 'p-0': 5, probe: 2 }, { 'p-0': 5, stray: 1 }), { readings: 7, stored: 6, lost: 2, duplicated: 1, off: 'probe 0 of 2; stray 1 of 0' });
  });

  it('the latency row reports what its load lost, beside the probes it timed', () => {
    const r = report();
    const latency = { scenario: 'latency at half load', clients: 9, readings: 300, p50Ms: 40, p95Ms: 80, p99Ms: 200, maxMs: 210, loadReadings: 1_000_000, lost: 3, duplicated: 0 };
    const md = renderMarkdown({ ...r, results: [latency], connections: undefined, fleet: undefined, targets: [] });
    assert.match(md, /\| latency at half load \| 300 \| 40 ms \| 80 ms \| 200 ms \| 210 ms \| 1,000,000 \| 3 \| 0 \|/);
  });
});

describe('every report says where and how it was run', () => {
  it('opens with the machine and the command that reproduces it', () => {
    const md = renderMarkdown({ ...report(), command: 'npm run bench -- --set EDGE_HOP=unix', connections: undefined, targets: [] });
    assert.equal(md.split('\n')[0], 'Run 2026-11-22T00:00:00Z on 2 cores (test), 24 GiB, Node v20, by `npm run bench -- --set EDGE_HOP=unix`.');
    assert.equal(runLine({ when: 'w', machine: { cpus: 4, cpu: undefined, memoryGiB: 8, node: 'v20.1' } }), 'Run w on 4 cores (CPU unknown), 8 GiB, Node v20.1.');
  });

  it('gives the command as a shell takes it', () => {
    assert.equal(benchCommand([]), 'npm run bench');
    assert.equal(benchCommand(['--long', '--long-minutes', '4', '--set', 'EDGE_HOP=unix']), 'npm run bench -- --long --long-minutes 4 --set EDGE_HOP=unix');
    assert.equal(benchCommand(['--compare', 'NODE_OPTIONS=--max-semi-space-size=32 --trace-gc']), "npm run bench -- --compare 'NODE_OPTIONS=--max-semi-space-size=32 --trace-gc'");
    assert.equal(benchCommand(["--set", "X=it's"]), "npm run bench -- --set 'X=it'\\''s'");
  });
});

describe("the references' publishers (broker ceiling, Node-RED peer)", () => {
  it('keep PUBLISH_WINDOW messages in flight as a rolling window: each PUBACK lets the next go, none waits for a whole round', async () => {
    const pending: Array<() => void> = [];
    const sent: number[] = [];
    const client = {
      publishAsync: (topic: string) => {
        sent.push(Number(topic));
        return new Promise<undefined>((resolve) => pending.push(() => resolve(undefined)));
      },
    } as unknown as Parameters<typeof publishWindowed>[0];
    const done = publishWindowed(client, PUBLISH_WINDOW + 10, (k) => [String(k), 'x']);
    await new Promise((r) => setImmediate(r));
    assert.equal(sent.length, PUBLISH_WINDOW, 'a full window at first');
    pending.shift()?.(); // one PUBACK
    await new Promise((r) => setImmediate(r));
    assert.equal(sent.length, PUBLISH_WINDOW + 1, 'the next goes at once, not after the rest of the round');
    while (pending.length > 0) {
      pending.shift()?.();
      await new Promise((r) => setImmediate(r));
    }
    await done;
    assert.deepEqual(sent, Array.from({ length: PUBLISH_WINDOW + 10 }, (_, k) => k), 'each message once, in order');
  });
});
