import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { mkdirSync, writeFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { tempDir } from '../helpers/pki.ts';

const REPO = join(import.meta.dirname, '..', '..');

/** `npm run stack` with these settings (nothing else from the environment or a .env). */
function stack(dir: string, env: Record<string, string>, timeoutMs = 60_000): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, ['--import', 'tsx', join(REPO, 'scripts', 'local-stack.ts')], {
      cwd: REPO,
      timeout: timeoutMs,
      env: { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null', CERTS_DIR: join(dir, 'certs'), STACK_DIR: join(dir, 'stack'), ...env },
    }, (_err, _stdout, stderr) => resolve({ code: child.exitCode, stderr }));
  });
}

/**
 * Two components of the stack on one port: the one that starts second cannot listen, while a
 * readiness check on that port is answered by the other (a gateway "ready" on Caddy's port, Caddy
 * then proxying to itself), so the stack said it was running with a component that never was.
 */
describe('npm run stack with one port given to two of its components', () => {
  const work = tempDir('stack-config');
  after(() => work.cleanup());

  it('refuses at once (CONFIG_INVALID, exit 78), naming both settings', async () => {
    const r = await stack(work.dir, { STACK_HTTPS_PORT: '19443', STACK_GATEWAY_PORT: '19443' });
    assert.equal(r.code, 78, r.stderr);
    assert.match(r.stderr, /^stack: error CONFIG_INVALID: .*STACK_GATEWAY_PORT and STACK_HTTPS_PORT are both port 19443/m);
  });

  it('counts every gateway: the second takes the port after STACK_GATEWAY_PORT', async () => {
    const r = await stack(work.dir, { STACK_GATEWAYS: '2', STACK_GATEWAY_PORT: '19089', STACK_COMMAND_API_PORT: '19090' });
    assert.equal(r.code, 78, r.stderr);
    assert.match(r.stderr, /^stack: error CONFIG_INVALID: .*gateway 2 \(STACK_GATEWAY_PORT \+ 1\) and STACK_COMMAND_API_PORT are both port 19090/m);
  });
});

describe('npm run stack with more gateways than ports above STACK_GATEWAY_PORT', () => {
  const work = tempDir('stack-config-range');
  after(() => work.cleanup());

  it('refuses at once (CONFIG_INVALID, exit 78), naming the setting, instead of a gateway that cannot start', async () => {
    const r = await stack(work.dir, { STACK_GATEWAYS: '3', STACK_GATEWAY_PORT: '65534' });
    assert.equal(r.code, 78, r.stderr);
    assert.match(r.stderr, /^stack: error CONFIG_INVALID: .*STACK_GATEWAY_PORT: .*gateway 3 .*65536/m);
  });
});

/**
 * Two stacks on one STACK_DIR (a second terminal, other ports): both Mosquittos wrote one
 * persistence file, both distributors took the state folder from each other at every restart, and
 * every log file held both.
 */
describe('npm run stack on a STACK_DIR another one runs on', () => {
  const work = tempDir('stack-dir-in-use');
  after(() => work.cleanup());

  it('refuses at once with STACK_DIR_IN_USE, naming the process that holds it, before starting anything', async () => {
    const stackDir = join(work.dir, 'stack');
    mkdirSync(stackDir, { recursive: true });
    // This test's process: one that runs, as the other stack would.
    writeFileSync(join(stackDir, 'stack.lock'), JSON.stringify({ pid: process.pid, startedAt: new Date().toISOString() }));
    const r = await stack(work.dir, { STACK_HTTPS_PORT: '0', STACK_HTTP_PORT: '0', STACK_DMZ_MQTT_PORT: '0', STACK_INTERNAL_MQTT_PORT: '0', STACK_GATEWAY_PORT: '0', STACK_COMMAND_API_PORT: '0', STACK_CONSOLE_PORT: '0' }, 30_000);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^stack: error STACK_DIR_IN_USE: .*${stackDir}.*pid ${process.pid}`, 'm'));
  });
});
