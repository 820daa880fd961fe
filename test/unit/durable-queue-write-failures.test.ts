import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
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
 *
 * The disk failing an fsync (EIO) cannot be had without a failing device: FileHandle's fsyncs are
 * replaced in this process instead (as durable-queue.test.ts slows them down). After a real EIO,
 * Linux marks the pages it failed to write clean: they may read back as zeros once evicted or
 * after a power cut, which the tests play by writing zeros there before the next start.
 */
const reading = (v: number) => ({ dataType: 'timeseries', payload: { v, timestamp: 1700000000000 + v } });
const segments = (dir: string) => readdirSync(dir).filter((f) => f.startsWith('seg-')).sort();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const isWriteFailed = (e: unknown) => isFieldStreamError(e, 'FIELD_QUEUE_WRITE_FAILED');
const values = (ms: readonly { payloadJson: string }[]) => ms.map((m) => (JSON.parse(m.payloadJson) as { v: number }).v);

/**
 * Makes FileHandle's `method` ('datasync': a segment's fsync; 'sync': the folder's, durable-fs.ts)
 * answer EIO for its next `fail` calls, each `failDelayMs` late (a slow disk); the other calls run
 * the real one. `calls` counts every call.
 */
async function fsyncFaults(dir: string, method: 'datasync' | 'sync') {
  const probePath = join(dir, `probe-${method}`);
  const probe = await open(probePath, 'w');
  const proto = Object.getPrototypeOf(probe) as Record<typeof method, (this: unknown) => Promise<void>>;
  await probe.close();
  unlinkSync(probePath);
  const real = proto[method];
  const fault = { fail: 0, failDelayMs: 0, calls: 0, restore: () => void (proto[method] = real) };
  proto[method] = async function (this: unknown) {
    fault.calls++;
    if (fault.fail === 0) return real.call(this);
    fault.fail--;
    await sleep(fault.failDelayMs);
    throw Object.assign(new Error(`EIO: i/o error, ${method === 'sync' ? 'fsync' : 'fdatasync'}`), { code: 'EIO', errno: -5 });
  };
  return fault;
}

/** Writes `bytes` zeros at `at` in `path`: pages whose fsync failed, read back from the disk. */
function zeros(path: string, at: number, bytes: number): void {
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.alloc(bytes), 0, bytes, at);
  closeSync(fd);
}

