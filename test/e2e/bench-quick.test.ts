import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { BROKER_CEILING } from '../../bench/scenarios/broker-ceiling.ts';
import { DATABASE_CEILING } from '../../bench/scenarios/database-ceiling.ts';
import { NODE_RED_PEER } from '../../bench/scenarios/node-red-peer.ts';
import type { FleetResult } from '../../bench/scenarios/fleet.ts';
import { bench, failure, REPO } from '../helpers/bench.ts';

/**
 * The benchmark's quick mode, so its harness never rots. It checks counts (nothing lost, nothing
 * twice), never times: the figures belong in docs/performance.md, not in a test.
 */
describe('npm run bench -- --quick', () => {
  it('runs every scenario on the real stack and counts every reading exactly once', async () => {
    const r = await bench(['--quick']);
    assert.equal(r.code, 0, failure(r));
    const report = JSON.parse(readFileSync(join(REPO, 'bench', 'results', 'pipeline.json'), 'utf8')) as {
      quick: boolean;
      results: Array<{ scenario: string; lost: number; duplicated: number; readings: number }>;
      connections: { connections: number; kibPerConnection: number; kibPerConnectionBy: Record<'mallocHeap' | 'smallAnon' | 'otherAnon' | 'files', number>; malloc: string; bare?: { kibPerConnection: number } };
      fleet: FleetResult;
      references: { warmUp: { batched: number; peer: number } };
    };
    assert.equal(report.quick, true);
    // Both sides ran a warm-up round, not counted (its devices' readings are not in any row's count).
    assert.ok(report.references.warmUp.batched > 0 && report.references.warmUp.peer > 0, JSON.stringify(report.references.warmUp));
    // batched (with receipts), with receipts off, metrics on and off, anomaly detection on and off,
    // one per message, the references (database ceiling, broker ceiling, the Node-RED peer), latency, files
    assert.deepEqual(
      report.results.map((r) => r.scenario).slice(0, 10),
      [
        'batched',
        'batched, receipts off (reference)',
        'batched, metrics on, scraped every second',
        'batched, metrics off (reference)',
        'batched, anomaly detection on',
        'batched, anomaly detection off (reference)',
        'one reading per message',
        DATABASE_CEILING,
        BROKER_CEILING,
        NODE_RED_PEER,
      ],
    );
    assert.equal(report.results.length, 12);
    // Each variant ran one round and its reference one (--quick: one pair, receipts and the rounds
    // that restart services alike), as many readings as the batched round.
    const readingsOf = (name: string) => report.results.find((r) => r.scenario === name)?.readings;
    for (const name of report.results.slice(1, 6).map((r) => r.scenario)) assert.equal(readingsOf(name), readingsOf('batched'), name);
    // The broker ceiling republished the envelopes of one batched round: they carried its 2 × 2,000 readings.
    assert.equal(report.results.find((r) => r.scenario === BROKER_CEILING)?.readings, 4_000);
    for (const s of report.results) {
      assert.equal(s.lost, 0, s.scenario);
      assert.equal(s.duplicated, 0, s.scenario);
      assert.ok(s.readings > 0);
    }
    // Every simulated device was welcomed and still connected when memory was measured.
    assert.equal(report.connections.connections, 200);
    // The gateway's memory per connection by kind of mapping (test/unit/bench-proc-stats.test.ts
    // checks the kinds): they cover every mapping, so they add up to its resident memory, read a
    // moment apart.
    const by = report.connections.kibPerConnectionBy;
    const sum = by.mallocHeap + by.smallAnon + by.otherAnon + by.files;
    assert.ok(Math.abs(sum - report.connections.kibPerConnection) <= 10, JSON.stringify(report.connections));
    // The stack's gateway runs on glibc's malloc unless a run preloads another (--set LD_PRELOAD).
    assert.equal(report.connections.malloc, 'glibc');
    // The reference: the same 200 devices held (welcomed) by a bare WSS server after the gateway.
    assert.ok(Number.isFinite(report.connections.bare?.kibPerConnection), JSON.stringify(report.connections));
    // The fleet: every device (each its own EC key and certificate) came through Caddy, sent one
    // reading a second, and each reading is in the database once; none refused, none disconnected.
    const f = report.fleet;
    assert.equal(f.devices, 50);
    // The warm-up's readings are due, sent and stored as the others; only their times are not measured.
    assert.ok(f.warmUpSeconds > 0);
    assert.equal(f.readings, f.devices * (f.warmUpSeconds + f.seconds));
    assert.equal(f.sent, f.readings);
    assert.equal(f.readingsPerFrame, 1);
    // The devices keep nothing they send, and asked for no acks (each connection checked the welcome said so).
    assert.equal(f.acks, 'none');
    assert.equal(f.ackFrames, 0, 'no ack came through Caddy to a device that asked for none');
    assert.equal(f.frames, f.readings, 'each reading in its own frame');
    assert.equal(f.stored, f.readings);
    assert.equal(f.lost, 0);
    assert.equal(f.errors, 0);
    assert.equal(f.closed, 0);
    // The watched device's readings were each looked for: seen (timed) or, past the poller's patience,
    // counted late; the figures of the run are those due after the warm-up, the windows have them all.
    assert.ok(f.latency.samples > 0);
    assert.equal(f.latency.samples + f.latency.late, f.seconds);
    assert.equal(sumWatched(f), f.warmUpSeconds + f.seconds);
    assert.equal(f.edges.reduce((n, e) => n + e.devices, 0), 50);
  });
});

/** Every watched reading, in the windows of the whole load (the warm-up's included). */
const sumWatched = (f: FleetResult) => f.latencyByWindow.reduce((n, w) => n + w.watched, 0);
