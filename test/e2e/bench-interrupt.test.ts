import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { REPO } from '../helpers/bench.ts';

/** The processes whose command line or environment names `dir` (the run's folder): its stack. */
function processesOf(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const seen = ['cmdline', 'environ'].some((f) => readFileSync(join('/proc', entry, f)).includes(dir));
      if (seen) pids.push(Number(entry));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return pids;
}

/** Whether `pid` is `ancestor` or one of its descendants (/proc/PID/stat's fourth field, the parent). */
function descendsFrom(pid: number, ancestor: number): boolean {
  for (let p = pid, hops = 0; p > 1 && hops < 64; hops++) {
    if (p === ancestor) return true;
    try {
      const stat = readFileSync(join('/proc', String(p), 'stat'), 'utf8');
      p = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    } catch {
      return false;
    }
  }
  return false;
}

const benchFolders = () => new Set(readdirSync(tmpdir()).filter((d) => d.startsWith('fieldstream-bench-')));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Ctrl-C on a benchmark run: each service of its stack runs in a process group of its own, which
 * the terminal's signal does not reach, so the benchmark itself must stop them (they were once left
 * running, a whole stack per interrupted run).
 */
describe('npm run bench, interrupted', () => {
  it('stops every process of its stack on SIGINT and says which folder it kept', async () => {
    const before = benchFolders();
    const run = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'bench', 'pipeline.ts'), '--quick', '--connections-alone'], { cwd: REPO, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    run.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const exited = new Promise<number | null>((resolve) => run.once('exit', (code) => resolve(code)));
    let dir: string | undefined;
    try {
      // The run's folder, then its stack up: InfluxDB, both brokers, Caddy and the Node services.
      for (let waited = 0; ; waited += 200) {
        assert.ok(waited < 120_000, `the stack did not start: ${err.slice(-2000)}`);
        // Its own folder: a new one whose processes are this run's. Another benchmark may be running
        // beside it (npm test runs two files at a time), its folder new too: taken for this run's, it
        // had its stack killed and its folder removed here.
        const name = [...benchFolders()].find((d) => !before.has(d) && processesOf(join(tmpdir(), d)).some((pid) => descendsFrom(pid, run.pid ?? -1)));
        dir = name === undefined ? undefined : join(tmpdir(), name);
        if (dir !== undefined && processesOf(dir).length >= 8) break;
        await sleep(200);
      }
      run.kill('SIGINT');
      assert.equal(await exited, 130);
      assert.match(err, new RegExp(`bench: SIGINT, stopped \\(kept ${dir}\\)`));
      let left = processesOf(dir);
      for (let waited = 0; left.length > 0 && waited < 5_000; waited += 100) {
        await sleep(100);
        left = processesOf(dir);
      }
      assert.deepEqual(left, [], 'processes of the stack still running');
    } finally {
      run.kill('SIGKILL');
      if (dir !== undefined) {
        for (const pid of processesOf(dir)) process.kill(pid, 'SIGKILL');
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });
});
