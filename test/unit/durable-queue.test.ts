import assert from 'node:assert/strict';
import { appendFileSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { DurableQueue, type QueueOptions } from '../../field-client/src/queue/durable-queue.ts';
import { TailCache } from '../../field-client/src/queue/tail-cache.ts';
import { encodeBatch } from '../../field-client/src/queue/batch-encoder.ts';
import { decodeRecord } from '../../field-client/src/queue/record-codec.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';

const reading = (v: number) => ({ dataType: 'timeseries', payload: { v, timestamp: 1700000000000 + v } });
const segments = (dir: string) => readdirSync(dir).filter((f) => f.startsWith('seg-')).sort();

describe('the durable queue', () => {
  const dirs: Array<{ cleanup(): void }> = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) d.cleanup();
  });
  const setup = (over: Partial<QueueOptions> = {}) => {
    const tmp = tempDir('queue');
    dirs.push(tmp);
    const logs = new LogCapture();
    const opts: QueueOptions = { dir: tmp.dir, maxBytes: 1 << 30, segmentBytes: 64 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, log: logs.logger, ...over };
    return { dir: tmp.dir, logs, opts, open: () => DurableQueue.open(opts) };
  };

  it('hands messages out in order, once, until acked; a rewind starts again from the first unacked', async () => {
    const { open } = setup();
    const q = await open();
    const accepted = await q.append([reading(0), reading(1), reading(2), reading(3)]);
    assert.deepEqual(accepted.map((m) => m.seq), [1, 2, 3, 4]);
    assert.ok(accepted.every((m) => m.messageId === `${q.epoch}.${m.seq}`));
    assert.deepEqual(q.next(2).map((m) => m.seq), [1, 2]);
    assert.deepEqual(q.next(10).map((m) => m.seq), [3, 4]);
    assert.deepEqual(q.next(10), []);
    q.ack([2, 4]); // out of order
    assert.equal(q.depth, 2);
    q.rewind();
    assert.deepEqual(q.next(10).map((m) => m.seq), [1, 3]);
    q.ack([1, 3]);
    assert.equal(q.depth, 0);
    await q.close();
  });

  it('keeps everything unacked across a restart, and forgets what was acked', async () => {
    const { open } = setup();
    let q = await open();
    const epoch = q.epoch;
    await q.append(Array.from({ length: 1000 }, (_, i) => reading(i)));
    q.ack(Array.from({ length: 600 }, (_, i) => i + 1));
    await q.close();
    q = await open();
    assert.equal(q.epoch, epoch, 'message ids stay stable');
    assert.equal(q.depth, 400);
    const rest = q.next(1000);
    assert.deepEqual(rest.map((m) => (JSON.parse(m.payloadJson) as { v: number }).v), Array.from({ length: 400 }, (_, i) => 600 + i));
    const more = await q.append([reading(5000)]);
    assert.equal(more[0]?.seq, 1001, 'sequence numbers continue');
    await q.close();
  });

  it('removes at its open what a rewrite of meta.json or ack.json killed before its rename left aside, and keeps the files it was to replace and the file aside of a process still running', async () => {
    // Written aside (NAME.tmp-PID), synced, then renamed: a kill before the rename left the file
    // aside on the device's disk for good, another at each such kill (another process id each start).
    const { dir, open } = setup();
    let q = await open();
    const epoch = q.epoch;
    await q.append([reading(0), reading(1)]);
    q.ack([1]);
    await q.close();
    const asides = [join(dir, 'meta.json.tmp-4194301'), join(dir, 'ack.json.tmp-4194302')];
    for (const a of asides) writeFileSync(a, '{"epo'); // cut off by the kill
    writeFileSync(join(dir, 'meta.json.bak'), "an operator's copy\n");
    // One of a process still running is its own, written now: left to it.
    const running = join(dir, `ack.json.tmp-${process.ppid}`);
    writeFileSync(running, '{"watermark":1}');
    q = await open();
    try {
      assert.deepEqual(asides.filter((a) => readdirSync(dir).includes(a.slice(dir.length + 1))), [], 'the files aside are gone');
      assert.ok(readdirSync(dir).includes('meta.json.bak'), 'nothing else is touched');
      assert.ok(readdirSync(dir).includes(`ack.json.tmp-${process.ppid}`), 'nor the file aside of a process still running');
      assert.equal(q.epoch, epoch, 'meta.json stands');
      assert.deepEqual(q.next(10).map((m) => m.seq), [2], 'ack.json stands');
    } finally {
      await q.close();
    }
  });

  it('hands out from memory exactly what it would read back from disk, across segments and a budget overrun', async () => {
    // A 2 KiB memory budget and 4 KiB segments: the sender finds records in memory, on disk only,
    // and both within one segment.
    const { open } = setup({ segmentBytes: 4096, tailCacheBytes: 2048 });
    const q = await open();
    const payload = { v: 0, note: 'é"\\', timestamp: 1700000000000 };
    await q.append([{ dataType: 'timeseries', payload }]);
    payload.v = 99; // changed after it was accepted: what was accepted is sent
    const sent = [...q.next(10)];
    for (let round = 0; round < 20; round++) {
      await q.append(Array.from({ length: 1 + round * 3 }, (_, i) => reading(round * 100 + i)));
      if (round % 4 === 0) continue; // the sender falls behind, past the budget
      sent.push(...q.next(1000));
    }
    sent.push(...q.next(1000));
    assert.equal(JSON.parse(sent[0]?.payloadJson as string).v, 0);
    assert.deepEqual(sent.map((m) => m.seq), Array.from({ length: sent.length }, (_, i) => i + 1), 'every message once, in order');
    q.rewind();
    assert.deepEqual(q.next(10_000), sent, 'read back from disk: the same messages, the same text');
    await q.close();
  });

  it('refuses a payload that cannot be JSON with FIELD_INPUT_INVALID, and keeps what it had', async () => {
    const { open } = setup();
    const q = await open();
    await q.append([reading(1)]);
    const cyclic: Record<string, unknown> = { v: 1 };
    cyclic.self = cyclic;
    for (const payload of [cyclic, { n: 10n }, undefined]) {
      await assert.rejects(q.append([reading(2), { dataType: 'timeseries', payload }]), (e: unknown) => e instanceof FieldStreamError && e.code === 'FIELD_INPUT_INVALID');
    }
    assert.equal(q.depth, 1, 'nothing of a refused call was queued');
    assert.deepEqual(q.next(10).map((m) => m.seq), [1]);
    assert.deepEqual((await q.append([reading(3)])).map((m) => m.seq), [2], 'sequence numbers go on without a gap');
    await q.close();
  });

  it('refuses a payload no frame of the gateway could carry with FIELD_INPUT_INVALID: its producer is told, nothing is queued', async () => {
    const { open } = setup();
    const q = await open();
    // Fewer characters than the limit, but three UTF-8 bytes each (as an HTTP body's bytes that are
    // not UTF-8 become, U+FFFD): past the limit only in bytes.
    const text = '\u20ac'.repeat(Math.ceil(LIMITS.queuedPayloadMaxBytes / 3) + 1);
    assert.ok(text.length < LIMITS.queuedPayloadMaxBytes);
    await assert.rejects(
      q.append([reading(1), { dataType: 'event', payload: { eventType: 'log', message: text } }]),
      (e: unknown) => e instanceof FieldStreamError && e.code === 'FIELD_INPUT_INVALID' && /fit in a frame/.test(e.message),
    );
    assert.equal(q.depth, 0, 'nothing of the refused call was queued');
    await q.close();
  });

  it('spans and deletes segments as they are acked', async () => {
    const { open, dir } = setup({ segmentBytes: 4096 });
    const q = await open();
    await q.append(Array.from({ length: 500 }, (_, i) => reading(i)));
    const before = segments(dir).length;
    assert.ok(before > 5, `${before} segments`);
    const all = q.next(1000);
    assert.equal(all.length, 500);
    q.ack(all.map((m) => m.seq));
    assert.equal(segments(dir).length, 1, 'only the active segment is left');
    await q.close();
  });

  it('recovers from a torn tail: the damaged record is cut, the rest kept, and counted', async () => {
    const { open, dir, logs } = setup();
    let q = await open();
    await q.append(Array.from({ length: 50 }, (_, i) => reading(i)));
    await q.close();
    const seg = join(dir, segments(dir).at(-1) as string);
    // a power cut in the middle of the 51st record: its header and half of its body
    const size = statSync(seg).size;
    appendFileSync(seg, Buffer.from([0, 0, 0, 200, 1, 2, 3, 4, 9, 9, 9]));
    q = await open();
    assert.equal(q.stats.corruptTails, 1);
    assert.equal(statSync(seg).size, size, 'cut back to the last good record');
    assert.equal(q.depth, 50);
    assert.equal(q.next(100).length, 50);
    assert.ok(logs.codes().includes('FIELD_QUEUE_CORRUPT'));
    // flipped bits in the last record: its checksum fails, it is cut, the others are fine
    await q.append([reading(50)]);
    await q.close();
    const buf = readFileSync(seg);
    buf[buf.length - 3] = (buf[buf.length - 3] as number) ^ 0xff;
    writeFileSync(seg, buf);
    q = await open();
    assert.equal(q.stats.corruptTails, 1);
    assert.deepEqual(q.next(100).map((m) => (JSON.parse(m.payloadJson) as { v: number }).v), Array.from({ length: 50 }, (_, i) => i));
    // and a segment cut short (a lost page) never crashes the client either
    await q.close();
    truncateSync(seg, 5);
    q = await open();
    assert.equal(q.depth, 0);
    await q.append([reading(1)]);
    await q.close();
  });

  /** Flips one byte in the body of record `index` (0-based) of segment file `path`. */
  const damage = (path: string, index: number) => {
    const buf = readFileSync(path);
    let at = 0;
    for (let i = 0; i < index; i++) at = (decodeRecord(buf, at) as { next: number }).next;
    buf[at + 8 + 5] = (buf[at + 8 + 5] as number) ^ 0x01;
    writeFileSync(path, buf);
  };
  const values = (ms: Array<{ payloadJson: string }>) => ms.map((m) => (JSON.parse(m.payloadJson) as { v: number }).v);

  it('steps over a damaged record in the middle of a segment at recovery: that record alone is lost, and the queue drains', async () => {
    const { open, dir, logs } = setup({ segmentBytes: 4096 });
    let q = await open();
    await q.append(Array.from({ length: 200 }, (_, i) => reading(i)));
    await q.close();
    assert.ok(segments(dir).length > 3);
    damage(join(dir, segments(dir)[0] as string), 2); // a bit flipped in a long-closed segment
    q = await open();
    assert.equal(q.stats.corruptRecords, 1);
    assert.equal(q.stats.corruptTails, 0, 'nothing cut');
    assert.equal(q.depth, 199);
    const held = q.next(1000);
    assert.deepEqual(values(held), Array.from({ length: 200 }, (_, i) => i).filter((v) => v !== 2));
    q.ack(held.map((m) => m.seq));
    assert.deepEqual({ depth: q.depth, committedThrough: q.committedThrough }, { depth: 0, committedThrough: 200 }, 'the watermark passed the lost number');
    await new Promise((r) => setImmediate(r));
    assert.equal(segments(dir).length, 1, 'every segment but the active one deleted');
    assert.ok(logs.codes().includes('FIELD_QUEUE_CORRUPT'));
    await q.close();
  });

  it('forgets what a damaged tail cut from a segment that is not the last: the watermark passes it', async () => {
    const { open, dir } = setup({ segmentBytes: 4096 });
    let q = await open();
    await q.append(Array.from({ length: 200 }, (_, i) => reading(i)));
    await q.close();
    const first = join(dir, segments(dir)[0] as string);
    const buf = readFileSync(first);
    const second = (decodeRecord(buf, 0) as { next: number }).next;
    buf.fill(0, second); // zeros from the second record on (pages never written): nothing after it can be found
    writeFileSync(first, buf);
    q = await open();
    assert.equal(q.stats.corruptTails, 1);
    const held = q.next(1000);
    assert.equal(values(held)[0], 0);
    assert.ok(q.stats.corruptRecords > 0 && q.stats.corruptRecords + held.length === 200, `${q.stats.corruptRecords} lost, ${held.length} held`);
    q.ack(held.map((m) => m.seq));
    assert.deepEqual({ depth: q.depth, committedThrough: q.committedThrough }, { depth: 0, committedThrough: 200 });
    await q.close();
  });

  it('at run time, the sender steps over a damaged record only, and its number is forgotten', async () => {
    const { open, dir } = setup({ segmentBytes: 4096 });
    const q = await open();
    await q.append(Array.from({ length: 200 }, (_, i) => reading(i))); // no sender yet: nothing kept in memory
    damage(join(dir, segments(dir)[0] as string), 1);
    const sent = q.next(1000);
    assert.deepEqual(values(sent), Array.from({ length: 200 }, (_, i) => i).filter((v) => v !== 1));
    assert.equal(q.stats.corruptRecords, 1);
    q.ack(sent.map((m) => m.seq));
    q.rewind();
    assert.deepEqual(q.next(1000), []);
    assert.deepEqual({ depth: q.depth, committedThrough: q.committedThrough }, { depth: 0, committedThrough: 200 });
    await q.close();
  });


  it('when full, refuses new data under "reject", and counts it', async () => {
    const { open, logs } = setup({ maxBytes: 20_000, segmentBytes: 4096, fullPolicy: 'reject' });
    const q = await open();
    let accepted = 0;
    let refused: unknown;
    for (let i = 0; i < 1000 && !refused; i++) {
      await q.append([reading(i)]).then(
        () => accepted++,
        (e: unknown) => (refused = e),
      );
    }
    assert.ok(refused instanceof FieldStreamError && refused.code === 'FIELD_QUEUE_FULL');
    assert.equal(q.stats.refused, 1);
    assert.equal(q.depth, accepted, 'nothing accepted was lost');
    assert.ok(q.bytesOnDisk <= 20_000);
    void logs;
    await q.close();
  });

  it('when full, drops the oldest under "drop-oldest", counts and logs it', async () => {
    const { open, logs } = setup({ maxBytes: 20_000, segmentBytes: 4096, fullPolicy: 'drop-oldest' });
    const q = await open();
    for (let i = 0; i < 1000; i++) await q.append([reading(i)]);
    assert.ok(q.stats.dropped > 0);
    assert.equal(q.depth + q.stats.dropped, 1000, 'every message is either queued or counted as dropped');
    const left = q.next(2000).map((m) => (JSON.parse(m.payloadJson) as { v: number }).v);
    assert.equal(left.at(-1), 999, 'the newest are kept');
    assert.deepEqual(left, Array.from({ length: left.length }, (_, i) => 1000 - left.length + i));
    assert.ok(logs.codes().includes('FIELD_QUEUE_DROPPED_OLDEST'));
    await q.close();
  });

  it('group-commits concurrent appends, with either sync policy', async () => {
    for (const sync of [{ mode: 'always' as const }, { mode: 'interval' as const, ms: 50 }]) {
      const { open } = setup({ sync });
      const q = await open();
      const results = await Promise.all(Array.from({ length: 200 }, (_, i) => q.append([reading(i)])));
      assert.deepEqual(results.map((r) => r[0]?.seq), Array.from({ length: 200 }, (_, i) => i + 1));
      await q.close();
    }
  });

  it('writes, and makes sendable, what comes while an fsync runs; each producer is answered after an fsync begun once its records were written', async () => {
    const { dir, open } = setup();
    const q = await open();
    // Every fsync made slow (a busy disk, an SD card): the real one runs, 300 ms late.
    const probe = await openFile(join(dir, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { datasync(this: unknown): Promise<void> };
    await probe.close();
    const realSync = proto.datasync;
    const events: string[] = [];
    proto.datasync = async function (this: unknown) {
      events.push('sync started');
      await new Promise((r) => setTimeout(r, 300));
      await realSync.call(this);
      events.push('sync ended');
    };
    try {
      const sendable = async (v: number) => {
        for (;;) {
          const m = q.next(10).find((x) => JSON.parse(x.payloadJson).v === v);
          if (m) return events.push(`${v} sendable`);
          await new Promise((r) => setTimeout(r, 2));
        }
      };
      const a = q.append([reading(1)]).then(() => events.push('1 answered'));
      await sendable(1);
      const b = q.append([reading(2)]).then(() => events.push('2 answered'));
      await sendable(2);
      assert.ok(!events.includes('1 answered'), `2 was written while 1's fsync ran: ${events.join(', ')}`);
      await Promise.all([a, b]);
      // 1: answered after the fsync that started once it was written; 2: after the next one, begun once 1's ended.
      const order = (e: string) => events.indexOf(e);
      assert.ok(order('2 sendable') < order('sync ended'), events.join(', '));
      assert.ok(order('1 answered') > events.indexOf('sync ended'), events.join(', '));
      assert.ok(order('2 answered') > events.lastIndexOf('sync ended') && events.lastIndexOf('sync started') > order('2 sendable'), events.join(', '));
    } finally {
      proto.datasync = realSync;
    }
    await q.close();
    const again = await open();
    assert.deepEqual(again.next(10).map((m) => m.seq), [1, 2]);
    await again.close();
  });
});

