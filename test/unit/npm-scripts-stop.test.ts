import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, it } from 'node:test';

const REPO = join(import.meta.dirname, '..', '..');

/** The npm scripts that run a service: Ctrl-C must stop each as docs/operations.md says, exit 0 once its stop is done. */
const SERVICE_SCRIPTS = ['start', 'stack', 'gateway', 'distributor', 'command-api', 'field-client'];

/**
 * A service whose event loop is busy, as one under load on a small machine is: 400 ms of work at a
 * time. A launcher that takes a service not answering its relayed signal within milliseconds for
 * hung (the tsx command line: 60 ms, then SIGKILL and exit 130) never lets this one stop.
 */
const FIXTURE = `
import { runService } from ${JSON.stringify(pathToFileURL(join(REPO, 'shared', 'service.ts')).href)};
runService('fixture', () => ({}), async () => {
  const busy = () => { const end = Date.now() + 400; while (Date.now() < end); setTimeout(busy, 1); };
  setTimeout(busy, 1);
  process.stdout.write('fixture running\\n');
  return { close: () => new Promise<void>((r) => setTimeout(() => { process.stdout.write('fixture stopped\\n'); r(); }, 200)) };
});
`;

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** package.json's command for `script`, its entry file swapped for the fixture, run by npm in a package of its own. */
function packageWith(script: string): string {
  const scripts = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
  const command = scripts[script];
  assert.ok(command !== undefined, `package.json has no script "${script}"`);
  assert.match(command, /\S+\.ts\b/, `the script "${script}" names no entry file`);
  const dir = mkdtempSync(join(tmpdir(), 'fieldstream-npm-stop-'));
  dirs.push(dir);
  symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'));
  writeFileSync(join(dir, 'fixture.ts'), FIXTURE);
  const fixtureCommand = command.replace(/\S+\.ts\b/, 'fixture.ts');
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'npm-stop', version: '1.0.0', type: 'module', scripts: { [script]: fixtureCommand } }));
  return dir;
}

/** `npm run SCRIPT` in a process group of its own, as a terminal runs it; Ctrl-C is SIGINT to that group. */
async function ctrlC(dir: string, script: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string; err: string }> {
  const child = spawn('npm', ['run', '--silent', script], { cwd: dir, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on('exit', (code, signal) => r({ code, signal })));
  const deadline = Date.now() + 30_000;
  while (!out.includes('fixture running')) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the fixture did not start: ${out}${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  // Into the busy stretch, then Ctrl-C to the whole group: npm, the launcher and the service.
  await new Promise((r) => setTimeout(r, 150));
  process.kill(-child.pid!, 'SIGINT');
  const result = await exited;
  return { ...result, out, err };
}

describe('npm scripts of the services, stopped with Ctrl-C', () => {
  for (const script of SERVICE_SCRIPTS) {
    it(`npm run ${script}: a busy service stops cleanly, exit 0`, async () => {
      const dir = packageWith(script);
      const r = await ctrlC(dir, script);
      assert.match(r.out, /fixture stopped/, `the service's stop never ran (exit ${r.code}, signal ${r.signal}): ${r.out}${r.err}`);
      assert.equal(r.code, 0, `exit ${r.code}, signal ${r.signal}: ${r.out}${r.err}`);
    });
  }
});
