import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { release, reserve } from '../../scripts/local-stack/ports.ts';
import { processStart } from '../../shared/process-identity.ts';

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

/**
 * A reservation names its process by id and start time: one whose process was killed (no exit
 * handler ran) and whose id the kernel has since given to an unrelated process is not kept for
 * ever. pid 1 plays that unrelated process; ports below 1024 are never handed out by freePort, so
 * no other test's reservation is touched.
 */
describe('a port reservation left by a process that is gone', () => {
  const init = processStart(1);
  const port = 1 + Math.floor(Math.random() * 1000);
  const file = join(tmpdir(), 'fieldstream-ports', String(port));
  const leave = (text: string) => {
    mkdirSync(dirname(file), { recursive: true, mode: 0o1777 });
    writeFileSync(file, text);
  };

  it('is taken over when its process id now names a process started at another time', { skip: init === undefined && 'no /proc/1/stat here' }, () => {
    leave(`1 ${BigInt(init!) + 1n}`);
    try {
      assert.equal(reserve(port), true, 'taken over');
      assert.equal(readFileSync(file, 'utf8').split(' ')[0], String(process.pid), 'now names this process');
    } finally {
      release(port);
    }
  });

  it('is taken over by one of two pickers judging it gone at the same instant, never by both', { skip: init === undefined && 'no /proc/1/stat here' }, () => {
    leave(`1 ${BigInt(init!) + 1n}`);
    let second: boolean | undefined;
    try {
      // The second picker runs at the instant the first has judged the file stale and not acted yet.
      const first = reserve(port, () => {
        second ??= reserve(port);
      });
      assert.equal(second, true, 'the second took it over');
      assert.equal(first, false, 'the first found it taken meanwhile');
    } finally {
      release(port);
    }
  });

  it('is kept while the process it names (id and start time) runs', { skip: init === undefined && 'no /proc/1/stat here' }, () => {
    for (const text of [`1 ${init}`, '1']) {
      leave(text);
      try {
        assert.equal(reserve(port), false, `kept: ${text}`);
        assert.equal(readFileSync(file, 'utf8'), text);
      } finally {
        rmSync(file, { force: true });
      }
    }
  });
});
