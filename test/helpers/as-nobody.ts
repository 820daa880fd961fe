import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const repo = join(import.meta.dirname, '..', '..');

/**
 * Why a test cannot run code as `nobody` (uid 65534) here, or undefined when it can: it must be
 * root to switch users, and `nobody` must be able to read the repository (its node_modules) to load
 * the code at all. `what`: what the test runs as another user, for the skip's reason.
 */
export function cannotRunAsNobody(what: string): string | undefined {
  if (process.getuid?.() !== 0) return `needs root, to run ${what} as another user`;
  const readable = spawnSync(process.execPath, ['-e', `require('fs').accessSync(${JSON.stringify(join(repo, 'node_modules', 'tsx', 'package.json'))})`], { uid: 65534, gid: 65534 });
  if (readable.status !== 0) return `the repository (${repo}) is not readable by nobody`;
  return undefined;
}
