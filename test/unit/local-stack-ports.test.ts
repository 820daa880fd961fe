import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const PORTS_MODULE = join(import.meta.dirname, '..', '..', 'scripts', 'local-stack', 'ports.ts');

/**
 * Ports picked by one process (freePort), as a stack being started holds them before its servers
 * bind them. The process stays until its stdin is closed: one that had exited would have given its
 * reservations back (as a stack that stops does), and the other could rightly be handed them.
 */
function pickInAnotherProcess(count: number): { ports: Promise<number[]>; child: ChildProcess } {
  const script = `
    import { freePort } from ${JSON.stringify(PORTS_MODULE)};
    const ports = [];
    for (let i = 0; i < ${count}; i++) ports.push(await freePort());
    process.stdout.write(JSON.stringify(ports) + '\\n');
    process.stdin.resume();
    process.stdin.on('end', () => process.exit(0));
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'], timeout: 120_000 });
  let out = '';
  const ports = new Promise<number[]>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.endsWith('\n')) resolve(JSON.parse(out) as number[]);
    });
    child.once('exit', (code) => reject(new Error(`the picking process exited (${code}) before it answered`)));
  });
  return { ports, child };
}

/**
 * Two stacks started at once (npm test runs two end-to-end files side by side, each starting its
 * own) pick their ports in two processes: a port one picked and has not bound yet is free to the other.
 */
describe('ports picked at start by two processes at once', () => {
  it('are never the same port', async () => {
    const pickers = [pickInAnotherProcess(400), pickInAnotherProcess(400)];
    let a: number[];
    let b: number[];
    try {
      [a, b] = (await Promise.all(pickers.map((p) => p.ports))) as [number[], number[]];
    } finally {
      for (const p of pickers) p.child.stdin?.end();
    }
    assert.equal(new Set(a).size, a.length);
    const shared = a.filter((p) => b.includes(p));
    assert.deepEqual(shared, [], 'a port handed to both');
  });
});