describe("a queue record's body", () => {
  it('is the message as JSON, the epoch and any data type escaped as JSON.stringify would', () => {
    // An epoch read back from meta.json may hold anything a string can; data types other than the
    // contract's are queued as given (the gateway refuses them, not the queue).
    for (const epoch of ['mk3abc12ef', 'a"b\\c\u0001é']) {
      const items = [
        { dataType: 'timeseries', payload: { v: 1.5, timestamp: 1700000000000 } },
        { dataType: 'event', payload: { eventType: 'door' } },
        { dataType: 'new"type', payload: 'x' },
      ];
      const batch = encodeBatch(items, 41, epoch, 1700000000123);
      let at = 0;
      items.forEach((item, i) => {
        const r = decodeRecord(batch.block, at);
        assert.equal(r.kind, 'record');
        if (r.kind !== 'record') return;
        const seq = 41 + i;
        assert.equal(r.body.toString('utf8'), JSON.stringify({ seq, messageId: `${epoch}.${seq}`, dataType: item.dataType, payload: item.payload, acceptedAt: 1700000000123 }));
        assert.equal(batch.sizes[i], r.next - at);
        at = r.next;
      });
      assert.equal(at, batch.block.length);
    }
  });
});

describe('the queue tail cache', () => {
  const rec = (start: number) => ({ start, end: start + 100, bytes: 92, message: { seq: start / 100 + 1, messageId: `e.${start / 100 + 1}`, dataType: 'timeseries', payloadJson: '{}', acceptedAt: 0 } });
  it('stays within its budget, oldest out first, and lets go of what the sender passed', () => {
    const cache = new TailCache(10 * 292); // ten records of 92 bytes, with their overhead
    const seg = {};
    for (let i = 0; i < 5000; i++) cache.add(seg, rec(i * 100));
    assert.ok(cache.bytes <= 10 * 292);
    assert.equal(cache.take(seg, 100 * 4989), undefined, 'let go when the budget ran out');
    assert.equal(cache.take(seg, 100 * 4995)?.message.seq, 4996, 'found by bisection');
    assert.equal(cache.take(seg, 100 * 4994), undefined, 'the sender passed it');
    assert.equal(cache.take(seg, 100 * 4996)?.message.seq, 4997, 'the next in step');
    assert.equal(cache.take({}, 100 * 4997), undefined, 'another segment');
    cache.add({}, rec(0));
    assert.equal(cache.take(seg, 100 * 4998), undefined, 'a new segment lets go of the old one');
    assert.equal(cache.bytes, 292);
  });
});
