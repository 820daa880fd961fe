import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const PORTS_MODULE = join(import.meta.dirname, '..', '..', 'scripts', 'local-stack', 'ports.ts');

/** Ports picked by one process (freePort), as a stack being started holds them before its servers bind them. */
function pickInAnotherProcess(count: number): Promise<number[]> {
  const script = `
    import { freePort } from ${JSON.stringify(PORTS_MODULE)};
    const ports = [];
    for (let i = 0; i < ${count}; i++) ports.push(await freePort());
    process.stdout.write(JSON.stringify(ports));
  `;
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { timeout: 60_000 }, (err, stdout) => (err ? reject(err) : resolve(JSON.parse(stdout) as number[]))),
  );
}

/**
 * Two stacks started at once (npm test runs two end-to-end files side by side, each starting its
 * own) pick their ports in two processes: a port one picked and has not bound yet is free to the other.
 */
describe('ports picked at start by two processes at once', () => {
  it('are never the same port', async () => {
    const [a, b] = await Promise.all([pickInAnotherProcess(400), pickInAnotherProcess(400)]);
    assert.equal(new Set(a).size, a.length);
    const shared = a.filter((p) => b.includes(p));
    assert.deepEqual(shared, [], 'a port handed to both');
  });
});
