import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { bench, failure, REPO } from '../helpers/bench.ts';

// The benchmark's --profile and --connections-alone modes in their quick forms (bench-modes.test.ts
// has the others), so that neither rots unseen.

describe('npm run bench -- --profile, --connections-alone', () => {
  const results = join(REPO, 'bench', 'results');

  it('--profile batched writes a CPU profile of each service and a report of where their time went', async () => {
    const ran = Date.now();
    const r = await bench(['--quick', '--profile', 'batched']);
    assert.equal(r.code, 0, failure(r));
    for (const name of ['gateway', 'distributor', 'console', 'field clients']) {
      assert.ok(statSync(join(results, 'profiles', `${name}.cpuprofile`)).mtimeMs >= ran, `${name}.cpuprofile written by this run`);
    }
    const md = readFileSync(join(results, 'profile.md'), 'utf8');
    for (const heading of ['The gateway: where its CPU went', 'The distributor: where its CPU went', 'The field clients: where its CPU went']) assert.ok(md.includes(heading), heading);
  });

  it('--connections-alone holds its devices on one gateway and splits the memory they cost', async () => {
    const r = await bench(['--quick', '--connections-alone']);
    assert.equal(r.code, 0, failure(r));
    const { connections: c } = JSON.parse(readFileSync(join(results, 'pipeline-connections.json'), 'utf8')) as {
      connections: { connections: number; kibPerConnection: number; kibPerConnectionBy: Record<string, number> };
    };
    assert.equal(c.connections, 200);
    assert.deepEqual(Object.keys(c.kibPerConnectionBy).sort(), ['files', 'mallocHeap', 'otherAnon', 'smallAnon']);
  });
});
