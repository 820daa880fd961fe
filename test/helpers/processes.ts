import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

/**
 * Whether `pid` runs. A zombie (dead, not yet collected by whoever adopted it: where the test runs,
 * init may collect none) does not.
 */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state follows the command's name in parentheses, which may itself hold ") ".
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Waits until `ok()`, looking every 20 ms, failing after `ms` with `what`. */
export async function until(what: string, ok: () => boolean, ms = 5_000): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 20))) if (ok()) return;
  assert.fail(`timed out waiting until ${what}`);
}
