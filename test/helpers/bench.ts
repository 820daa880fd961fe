import { execFile } from 'node:child_process';
import { join } from 'node:path';

/** The repository's root. */
export const REPO = join(import.meta.dirname, '..', '..');

/** `npm run bench -- ARGS`, as a user runs it: its exit code and output. */
export const bench = (args: string[]) =>
  new Promise<{ code: number; out: string; err: string }>((resolve) => {
    execFile(join(REPO, 'node_modules', '.bin', 'tsx'), [join(REPO, 'bench', 'pipeline.ts'), ...args], { cwd: REPO, timeout: 300_000 }, (err, out, errOut) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out, err: errOut }),
    );
  });

/** What a failed run said: its error output and the end of its report, for the assertion's message. */
export const failure = (r: { code: number; out: string; err: string }) => `exit ${r.code}\n${r.err.slice(-8_000)}\n--- its output, the end:\n${r.out.slice(-4_000)}`;
