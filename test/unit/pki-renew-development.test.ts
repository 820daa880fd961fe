import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ensureDevelopmentPki } from '../../embedded/dev-pki.ts';
import { tempDir } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';

/**
 * `generate-certificates.sh DOMAIN --renew` in a clone where npm start ran keeps its CA, and with it
 * the development devices' certificates, whose keys lie in certs/devices/: the deployment accepts
 * them until each is revoked (docs/deployment.md). The command said nothing of them.
 */
describe('generate-certificates.sh --renew over npm start\'s folder', () => {
  it('names the development devices the deployment now accepts, with the command that revokes each; once set up, it names none', () => {
    const scratch = tempDir('renew-development');
    const certs = join(scratch.dir, 'certs');
    const env = { PATH: process.env.PATH ?? '', FIELDSTREAM_ENV_FILE: '/dev/null', CERTS_DIR: certs };
    const run = (file: string, args: string[]) => execFileSync(join(REPO_ROOT, file), args, { cwd: REPO_ROOT, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      ensureDevelopmentPki(certs, ['field-sim-001', 'sensor-001', 'camera-001']); // what npm start makes
      run('scripts/revoke-device.sh', ['camera-001']); // revoked already: nothing to say of it

      const out = run('scripts/generate-certificates.sh', ['fieldstream.example.org', '--renew']);
      const line = out.split('\n').find((l) => l.includes('development devices'));
      assert.ok(line, out);
      assert.match(out, /field-sim-001, sensor-001\b/, out);
      assert.doesNotMatch(line, /camera-001/, out);
      assert.match(out, /bin\/fieldstream-admin devices revoke ID/, out);

      // What it says works: each is revoked, and a run after it names none.
      for (const id of ['field-sim-001', 'sensor-001']) run('bin/fieldstream-admin', ['devices', 'revoke', id]);
      const again = run('scripts/generate-certificates.sh', ['fieldstream.example.org', '--renew']);
      assert.doesNotMatch(again, /development devices/, again);
    } finally {
      scratch.cleanup();
    }
  });
});
