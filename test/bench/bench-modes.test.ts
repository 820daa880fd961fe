import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { bench, failure, REPO } from '../helpers/bench.ts';

// The benchmark's --sink postgres and --compare modes in their quick forms (test/e2e/bench-quick.test.ts
// runs its scenarios, bench-profile.test.ts --profile and --connections-alone), so that none of them
// rots unseen (--sink postgres had): `npm run test:bench` runs this folder before a benchmark is
// changed or run for its figures. Files of their own: the test runner gives each file 300 s.

/**
 * The side by side of the two stores: each round on a distributor restarted to write to one of them
 * alone, checked to have taken its setting from what it logged since that restart (a fixed tail of
 * its log once lost that line behind the connect lines of its 32 consumers, and the mode failed).
 */
describe('npm run bench -- --sink postgres', () => {
  it('writes the same batched load into InfluxDB and into PostgreSQL, every reading once in each', async () => {
    const r = await bench(['--quick', '--sink', 'postgres']);
    assert.equal(r.code, 0, failure(r));
    const report = JSON.parse(readFileSync(join(REPO, 'bench', 'results', 'pipeline-postgres.json'), 'utf8')) as {
      sink: string;
      results: Array<{ scenario: string; clients: number; readings: number; lost: number; duplicated: number }>;
    };
    assert.equal(report.sink, 'postgres');
    assert.deepEqual(
      report.results.map((x) => [x.scenario, x.readings, x.lost, x.duplicated]),
      // 2 clients × 2,000 readings in each of two rounds per store (quick: one I, P, P, I cycle)
      [
        ['batched into InfluxDB 1.x (reference)', 8_000, 0, 0],
        ['batched into PostgreSQL', 8_000, 0, 0],
      ],
    );
  });
});

/** The rounds with and without a setting, alternating, each on services restarted with its setting. */
describe('npm run bench -- --compare', () => {
  it('runs batched and one-per-message rounds with and without the setting, every reading once', async () => {
    const r = await bench(['--quick', '--compare', 'DISTRIBUTOR_CONSUMERS=8']);
    assert.equal(r.code, 0, failure(r));
    const { compare } = JSON.parse(readFileSync(join(REPO, 'bench', 'results', 'pipeline-compare.json'), 'utf8')) as {
      compare: { setting: Record<string, string>; rounds: number; pairs: Array<Record<'on' | 'off', { scenario: string; readings: number; lost: number; duplicated: number }>> };
    };
    assert.deepEqual(compare.setting, { DISTRIBUTOR_CONSUMERS: '8' });
    assert.equal(compare.rounds, 2, 'quick: one on, off, off, on cycle');
    assert.deepEqual(
      compare.pairs.map((p) => [p.on.scenario, p.on.readings, p.off.scenario, p.off.readings]),
      // 2 clients × 2,000 readings batched, × 1,000 one per message, in each of two rounds per side
      [
        ['batched, DISTRIBUTOR_CONSUMERS=8', 8_000, 'batched, as configured', 8_000],
        ['one reading per message, DISTRIBUTOR_CONSUMERS=8', 4_000, 'one reading per message, as configured', 4_000],
      ],
    );
    for (const p of compare.pairs) for (const x of [p.on, p.off]) assert.deepEqual([x.lost, x.duplicated], [0, 0], x.scenario);
  });
});
