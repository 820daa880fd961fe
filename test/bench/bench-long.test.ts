import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { bench, failure, REPO } from '../helpers/bench.ts';

// The benchmark's --long mode in its quick form (`npm run test:bench`), in a file of its own: the test
// runner gives each file 300 s, and bench-quick.test.ts with it took 212 s of them in CI.

/**
 * The sustained mode's harness, held for two windows at a small rate: its windows, the database's
 * own time per write (the access log), the readings counted once, and the load written as a fleet
 * writes it, into the database's current shard (each device's timestamps once lay days apart, which
 * kept a cache per device in InfluxDB; docs/performance-sustained.md, "One shard, as a fleet writes").
 */
describe('npm run bench -- --long', () => {
  it('holds a paced load for its windows, counts every reading once and writes one shard', async () => {
    const ran = Date.now();
    const r = await bench(['--long', '--long-minutes', '0.34', '--long-rate', '5000', '--clients', '3']);
    assert.equal(r.code, 0, failure(r));
    const { sustained: s } = JSON.parse(readFileSync(join(REPO, 'bench', 'results', 'pipeline-sustained.json'), 'utf8')) as {
      sustained: { startedAt: string; offeredPerSecond: number; readings: number; lost: number; duplicated: number; shards: number; windows: Array<{ probes: number; storedPerSecond: number; influx: { slowestWriteMs?: number } }>; memory: Array<{ service: string }> };
    };
    assert.equal(s.offeredPerSecond, 4_000); // 80 % of the rate given
    assert.ok(s.readings > 0);
    assert.equal(s.lost, 0);
    assert.equal(s.duplicated, 0);
    // One shard group spans 7 days: two only when the 20 s crossed one's end.
    assert.ok(s.shards >= 1 && s.shards <= 2, `shards: ${s.shards}`);
    assert.equal(s.windows.length, 2);
    // The load's start, to set other traces beside its windows: within this run, 20 s before its end at least.
    const startedAt = Date.parse(s.startedAt);
    assert.ok(startedAt > ran && startedAt <= Date.now() - 20_000, s.startedAt);
    for (const w of s.windows) {
      assert.ok(w.probes > 0);
      assert.ok(w.storedPerSecond > 0);
      assert.equal(typeof w.influx.slowestWriteMs, 'number');
    }
    for (const service of ['distributor', 'gateway-1', 'InfluxDB']) assert.ok(s.memory.some((m) => m.service === service), service);
  });
});
