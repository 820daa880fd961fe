import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { npmStartBanner } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';

/**
 * `npm start` prints how to connect another device: `scripts/generate-client-cert.sh my-device`,
 * then a field client with the paths of the certificates folder npm start runs on. With that folder
 * given in npm start's environment alone (`CERTS_DIR=./certs-dev npm start`, as docs/deployment.md
 * says once `certs/` holds a deployment's), the script typed in another shell took that shell's
 * folder (`certs/`, the deployment's CA) and the field client's paths named files never made.
 */
describe("npm start's banner: another device's certificate goes where npm start's certificates are", () => {
  const work = tempDir('embedded-banner-certs');
  after(() => work.cleanup());

  /** What npm start printed (cwd: the checkout, as `npm start` runs), once it printed all of it. */
  const banner = (env: Record<string, string>): Promise<string> => npmStartBanner(REPO_ROOT, work.dir, 'Inspect the TLS endpoint', env);

  it('CERTS_DIR in the environment: the printed commands, typed in a shell whose default is another folder, issue into it and find the files', async () => {
    const certsDev = join(work.dir, 'certs-dev');
    const out = await banner({ CERTS_DIR: certsDev });
    const lines = out.split('\n');
    const at = lines.findIndex((l) => l.startsWith('Connect another device'));
    assert.ok(at >= 0, out);
    const issue = lines[at + 1]!.trim();
    assert.match(issue, /scripts\/generate-client-cert\.sh my-device$/, issue);

    // The shell the user types it in: its own default folder (a .env naming the deployment's, or
    // none and ./certs), never npm start's environment.
    const elsewhere = join(work.dir, 'certs-deployment');
    const envFile = join(work.dir, 'shell.env');
    writeFileSync(envFile, `CERTS_DIR=${elsewhere}\n`);
    execFileSync('bash', ['-c', issue], { cwd: REPO_ROOT, env: { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: envFile }, encoding: 'utf8' });

    assert.ok(!existsSync(join(elsewhere, 'devices', 'my-device')), 'the device was issued into the shell\'s folder, not npm start\'s');
    const fieldLine = lines.slice(at + 2, at + 5).join(' ');
    for (const name of ['FIELD_CA_FILE', 'FIELD_CERT_FILE', 'FIELD_KEY_FILE', 'FIELD_SIGNING_KEY_FILE']) {
      const path = new RegExp(`${name}=(\\S+)`).exec(fieldLine)?.[1];
      assert.ok(path, `${name} not printed:\n${fieldLine}`);
      assert.ok(existsSync(resolve(REPO_ROOT, path)), `${name}=${path} does not exist after the printed command`);
    }
    assert.ok(existsSync(join(certsDev, 'devices', 'my-device', 'client.crt')));
  });
});
