import { execFile } from 'node:child_process';
import { join } from 'node:path';

/** The repository's root. */
export const REPO = join(import.meta.dirname, '..', '..');

/**
 * milliseconds a benchmark run may take in a test: under the runner's 300 s per test
 * (scripts/test.sh), so that a run that hangs is stopped here (SIGTERM: the benchmark stops its
 * stack) and its output shown, rather than left running into the next test file when the runner
 * ends this one
 */
const BENCH_TIMEOUT_MS = 270_000;

export interface BenchRun {
  code: number;
  /** the signal that ended it (SIGTERM: it ran past BENCH_TIMEOUT_MS) */
  signal: string | null;
  out: string;
  err: string;
}

/** `npm run bench -- ARGS`, as a user runs it: its exit code and output. */
export const bench = (args: string[]) =>
  new Promise<BenchRun>((resolve) => {
    execFile(join(REPO, 'node_modules', '.bin', 'tsx'), [join(REPO, 'bench', 'pipeline.ts'), ...args], { cwd: REPO, timeout: BENCH_TIMEOUT_MS }, (err, out, errOut) => {
      const e = err as { code?: number | null; signal?: string | null } | null;
      resolve({ code: e ? (e.code ?? 1) : 0, signal: e?.signal ?? null, out, err: errOut });
    });
  });

/** What a failed run said: its error output and the end of its report, for the assertion's message. */
export const failure = (r: BenchRun) =>
  `exit ${r.code}${r.signal ? `, ended by ${r.signal}${r.signal === 'SIGTERM' ? ` (ran past ${BENCH_TIMEOUT_MS / 1000} s)` : ''}` : ''}\n${r.err.slice(-8_000)}\n--- its output, the end:\n${r.out.slice(-4_000)}`;
