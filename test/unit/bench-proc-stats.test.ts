import assert from 'node:assert/strict';
import { closeSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { mallocIn, mallocOf, memoryByMapping, processIoCalls, residentMemory } from '../../bench/lib/proc-stats.ts';

describe("the benchmark's memory by kind of mapping", () => {
  it("sorts this process's resident memory into glibc's heap, V8's pages, other anonymous memory and files, adding up to it", () => {
    // Allocations of each kind, so that each is resident now: a native buffer under glibc's mmap
    // threshold (1 KiB at a time) and JavaScript objects.
    const native = Array.from({ length: 2000 }, () => Buffer.alloc(1024, 1));
    const objects = Array.from({ length: 100_000 }, (_, i) => ({ i, s: `object ${i}` }));
    const by = memoryByMapping(process.pid);
    const rss = residentMemory(process.pid).rss;
    assert.ok(native.length + objects.length > 0);
    // Node's binary and libraries are mapped files; V8 keeps its heap in pages of 256 KiB; Node's
    // native allocations go to glibc's main heap.
    assert.ok(by.files > 10 * 1024 * 1024, JSON.stringify(by));
    assert.ok(by.smallAnon > 4 * 1024 * 1024, JSON.stringify(by));
    assert.ok(by.mallocHeap > 1024 * 1024, JSON.stringify(by));
    const sum = by.mallocHeap + by.smallAnon + by.otherAnon + by.files;
    assert.ok(Math.abs(sum - rss) < rss * 0.05, `${sum} against VmRSS ${rss}`);
  });
});

describe('the malloc a process runs on', () => {
  it("is glibc's for this process, which preloads none", () => {
    assert.equal(mallocOf(process.pid), 'glibc');
  });

  it('is the one a process maps in place of it, by its library', () => {
    const maps = (lib: string) =>
      [
        '55d0c0a00000-55d0c0e00000 r--p 00000000 fd:01 131 /usr/local/bin/node',
        `7f1a2b000000-7f1a2b020000 r-xp 00000000 fd:01 262 /usr/lib/x86_64-linux-gnu/${lib}`,
        '7f1a2c000000-7f1a2c200000 rw-p 00000000 00:00 0 ',
        '7ffd5a000000-7ffd5a021000 rw-p 00000000 00:00 0                          [stack]',
      ].join('\n');
    assert.equal(mallocIn(maps('libmimalloc.so.2.0')), 'mimalloc');
    assert.equal(mallocIn(maps('libjemalloc.so.2')), 'jemalloc');
    assert.equal(mallocIn(maps('libtcmalloc_minimal.so.4.5.10')), 'tcmalloc');
    assert.equal(mallocIn(maps('libc.so.6')), 'glibc');
    // A folder named like one is not the library.
    assert.equal(mallocIn('7f1a2b000000-7f1a2b020000 r-xp 00000000 fd:01 262 /opt/libmimalloc.so/libc.so.6'), 'glibc');
  });
});

describe("a process's system calls that read and write", () => {
  it('counts each write and read this process makes, the same by its pid as by self', () => {
    const path = join(tmpdir(), `fieldstream-io-calls-${process.pid}`);
    const fd = openSync(path, 'w+');
    try {
      const before = processIoCalls('self');
      for (let i = 0; i < 1000; i++) writeSync(fd, 'x', i);
      for (let i = 0; i < 1000; i++) readSync(fd, Buffer.alloc(1), 0, 1, i);
      const after = processIoCalls(process.pid);
      // The counts are the whole process's: the test runner's own threads read and write meanwhile
      // (a few dozen calls), and reading /proc/PID/io is a read or two. At least these, not many more.
      const writes = after.writes - before.writes;
      const reads = after.reads - before.reads;
      assert.ok(writes >= 1000 && writes < 1200, JSON.stringify({ before, after }));
      assert.ok(reads >= 1000 && reads < 1200, JSON.stringify({ before, after }));
    } finally {
      closeSync(fd);
      rmSync(path);
    }
  });
});
