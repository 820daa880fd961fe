import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { DurableQueue, type QueueOptions } from '../../field-client/src/queue/durable-queue.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { withFileSizeLimit } from '../helpers/file-size-limit.ts';
import { fullDiskSkip, moduleUrl, runOnSmallDisk } from '../helpers/full-disk.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * The disk refusing the queue's writes, for real: RLIMIT_FSIZE (set on this process with prlimit)
 * makes the kernel take only the bytes up to the limit, then refuse with EFBIG, as a disk filling
 * up does. What must hold: a write that did not reach the disk whole is refused whole, its bytes
 * are cut off the segment, and its sequence numbers are given again, so that nothing written after
 * it is lost at the next start and the committed watermark can pass.
 */
const reading = (v: number) => ({ dataType: 'timeseries', payload: { v, timestamp: 1700000000000 + v } });

describe('the durable queue when the disk refuses a write', () => {
  const tmp = tempDir('queue-fail');
  after(() => tmp.cleanup());

  it('refuses the write whole, cuts it off the segment, numbers on without a gap, and loses nothing written after it', async () => {
    const logs = new LogCapture();
    const opts: QueueOptions = { dir: tmp.dir, maxBytes: 1 << 30, segmentBytes: 1 << 20, fullPolicy: 'reject', sync: { mode: 'always' }, log: logs.logger };
    const q = await DurableQueue.open(opts);
    assert.deepEqual((await q.append([reading(0), reading(1), reading(2)])).map((m) => m.seq), [1, 2, 3]);
    const [segment] = readdirSync(tmp.dir).filter((f) => f.startsWith('seg-'));
    const path = join(tmp.dir, segment as string);
    const good = statSync(path).size;

    // Room for 20 more bytes: the first write(2) takes 20 (a short write, no error), the next EFBIG.
    // The second append queues behind the first's write: its numbers follow the first's, and
    // neither reaches the disk.
    const refused = await withFileSizeLimit(good + 20, () => Promise.allSettled([q.append([reading(10), reading(11)]), q.append([reading(12)])]));
    for (const r of refused) {
      assert.equal(r.status, 'rejected');
      assert.ok(isFieldStreamError((r as PromiseRejectedResult).reason, 'FIELD_QUEUE_WRITE_FAILED'), String((r as PromiseRejectedResult).reason));
    }
    assert.equal(statSync(path).size, good, 'the part of the refused write that reached the file is cut off');

    // The refused numbers are given again.
    assert.deepEqual((await q.append([reading(20), reading(21)])).map((m) => m.seq), [4, 5]);
    assert.equal(q.depth, 5);
    await q.close();

    // What a restart finds: every accepted record, in order, none torn.
    const again = await DurableQueue.open({ ...opts, log: new LogCapture().logger });
    assert.equal(again.stats.corruptTails, 0);
    const sent = again.next(100);
    assert.deepEqual(
      sent.map((m) => [m.seq, (JSON.parse(m.payloadJson) as { v: number }).v]),
      [
        [1, 0],
        [2, 1],
        [3, 2],
        [4, 20],
        [5, 21],
      ],
    );
    again.ack(sent.map((m) => m.seq));
    assert.equal(again.committedThrough, 5, 'the watermark passes every record: no number was left behind');
    assert.equal(again.depth, 0);
    await again.close();
  });

  it('lets no ack or commit name a number that was never written', async () => {
    const dir = tempDir('queue-unwritten');
    try {
      const q = await DurableQueue.open({ dir: dir.dir, maxBytes: 1 << 30, segmentBytes: 1 << 20, fullPolicy: 'reject', sync: { mode: 'always' }, log: new LogCapture().logger });
      await q.append([reading(0)]);
      const pending = q.append([reading(1)]); // numbered 2, not yet written
      q.ack([2]);
      assert.equal(q.stats.acked, 0, 'an ack for a number not on disk is ignored');
      await pending;
      q.ack([2]);
      assert.equal(q.stats.acked, 1);
      await q.close();
    } finally {
      dir.cleanup();
    }
  });
});

