import { execFileSync } from 'node:child_process';

/**
 * A disk that takes only part of a write, made real: this process's file size limit (RLIMIT_FSIZE,
 * set with prlimit) lowered to `bytes` while `run` runs. The kernel then writes up to the limit and
 * answers EFBIG, as a disk filling up answers ENOSPC (Node ignores the SIGXFSZ that comes with it).
 */
export async function withFileSizeLimit<T>(bytes: number, run: () => Promise<T>): Promise<T> {
  setLimit(String(bytes));
  try {
    return await run();
  } finally {
    setLimit('unlimited');
  }
}

function setLimit(soft: string): void {
  execFileSync('prlimit', ['--pid', String(process.pid), `--fsize=${soft}:unlimited`]);
}
