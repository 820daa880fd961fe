import { runAdmin } from '../../scripts/admin/run.ts';
import { REPO_ROOT } from './stack.ts';

/** `fieldstream-admin` run in this process with `certsDir` as CERTS_DIR: its exit code and what it wrote. */
export function adminWith(certsDir: string): (...argv: string[]) => Promise<{ code: number; out: string; err: string }> {
  return async (...argv) => {
    let out = '';
    let err = '';
    const code = await runAdmin(argv, { out: (t) => void (out += t), err: (t) => void (err += t), env: { CERTS_DIR: certsDir }, cwd: REPO_ROOT });
    return { code, out, err };
  };
}
