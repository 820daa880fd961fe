import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { bench, REPO } from '../helpers/bench.ts';

// The benchmark's --sink postgres mode in its quick form (bench-quick.test.ts runs its scenarios,
// bench-profile.test.ts --profile and --connections-alone), so that it does not rot unseen again.
// Files of their own: the test runner gives each file 300 s.

/**
 * The side by side of the two stores: each round on a distributor restarted to write to one of them
 * alone, checked to have taken its setting from what it logged since that restart (a fixed tail of
 * its log once lost that line behind the connect lines of its 32 consumers, and the mode failed).
 */
describe('npm run bench -- --sink postgres', () => {
  it('writes the same batched load into InfluxDB and into PostgreSQL, every reading once in each', async () => {
    const r = await bench(['--quick', '--sink', 'postgres']);
    assert.equal(r.code, 0, r.err);
    const report = JSON.parse(readFileSync(join(REPO, 'bench', 'results', 'pipeline-postgres.json'), 'utf8')) as {
      sink: string;
      results: Array<{ scenario: string; clients: number; readings: number; lost: number; duplicated: number }>;
    };
    assert.equal(report.sink, 'postgres');
    assert.deepEqual(
      report.results.map((x) => [x.scenario, x.readings, x.lost, x.duplicated]),
      // 2 clients × 2,000 readings in each of four rounds per store
      [
        ['batched into InfluxDB 1.x (reference)', 16_000, 0, 0],
        ['batched into PostgreSQL', 16_000, 0, 0],
      ],
    );
  });
});