describe('the durable queue on a full disk', () => {
  const tmp = tempDir('queue-full-disk');
  after(() => tmp.cleanup());
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  /**
   * A real full disk (a tmpfs of 256 KiB, filled): the queue goes on sending what it holds, and
   * every commit makes it write ack.json, which the disk refuses. That write is advisory: the
   * process stays up, the failure is logged once, and ack.json is written once there is room.
   */
  it('keeps draining when the disk refuses ack.json, writes it once there is room, and closes', { skip: fullDiskSkip }, () => {
    const mnt = join(tmp.dir, 'drain');
    mkdirSync(mnt);
    const r = runOnSmallDisk(
      mnt,
      `
      import assert from 'node:assert/strict';
      import { existsSync, readFileSync } from 'node:fs';
      import { DurableQueue } from ${moduleUrl('field-client/src/queue/durable-queue.ts')};
      import { createLogger } from ${moduleUrl('shared/logger.ts')};
      import { fillDisk } from ${moduleUrl('test/helpers/full-disk.ts')};
      const lines = [];
      const log = createLogger('child', 'info', { write: (l) => lines.push(JSON.parse(l)) });
      const codes = () => lines.map((l) => l.code).filter(Boolean);
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const reading = (v) => ({ dataType: 'timeseries', payload: { v, timestamp: 1700000000000 + v } });
      const dir = process.env.MNT + '/queue';
      const opts = { dir, maxBytes: 1 << 30, segmentBytes: 64 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, log };
      const q = await DurableQueue.open(opts);
      await q.append(Array.from({ length: 10 }, (_, v) => reading(v)));
      const disk = fillDisk(process.env.MNT);
      assert.equal(disk.code, 'ENOSPC');
      q.ack(q.next(100).map((m) => m.seq)); // delivered; without receipts the ack commits
      await sleep(${TIMINGS.ackPersistDelayMs + TIMINGS.ackPersistRetryMs + 300}); // the write, then a retry
      assert.deepEqual(codes(), ['FIELD_STATE_WRITE_FAILED'], 'logged once, not at every retry');
      assert.equal(existsSync(dir + '/ack.json'), false);
      disk.free();
      await sleep(${TIMINGS.ackPersistRetryMs + 300});
      assert.deepEqual(JSON.parse(readFileSync(dir + '/ack.json', 'utf8')), { watermark: 10 }, 'written by a retry once there is room');

      // Full again: a stop on it closes all the same; ack.json keeps the watermark before these,
      // so a restart sends them again, and loses nothing.
      await q.append(Array.from({ length: 5 }, (_, v) => reading(10 + v)));
      fillDisk(process.env.MNT);
      q.ack(q.next(100).map((m) => m.seq));
      await q.close();
      assert.equal(codes().filter((c) => c === 'FIELD_STATE_WRITE_FAILED').length, 2);
      const again = await DurableQueue.open(opts);
      assert.deepEqual(again.next(100).map((m) => m.seq), [11, 12, 13, 14, 15]);
      console.log('done');
      `,
    );
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /done/);
  });

  it('makes room under drop-oldest when the disk refuses ack.json after the drop, and writes it later', async () => {
    const dir = join(tmp.dir, 'drop');
    const logs = new LogCapture();
    const opts: QueueOptions = { dir, maxBytes: 4096, segmentBytes: 1024, fullPolicy: 'drop-oldest', sync: { mode: 'always' }, log: logs.logger };
    const q = await DurableQueue.open(opts);
    let v = 0;
    while (q.bytesOnDisk + 400 < opts.maxBytes) await q.append([reading(v++)]);
    // Its temporary file's name taken by a folder: the disk refuses ack.json (a real full disk
    // would not: the drop itself frees room).
    mkdirSync(join(dir, 'ack.json.tmp'));
    const appended = await q.append([reading(100), reading(101), reading(102)]);
    assert.equal(appended.length, 3);
    assert.ok(q.stats.dropped > 0, 'the oldest segment was dropped');
    assert.deepEqual(logs.codes(), ['FIELD_QUEUE_DROPPED_OLDEST', 'FIELD_STATE_WRITE_FAILED']);
    rmSync(join(dir, 'ack.json.tmp'), { recursive: true });
    await sleep(TIMINGS.ackPersistRetryMs + 300);
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'ack.json'), 'utf8')), { watermark: q.committedThrough });
    await q.close();
    const again = await DurableQueue.open({ ...opts, log: new LogCapture().logger });
    assert.deepEqual(
      again.next(100).slice(-3).map((m) => (JSON.parse(m.payloadJson) as { v: number }).v),
      [100, 101, 102],
    );
    await again.close();
  });

  it('refuses an append with FIELD_QUEUE_WRITE_FAILED when the oldest segment cannot be deleted to make room, and counts what it dropped', async () => {
    const dir = join(tmp.dir, 'undeletable');
    const logs = new LogCapture();
    const opts: QueueOptions = { dir, maxBytes: 4096, segmentBytes: 1024, fullPolicy: 'drop-oldest', sync: { mode: 'always' }, log: logs.logger };
    const q = await DurableQueue.open(opts);
    let v = 0;
    while (q.bytesOnDisk + 400 < opts.maxBytes) await q.append([reading(v++)]);
    // The oldest segment's name taken by a folder: it cannot be removed as a file.
    const oldest = join(dir, readdirSync(dir).filter((f) => f.startsWith('seg-')).sort()[0] as string);
    rmSync(oldest);
    mkdirSync(oldest);
    const refused = await q.append([reading(100), reading(101), reading(102)]).then(
      () => undefined,
      (err: unknown) => err,
    );
    assert.ok(isFieldStreamError(refused, 'FIELD_QUEUE_WRITE_FAILED'), String(refused));
    assert.ok(q.stats.dropped > 0, 'what the drop let go of is counted');
    assert.ok(logs.codes().includes('FIELD_QUEUE_DROPPED_OLDEST'));
    rmSync(oldest, { recursive: true });
    assert.equal((await q.append([reading(103)])).length, 1, 'taken once the segment is gone');
    assert.equal(existsSync(oldest), false);
    await q.close();
  });
});
