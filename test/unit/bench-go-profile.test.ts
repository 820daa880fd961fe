import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { chunksWithin, GoProfiler } from '../../bench/lib/go-profiler.ts';
import { decodePprof, ProfileMessage, summarisePprof } from '../../bench/lib/pprof.ts';
import { monotonicUs } from '../../bench/lib/proc-stats.ts';
import { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';

// `npm run bench -- --profile` profiles the Go servers of the stack (Caddy, InfluxDB) through their
// /debug/pprof endpoint, a second at a time, and sums the profiles that overlap the load measured.

/** A profile of known content: functions 1 "main", 2 "work", 3 "inlined"; values [samples, cpu ns]. */
function profileOf(samples: { stack: number[]; ns: number }[]): Buffer {
  const strings = ['', 'samples', 'count', 'cpu', 'nanoseconds', 'main', 'work', 'inlined'];
  const message = ProfileMessage.fromObject({
    sampleType: [{ type: 1, unit: 2 }, { type: 3, unit: 4 }],
    function: [{ id: 1, name: 5 }, { id: 2, name: 6 }, { id: 3, name: 7 }],
    location: [
      { id: 10, line: [{ functionId: 1 }] },
      { id: 20, line: [{ functionId: 2 }] },
      // "inlined" was inlined into "work": one address, two functions, the innermost first
      { id: 30, line: [{ functionId: 3 }, { functionId: 2 }] },
    ],
    sample: samples.map((s) => ({ locationId: s.stack, value: [s.ns / 10_000_000, s.ns] })),
    stringTable: strings,
  });
  return gzipSync(ProfileMessage.encode(message).finish());
}

describe('the Go servers\' CPU profiles in the benchmark', () => {
  it('counts each sample by its CPU time: self time to the innermost function, total time once per function on the stack', () => {
    const p = decodePprof(
      profileOf([
        { stack: [20, 10], ns: 30_000_000 }, // work ← main
        { stack: [30, 10], ns: 10_000_000 }, // inlined (in work) ← main
        { stack: [20, 20, 10], ns: 60_000_000 }, // work ← work ← main: recursion counts once
      ]),
    );
    const s = summarisePprof([p, p]);
    assert.equal(s.cpuSeconds, 0.2);
    assert.equal(s.samples, 20);
    const self = Object.fromEntries(s.self.map((h) => [h.where, h.selfPercent]));
    const total = Object.fromEntries(s.total.map((h) => [h.where, h.totalPercent]));
    assert.deepEqual(self, { work: 90, inlined: 10 });
    assert.deepEqual(total, { main: 100, work: 100, inlined: 10 });
  });

  it('refuses what is not a profile', () => {
    assert.throws(() => decodePprof(gzipSync(Buffer.from('not a protobuf message at all'))));
    assert.throws(() => decodePprof(Buffer.from([0x1f, 0x8b, 0, 1, 2])));
    // a gzip bomb: 65 MiB of zeros unzipped, more than a profile may hold
    assert.throws(() => decodePprof(gzipSync(Buffer.alloc(65 * 1024 * 1024))), /Cannot create a Buffer larger|maxOutputLength|larger than/i);
  });

  it('keeps the profiles that overlap the window measured', () => {
    const data = Buffer.alloc(0);
    const chunks = [
      { fromUs: 0, toUs: 1000, data },
      { fromUs: 1000, toUs: 2000, data },
      { fromUs: 2000, toUs: 3000, data },
    ];
    assert.deepEqual(chunksWithin(chunks, { fromUs: 1500, toUs: 1800 }).map((c) => c.fromUs), [1000]);
    assert.deepEqual(chunksWithin(chunks, { fromUs: 900, toUs: 2100 }).map((c) => c.fromUs), [0, 1000, 2000]);
    assert.equal(chunksWithin(chunks, undefined).length, 3);
  });

  it('notes a request that fails, with when, and goes on asking', async () => {
    const profiler = new GoProfiler(`http://127.0.0.1:${await freePort()}`); // nothing listens there
    const fromUs = monotonicUs();
    profiler.start();
    await new Promise((r) => setTimeout(r, 700));
    const { chunks, failures } = await profiler.stop();
    assert.equal(chunks.length, 0);
    assert.ok(failures.length >= 2, `${failures.length} failures: tried again after the first`);
    for (const f of failures) {
      assert.ok(f.fromUs >= fromUs && f.toUs >= f.fromUs);
      assert.match(f.reason, /fetch failed|ECONNREFUSED/);
    }
  });

  describe('a real Caddy, profiled through its admin API while it serves requests', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fieldstream-goprof-'));
    let caddy: ManagedProcess;
    let admin: number;
    let site: number;
    before(async () => {
      admin = await freePort();
      site = await freePort();
      const config = join(dir, 'caddy.json');
      writeFileSync(
        config,
        JSON.stringify({
          admin: { listen: `127.0.0.1:${admin}` },
          apps: { http: { servers: { s: { listen: [`127.0.0.1:${site}`], routes: [{ handle: [{ handler: 'static_response', body: 'x'.repeat(4096) }] }] } } } },
        }),
      );
      caddy = new ManagedProcess({ name: 'caddy', command: 'caddy', args: ['run', '--config', config], env: { PATH: process.env.PATH, HOME: dir }, cwd: dir, logFile: join(dir, 'caddy.log'), ready: { port: site, host: '127.0.0.1' } });
      await caddy.start();
    });
    after(async () => {
      await caddy?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    it('takes one-second profiles one after another, and they hold the work done meanwhile', async () => {
      const profiler = new GoProfiler(`http://127.0.0.1:${admin}`);
      profiler.start();
      const fromUs = monotonicUs();
      const end = Date.now() + 2200;
      while (Date.now() < end) await Promise.all(Array.from({ length: 16 }, () => fetch(`http://127.0.0.1:${site}/`).then((r) => r.text())));
      const toUs = monotonicUs();
      const { chunks, failures } = await profiler.stop();
      assert.deepEqual(failures, []);
      assert.ok(chunks.length >= 2, `${chunks.length} profiles`);
      for (const [i, c] of chunks.entries()) {
        assert.ok(c.toUs - c.fromUs >= 1e6, 'a second each');
        if (i > 0) assert.ok(c.fromUs >= (chunks[i - 1] as { toUs: number }).toUs, 'one after another');
      }
      const s = summarisePprof(chunksWithin(chunks, { fromUs, toUs }).map((c) => decodePprof(c.data)));
      assert.ok(s.cpuSeconds > 0 && s.samples > 0, `${s.cpuSeconds} CPU seconds`);
      assert.ok(s.total.some((h) => h.where === 'net/http.(*conn).serve'), `Caddy's HTTP server among its steps: ${s.total.map((h) => h.where).join(', ')}`);
    });
  });
});