/** The files this process holds open. */
const openFiles = () =>
  readdirSync('/proc/self/fd').map((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      return ''; // the fd of the listing itself, closed meanwhile
    }
  });

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

  it('counts a committed segment the disk would not delete until it is gone, and deletes it later', async () => {
    const dir = join(tmp.dir, 'undeleted');
    const opts: QueueOptions = { dir, maxBytes: 1 << 20, segmentBytes: 1024, fullPolicy: 'reject', sync: { mode: 'always' }, log: new LogCapture().logger };
    const q = await DurableQueue.open(opts);
    for (let v = 0; v < 30; v++) await q.append([reading(v)]);
    const sent = q.next(100);
    const oldest = join(dir, segments(dir)[0] as string);
    const size = statSync(oldest).size;
    // The oldest segment's name taken by a folder: it cannot be removed as a file.
    rmSync(oldest);
    mkdirSync(oldest);
    q.ack(sent.slice(0, -1).map((m) => m.seq));
    assert.ok(existsSync(oldest));
    const active = statSync(join(dir, segments(dir).at(-1) as string)).size;
    assert.ok(q.bytesOnDisk >= size + active, `${q.bytesOnDisk} bytes counted: the segment still on disk (${size} bytes) is not`);
    rmSync(oldest, { recursive: true });
    q.ack(sent.slice(-1).map((m) => m.seq));
    assert.deepEqual(segments(dir).length, 1, 'deleted once the disk lets it go');
    await q.close();
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

describe('the durable queue when an fsync fails', () => {
  const tmp = tempDir('queue-fsync-fail');
  after(() => tmp.cleanup());
  let n = 0;
  const setup = (over: Partial<QueueOptions> = {}) => {
    const dir = join(tmp.dir, `q${++n}`);
    const opts: QueueOptions = { dir, maxBytes: 1 << 30, segmentBytes: 1 << 20, fullPolicy: 'reject', sync: { mode: 'always' }, log: new LogCapture().logger, ...over };
    return { dir, opts, open: () => DurableQueue.open(opts) };
  };

  it('refuses the records it covered and those written behind it, sends none of them, gives their numbers to none, and answers later ones from a new segment', async () => {
    const { dir, open } = setup();
    const fault = await fsyncFaults(tmp.dir, 'datasync');
    try {
      const q = await open();
      assert.deepEqual((await q.append([reading(0), reading(1)])).map((m) => m.seq), [1, 2]);
      const first = join(dir, segments(dir)[0] as string);
      const good = statSync(first).size;

      // The fsync of reading 2 fails, late: reading 3 is written behind it meanwhile, and its own
      // fsync, the next, succeeds. Both sit in the range the disk may not hold: both are refused.
      fault.fail = 1;
      fault.failDelayMs = 200;
      const calls = fault.calls;
      const a = q.append([reading(2)]);
      while (fault.calls === calls) await sleep(2);
      const b = q.append([reading(3)]);
      const [ra, rb] = await Promise.allSettled([a, b]);
      assert.ok(ra.status === 'rejected' && isWriteFailed(ra.reason), String(ra.status === 'rejected' ? ra.reason : 'answered'));
      assert.ok(rb.status === 'rejected' && isWriteFailed(rb.reason), `reading 3, written behind the failed range, was ${rb.status === 'rejected' ? `refused otherwise: ${rb.reason}` : 'answered'}`);

      // Their numbers (3, 4) were perhaps sent: never given again. What comes next goes to a new segment.
      assert.deepEqual((await q.append([reading(4), reading(5)])).map((m) => m.seq), [5, 6]);
      assert.deepEqual(segments(dir), ['seg-0000000000000001.log', 'seg-0000000000000005.log']);
      assert.equal(statSync(first).size, good, 'the refused records are cut off the sealed segment');
      q.rewind();
      assert.deepEqual(values(q.next(100)), [0, 1, 4, 5], 'the refused records are not sent');
      assert.equal(q.depth, 4);
      await q.close();

      // The pages whose fsync failed read back as zeros (the cut did not reach the disk, say).
      zeros(first, good, 512);
      const again = await open();
      assert.notEqual(again.epoch, q.epoch, 'an fsync failed: a new epoch, though the machine did not restart');
      const sent = again.next(100);
      assert.deepEqual(
        sent.map((m) => [m.seq, (JSON.parse(m.payloadJson) as { v: number }).v]),
        [
          [1, 0],
          [2, 1],
          [5, 4],
          [6, 5],
        ],
        'every record answered is there',
      );
      const [next] = await again.append([reading(6)]);
      assert.equal(next?.messageId, `${again.epoch}.7`);
      again.ack([...sent.map((m) => m.seq), 7]);
      assert.equal(again.committedThrough, 7, 'the watermark passes the refused numbers');
      assert.equal(again.depth, 0);
      await again.close();
    } finally {
      fault.restore();
    }
  });

  it("refuses whole a batch written across the segment's end as that segment's fsync fails", async () => {
    const { dir, open } = setup({ segmentBytes: 1024 });
    const fault = await fsyncFaults(tmp.dir, 'datasync');
    try {
      const q = await open();
      await q.append([0, 1, 2, 3].map(reading));
      const first = join(dir, segments(dir)[0] as string);
      const good = statSync(first).size;
      fault.fail = 1;
      fault.failDelayMs = 200;
      const calls = fault.calls;
      const a = q.append([reading(4)]);
      while (fault.calls === calls) await sleep(2);
      // Its first records go behind reading 4 in the segment, the rest to the next one.
      const b = q.append([5, 6, 7, 8, 9, 10, 11, 12].map(reading));
      const [ra, rb] = await Promise.allSettled([a, b]);
      assert.ok(ra.status === 'rejected' && isWriteFailed(ra.reason));
      assert.ok(rb.status === 'rejected' && isWriteFailed(rb.reason), `the batch was ${rb.status === 'rejected' ? `refused otherwise: ${rb.reason}` : 'answered, its first records refused and cut off'}`);
      const [c] = await q.append([reading(13)]);
      q.rewind();
      assert.deepEqual(values(q.next(100)), [0, 1, 2, 3, 13]);
      await q.close();

      zeros(first, good, 2048);
      const again = await open();
      const sent = again.next(100);
      assert.deepEqual(values(sent), [0, 1, 2, 3, 13]);
      again.ack(sent.map((m) => m.seq));
      assert.equal(again.committedThrough, c?.seq);
      assert.equal(again.depth, 0);
      await again.close();
    } finally {
      fault.restore();
    }
  });

  it('lets the next start name nothing as a refused record was when the segment it fills cannot be replaced and meta.json cannot be saved', async () => {
    const { dir, open } = setup({ segmentBytes: 1024 });
    const fault = await fsyncFaults(tmp.dir, 'datasync');
    // Every name the next segment could take is a folder (the disk refuses it), and so is the name
    // meta.json is written aside under: the next start cannot be told to take a new epoch.
    const blocked = Array.from({ length: 12 }, (_, i) => join(dir, `seg-${String(i + 6).padStart(16, '0')}.log`));
    try {
      const q = await open();
      await q.append([0, 1, 2, 3].map(reading));
      fault.fail = 1;
      fault.failDelayMs = 200;
      const calls = fault.calls;
      const a = q.append([reading(4)]);
      const refusedId = `${q.epoch}.5`; // written, perhaps sent, and stored by the distributor
      while (fault.calls === calls) await sleep(2);
      for (const path of blocked) mkdirSync(path);
      mkdirSync(join(dir, `meta.json.tmp-${process.pid}`));
      // Fills the segment whose fsync fails: the segment is replaced in the middle of this write.
      const b = q.append([5, 6, 7, 8, 9, 10, 11, 12].map(reading));
      const [ra, rb] = await Promise.allSettled([a, b]);
      assert.ok(ra.status === 'rejected' && isWriteFailed(ra.reason));
      assert.ok(rb.status === 'rejected' && isWriteFailed(rb.reason));
      await q.close();
      for (const path of [...blocked, join(dir, `meta.json.tmp-${process.pid}`)]) rmSync(path, { recursive: true });

      const again = await open();
      const [m] = await again.append([reading(13)]);
      assert.notEqual(m?.messageId, refusedId, 'a new reading must not carry the id of a refused one: its receipt would delete it');
      await again.close();
    } finally {
      fault.restore();
    }
  });

  it('lets the next start name nothing as a refused record was, though the client stopped right after the failure', async () => {
    const { dir, open } = setup();
    const fault = await fsyncFaults(tmp.dir, 'datasync');
    try {
      const q = await open();
      await q.append([reading(0)]);
      const first = join(dir, segments(dir)[0] as string);
      const good = statSync(first).size;
      fault.fail = 1;
      await assert.rejects(q.append([reading(1)]), isWriteFailed);
      const refusedId = `${q.epoch}.2`; // perhaps sent, and stored by the distributor
      await q.close();
      // What the failed fsync covered reads back as zeros: recovery cuts the segment there.
      zeros(first, good, 512);

      const again = await open();
      assert.notEqual(again.epoch, q.epoch, 'a new epoch after a failed fsync, without a restart of the machine');
      const [m] = await again.append([reading(2)]);
      assert.notEqual(m?.messageId, refusedId, 'a new reading must not carry the id of a refused one: its receipt would delete it');
      assert.deepEqual(values(again.next(10)), [0, 2]);
      await again.close();
    } finally {
      fault.restore();
    }
  });

  it('with a sync interval, seals the segment too: what comes after goes to a new one', async () => {
    const { dir, open } = setup({ sync: { mode: 'interval', ms: 20 } });
    const fault = await fsyncFaults(tmp.dir, 'datasync');
    try {
      const q = await open();
      fault.fail = 1;
      await q.append([reading(0)]); // answered before its fsync, which fails
      for (let i = 0; i < 200 && segments(dir).length < 2; i++) await sleep(10);
      await q.append([reading(1)]);
      assert.deepEqual(segments(dir), ['seg-0000000000000001.log', 'seg-0000000000000002.log']);
      await q.close();
      const again = await open();
      assert.notEqual(again.epoch, q.epoch);
      assert.deepEqual(values(again.next(10)), [0, 1]);
      await again.close();
    } finally {
      fault.restore();
    }
  });

  it('opens all the same when the folder fsync of the new segment made at a start fails, and answers nothing from that segment before its name is synced', async () => {
    const { dir, open } = setup({ segmentBytes: 256 });
    // Each record larger than a segment: a segment each, so that every start makes a new one.
    const padded = (v: number) => ({ dataType: 'timeseries', payload: { v, timestamp: 1700000000000 + v, pad: 'x'.repeat(300) } });
    const fault = await fsyncFaults(tmp.dir, 'sync'); // the queue fsyncs only its folder this way
    try {
      fault.fail = 1_000;
      // A first start, in an empty folder, and a start after records were answered.
      const first = await open();
      await assert.rejects(first.append([padded(0)]), isWriteFailed, 'its name is not synced: nothing goes into it');
      assert.deepEqual(segments(dir).map((f) => statSync(join(dir, f)).size), [0]);
      fault.fail = 0;
      await first.append([padded(1)]);
      await first.append([padded(2)]);
      await first.close();

      fault.fail = 1_000;
      const calls = fault.calls;
      const again = await open();
      assert.ok(fault.calls > calls, 'the folder fsync was tried at the start');
      assert.deepEqual(values(again.next(10)), [1, 2], 'what was answered is there to send');
      await assert.rejects(again.append([padded(3)]), isWriteFailed);
      fault.fail = 0;
      await again.append([padded(4)]);
      await again.close();

      const last = await open();
      assert.deepEqual(values(last.next(10)), [1, 2, 4]);
      await last.close();
    } finally {
      fault.restore();
    }
  });

  it('writes nothing, after a restart, into a new segment whose name a stop left not synced into the folder', async () => {
    const { dir, open } = setup({ segmentBytes: 4096 });
    const padded = (v: number) => ({ dataType: 'timeseries', payload: { v, timestamp: 1700000000000 + v, pad: 'x'.repeat(200) } });
    const fault = await fsyncFaults(tmp.dir, 'sync'); // the queue fsyncs only its folder this way
    try {
      const q = await open();
      fault.fail = 1_000; // the folder's fsync keeps failing, across the restart
      for (let v = 0; segments(dir).length < 2; v++) await q.append([padded(v)]).catch(() => undefined);
      const answered = values(q.next(100));
      await q.close();

      const again = await open();
      // Answered from the new segment, it would be lost with that segment's name at a power cut.
      await assert.rejects(again.append([padded(100)]), isWriteFailed);
      fault.fail = 0;
      await again.append([padded(101)]);
      assert.deepEqual(values(again.next(100)), [...answered, 101]);
      await again.close();
    } finally {
      fault.restore();
    }
  });

  it("writes nothing into a new segment before its name is synced into the folder, and closes the full one's file", async () => {
    const { dir, open } = setup({ segmentBytes: 4096 });
    const padded = (v: number) => ({ dataType: 'timeseries', payload: { v, timestamp: 1700000000000 + v, pad: 'x'.repeat(200) } });
    const fault = await fsyncFaults(tmp.dir, 'sync'); // the queue fsyncs only its folder this way
    try {
      const q = await open();
      // The folder fsync of the next new segment fails, and so does the first try again.
      fault.fail = 2;
      const answered: number[] = [];
      let refused: unknown;
      for (let v = 0; v < 100 && refused === undefined; v++) {
        await q.append([padded(v)]).then(
          () => answered.push(v),
          (e: unknown) => (refused = e),
        );
      }
      assert.ok(isWriteFailed(refused), String(refused));
      const [full, fresh] = segments(dir).map((f) => join(dir, f));
      assert.ok(fresh !== undefined, 'a new segment was made');
      assert.ok(!openFiles().includes(full as string), 'the full segment is closed');

      await assert.rejects(q.append([padded(100)]), isWriteFailed, 'its name is still not synced: nothing goes into it');
      assert.equal(statSync(fresh).size, 0);
      const calls = fault.calls;
      const [m] = await q.append([padded(101)]);
      assert.ok(fault.calls > calls, 'the folder was synced before the record was answered');
      assert.equal(m?.seq, answered.length + 1, "the refused records' numbers were given again");
      assert.equal(statSync(fresh).size > 0, true);
      await q.close();

      const again = await open();
      const sent = again.next(1000);
      assert.deepEqual(values(sent), [...answered, 101]);
      again.ack(sent.map((x) => x.seq));
      assert.equal(again.depth, 0);
      assert.equal(again.committedThrough, answered.length + 1);
      await again.close();
    } finally {
      fault.restore();
    }
  });
});
