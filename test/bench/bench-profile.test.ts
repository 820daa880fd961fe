import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { decodePprof } from '../../bench/lib/pprof.ts';
import { bench, failure, REPO } from '../helpers/bench.ts';

// The benchmark's --profile and --connections-alone modes in their quick forms (`npm run test:bench`;
// bench-modes.test.ts has the others), so that neither rots unseen.

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
    // The Go servers, through their /debug/pprof: the profiles of the load kept, each one readable.
    for (const [name, folder] of [['Caddy', 'caddy'], ['InfluxDB', 'influxdb']] as const) {
      assert.ok(md.includes(`${name}: where its CPU went (Go's profiler`), name);
      const files = readdirSync(join(results, 'profiles', folder));
      assert.ok(files.length > 0, `${name}'s profiles kept`);
      for (const f of files) {
        assert.ok(statSync(join(results, 'profiles', folder, f)).mtimeMs >= ran, `${folder}/${f} written by this run`);
        decodePprof(readFileSync(join(results, 'profiles', folder, f)));
      }
    }
    assert.doesNotMatch(md, /Not profiled/);
    // The quick load lasts about a second: InfluxDB's few samples in it (5 or so) could be none, so
    // their count is not held to more than 0 here; a real server's samples are (bench-go-profile.test.ts).
    assert.match(md, /InfluxDB: where its CPU went \(Go's profiler, [1-9]\d* profiles? of a second over [\d.]+ s around the load: [\d.]+ CPU seconds, \d+ samples/);
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
