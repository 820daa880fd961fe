import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { tempDir } from '../helpers/pki.ts';

const repoRoot = join(import.meta.dirname, '..', '..');

// The certificates folder itself and dmz/revocation/ were made with the mode the user's umask
// left, while every other folder of the set has a mode of its own: under umask 000 both were
// writable by every user of the CA's machine, who could then rename the revoked serials' list (or
// a whole folder of keys) away and put one of their own in its place.

/** Every folder below `root`, `root` included. */
function folders(root: string): string[] {
  const out = [root];
  for (const e of readdirSync(root, { withFileTypes: true })) if (e.isDirectory()) out.push(...folders(join(root, e.name)));
  return out;
}

/** Runs a script of scripts/ as an operator would, under `umask`. */
function script(umask: string, certs: string, args: string[]): void {
  const r = spawnSync('sh', ['-c', `umask ${umask} && exec "$@"`, 'sh', ...args], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null', CERTS_DIR: certs },
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(r.status, 0, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
}

describe('the certificates folder made by the onboarding scripts, whatever the umask', () => {
  for (const umask of ['000', '002']) {
    it(`has no folder other users may write to, under umask ${umask}: set-up, a device, its revocation`, () => {
      const tmp = tempDir('pki-modes');
      try {
        const certs = join(tmp.dir, 'certs');
        script(umask, certs, ['scripts/generate-certificates.sh', 'fieldstream.example.org']);
        script(umask, certs, ['scripts/generate-client-cert.sh', 'pump-7']);
        script(umask, certs, ['scripts/revoke-device.sh', 'pump-7']);
        const writable = folders(certs)
          .filter((d) => (statSync(d).mode & 0o022) !== 0)
          .map((d) => `${relative(tmp.dir, d)} ${(statSync(d).mode & 0o777).toString(8)}`);
        assert.deepEqual(writable, [], 'folders writable by the group or by anyone');
      } finally {
        tmp.cleanup();
      }
    });
  }
});
