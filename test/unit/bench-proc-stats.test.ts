import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryByMapping, residentMemory } from '../../bench/lib/proc-stats.ts';

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
