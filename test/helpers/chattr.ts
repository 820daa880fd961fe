import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Why a folder's attribute `flag` cannot be set here, or false. chattr +a (append-only: nothing
 * removed or renamed) and +i (immutable: nothing made, changed or removed) hold for root too, which
 * file modes do not; they need root and ext4, XFS, Btrfs or tmpfs. For a test's `skip`.
 */
export function chattrReason(flag: 'a' | 'i'): string | false {
  const probe = mkdtempSync(join(tmpdir(), 'fieldstream-chattr-'));
  try {
    execFileSync('chattr', [`+${flag}`, probe], { stdio: 'ignore' });
    execFileSync('chattr', [`-${flag}`, probe], { stdio: 'ignore' });
    return false;
  } catch (err) {
    return `chattr +${flag} is not available: ${(err as Error).message.split('\n')[0]}`;
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
}

/** Sets (`+`) or clears (`-`) a file's attribute. */
export function chattr(path: string, change: '+a' | '-a' | '+i' | '-i'): void {
  execFileSync('chattr', [change, path], { stdio: 'ignore' });
}
