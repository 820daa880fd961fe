import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { summariseProfile } from '../../bench/lib/profile-summary.ts';

// The profile report of `npm run bench -- --profile` counts only the samples taken while the load
// was measured (CpuMeter.window, on the monotonic clock): a process's start, the fleet's devices
// connecting and the warm-up would otherwise weigh in "where the CPU went".

describe('the benchmark profile summary', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fieldstream-profile-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  /**
   * A real node process under --cpu-prof: 300 ms in before(), 300 ms in during() between two
   * marks of the monotonic clock as CpuMeter takes them, 300 ms in afterwards().
   */
  const script = `
    const spin = (ms) => { const end = Date.now() + ms; let x = 0; while (Date.now() < end) x += Math.sqrt(x + 1); return x; };
    function before() { return spin(300); }
    function during() { return spin(300); }
    function afterwards() { return spin(300); }
    before();
    const from = Number(process.hrtime.bigint() / 1000n);
    during();
    const to = Number(process.hrtime.bigint() / 1000n);
    afterwards();
    process.stdout.write(JSON.stringify({ from, to }));
  `;
  // A file in `dir` (the summary's root): its functions are "ours", with their total time.
  const main = join(dir, 'phases.cjs');
  writeFileSync(main, script);
  const marks = JSON.parse(execFileSync(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${dir}`, main], { encoding: 'utf8' })) as { from: number; to: number };
  const file = join(dir, readdirSync(dir).find((f) => f.endsWith('.cpuprofile')) as string);

  it('with a window, counts only the samples taken within it (the profile and the marks share one clock)', () => {
    const totals = totalsOf(file, dir, { fromUs: marks.from, toUs: marks.to });
    assert.ok((totals.get('during') ?? 0) > 90, JSON.stringify([...totals]));
    assert.ok((totals.get('before') ?? 0) < 5 && (totals.get('afterwards') ?? 0) < 5, JSON.stringify([...totals]));
  });

  it('without one, counts every sample', () => {
    const totals = totalsOf(file, dir);
    // Each phase is there, and together they are nearly all the busy samples. Not a third each: a
    // phase spins for 300 ms of the wall clock, and on a busy machine (test files run side by side)
    // one of them may get much less of the CPU than another.
    const phases = ['before', 'during', 'afterwards'].map((fn) => totals.get(fn) ?? 0);
    assert.ok(phases.every((p) => p > 5), JSON.stringify([...totals]));
    assert.ok(phases.reduce((a, b) => a + b, 0) > 90, JSON.stringify([...totals]));
  });
});

/** The total % (busy samples in it or what it called) of each of our functions. */
function totalsOf(file: string, root: string, window?: { fromUs: number; toUs: number }): Map<string, number> {
  return new Map(summariseProfile(file, root, 500, window).ours.map((h) => [h.where.split(' ')[0] as string, h.totalPercent]));
}
