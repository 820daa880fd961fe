import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { DurableQueue, type QueueOptions } from '../../field-client/src/queue/durable-queue.ts';
import type { FieldStreamError } from '../../shared/errors.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { fullDiskSkip, moduleUrl, runOnSmallDisk } from '../helpers/full-disk.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * The queue's state between "sent" and "gone": a record the gateway acknowledged (it is in the DMZ
 * broker) awaits its commit receipt (the database holds it); only the receipt deletes it.
 */
const reading = (v: number) => ({ dataType: 'timeseries', payload: { v, timestamp: 1700000000000 + v } });
const seqs = (ms: { seq: number }[]) => ms.map((m) => m.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const segments = (dir: string) => readdirSync(dir).filter((f) => f.startsWith('seg-')).sort();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs `body` in a child process on a queue `q` opened with `opts` (`o`: the options, `print(v)`
 * writes a JSON line the parent gets back), then kills it with SIGKILL: no close(), no timer left
 * to run. Resolves with what it printed.
 */
async function killedAfter(opts: QueueOptions, body: string): Promise<unknown[]> {
  const script = `
    import { readFileSync, statSync } from 'node:fs';
    import { join } from 'node:path';
    import { DurableQueue } from ${JSON.stringify(new URL('../../field-client/src/queue/durable-queue.ts', import.meta.url).href)};
    import { createLogger } from ${JSON.stringify(new URL('../../shared/logger.ts', import.meta.url).href)};
    const o = JSON.parse(process.env.QUEUE_OPTIONS);
    const q = await DurableQueue.open({ ...o, log: createLogger('child', 'silent') });
    const print = (v) => process.stdout.write(JSON.stringify(v) + '\\n');
    ${body}
    process.stdout.write('ready\\n');
    setInterval(() => {}, 1000);
  `;
  const { log: _log, ...plain } = opts;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...process.env, QUEUE_OPTIONS: JSON.stringify(plain) }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready\n')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`child exited with ${code}`)));
  });
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  return out
    .split('\n')
    .filter((l) => l !== '' && l !== 'ready')
    .map((l) => JSON.parse(l) as unknown);
}

describe('the durable queue with commit receipts', () => {
  const dirs: Array<{ cleanup(): void }> = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) d.cleanup();
  });
  const setup = (over: Partial<QueueOptions> = {}) => {
    const tmp = tempDir('queue-receipts');
    dirs.push(tmp);
    const logs = new LogCapture();
    const opts: QueueOptions = { dir: tmp.dir, maxBytes: 1 << 30, segmentBytes: 64 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, receipts: true, log: logs.logger, ...over };
    return { dir: tmp.dir, logs, opts, open: () => DurableQueue.open(opts) };
  };

  it('keeps acked records awaiting their receipt: never handed out again, counted with their bytes, until committed', async () => {
    const { open, dir } = setup();
    const q = await open();
    await q.append(range(0, 9).map(reading));
    const before = q.now();
    assert.deepEqual(seqs(q.next(10)), range(1, 10));
    assert.deepEqual(q.awaiting, { count: 0, bytes: 0, oldestAt: undefined });
    q.ack(range(1, 10));
    assert.equal(q.stats.acked, 10);
    assert.equal(q.stats.committed, 0);
    assert.equal(q.depth, 10, 'awaiting records are not gone');
    const { count, bytes, oldestAt } = q.awaiting;
    assert.equal(count, 10);
    // the bytes of the records' bodies as sent: the segment less each record's 8-byte header
    assert.equal(bytes, statSync(join(dir, segments(dir)[0] as string)).size - 10 * 8);
    assert.ok(oldestAt !== undefined && oldestAt >= before && oldestAt <= q.now(), 'on the queue\'s clock');
    assert.deepEqual(q.next(10), [], 'nothing to send');
    q.rewind();
    assert.deepEqual(q.next(10), [], 'a reconnect does not send what awaits its receipt');
    q.ack([3, 4]); // repeated acks change nothing
    assert.equal(q.stats.acked, 10);
    assert.equal(q.commitRanges([[1, 4]]), 4);
    assert.equal(q.commit([9, 7]), 2);
    assert.equal(q.stats.committed, 6);
    assert.equal(q.depth, 4);
    assert.equal(q.committedThrough, 4);
    assert.equal(q.awaiting.count, 4);
    q.rewind();
    assert.deepEqual(q.next(10), []);
    await q.close();
  });

  it('deletes a segment only when every record in it is committed', async () => {
    const { open, dir } = setup({ segmentBytes: 4096 });
    const q = await open();
    await q.append(range(0, 299).map(reading));
    const segs = segments(dir).length;
    assert.ok(segs > 3, `${segs} segments`);
    q.ack(seqs(q.next(1000)));
    assert.equal(segments(dir).length, segs, 'the gateway\'s ack deletes nothing');
    const firstSegment = Number(segments(dir)[1]?.slice(4, 20)) - 1; // the last seq of the first segment: the second starts after it
    q.commitRanges([[2, firstSegment]]);
    assert.equal(segments(dir).length, segs, 'one record of the first segment still awaits its receipt');
    q.commit([1]);
    assert.equal(segments(dir).length, segs - 1, 'the first segment is gone, the others stay');
    assert.equal(q.commitRanges([[1, 300]]), 300 - firstSegment);
    assert.equal(segments(dir).length, 1, 'only the active segment is left');
    assert.equal(q.depth, 0);
    assert.equal(q.awaiting.count, 0);
    assert.equal(q.awaiting.bytes, 0);
    await q.close();
  });

  it('commits on a receipt that overtakes the ack; the late ack then changes nothing', async () => {
    const { open } = setup();
    const q = await open();
    await q.append(range(0, 5).map(reading));
    assert.deepEqual(seqs(q.next(4)), [1, 2, 3, 4]);
    assert.equal(q.commitRanges([[1, 3], [6, 6]]), 4, 'in flight (1-3) and not sent yet (6)');
    q.ack([1, 2, 3, 4]);
    assert.equal(q.stats.acked, 1, 'only 4 was still to be acked');
    assert.equal(q.awaiting.count, 1);
    assert.equal(q.depth, 2, '4 awaits its receipt, 5 is unsent');
    assert.deepEqual(seqs(q.next(10)), [5], 'the committed 6 is never sent');
    await q.close();
  });

  it('answers a replayed or unknown receipt with 0, and changes nothing', async () => {
    const { open, dir } = setup();
    const q = await open();
    await q.append(range(0, 9).map(reading));
    q.ack(seqs(q.next(10)));
    assert.equal(q.commitRanges([[1, 5], [8, 8]]), 6);
    await sleep(300); // ack.json written
    const state = () => ({ depth: q.depth, awaiting: q.awaiting, stats: { ...q.stats }, committedThrough: q.committedThrough, ack: readFileSync(join(dir, 'ack.json'), 'utf8') });
    const before = state();
    assert.equal(before.ack, '{"watermark":5}');
    assert.equal(q.commitRanges([[1, 5], [8, 8]]), 0, 'replayed');
    assert.equal(q.commit([3, 8]), 0, 'replayed, as sequence numbers');
    assert.equal(q.commitRanges([[11, 1000]]), 0, 'never appended');
    assert.equal(q.commitRanges([[7, 6]]), 0, 'an empty range');
    assert.equal(q.commitRanges([[Number.NaN, 9]]), 0, 'not a number');
    assert.equal(q.commit([0, -1, 11, 2 ** 60, 9.5]), 0);
    q.ack([9.5, 10.5]); // not sequence numbers: ignored
    await sleep(300);
    assert.deepEqual(state(), before);
    assert.equal(q.commitRanges([[6, 10]]), 4, '6, 7, 9 and 10: the 8 was committed before');
    assert.equal(q.depth, 0);
    await q.close();
  });

  it('sends again, in order and from disk, what waited too long for its receipt; nothing still in flight twice', async () => {
    const { open } = setup();
    const q = await open();
    await q.append(range(0, 9).map(reading));
    assert.deepEqual(seqs(q.next(10)), range(1, 10));
    q.ack([3, 1, 2]);
    const firstAckedAt = q.awaiting.oldestAt as number;
    await sleep(30);
    q.ack([5, 4]);
    assert.equal(q.awaiting.oldestAt, firstAckedAt, 'the oldest is the first acked');
    assert.equal(q.expireAwaiting(q.now(), 60_000), 0, 'none is late');
    assert.deepEqual(q.next(10), []);
    assert.equal(q.commit([1]), 1, 'committed behind 3, the oldest');
    assert.equal(q.expireAwaiting(firstAckedAt + 25, 20), 2, '2 and 3 waited longer than 20 ms; 1 is gone');
    assert.deepEqual(q.awaiting.count, 2);
    assert.ok((q.awaiting.oldestAt as number) > firstAckedAt);
    const again = q.next(10);
    assert.deepEqual(seqs(again), [2, 3], 'in order; 6-10 are still in flight, 4 and 5 await');
    assert.deepEqual(again.map((m) => JSON.parse(m.payloadJson) as unknown), [1, 2].map((v) => reading(v).payload));
    assert.equal(q.expireAwaiting(q.now() + 60_000, 20), 2);
    assert.deepEqual(seqs(q.next(10)), [4, 5]);
    assert.deepEqual(q.awaiting, { count: 0, bytes: 0, oldestAt: undefined });
    // acked again after a resend: awaiting again, then committed
    q.ack(range(1, 10));
    assert.equal(q.awaiting.count, 9);
    assert.equal(q.commitRanges([[1, 10]]), 9);
    assert.deepEqual(q.awaiting, { count: 0, bytes: 0, oldestAt: undefined });
    await q.close();
  });

  it('expires records the cursor has not reached yet without skipping what lies before them', async () => {
    const { open, dir } = setup({ segmentBytes: 4096 });
    const q = await open();
    await q.append(range(0, 99).map(reading));
    assert.ok(segments(dir).length >= 3);
    assert.equal(q.next(100).length, 100);
    q.ack([80]);
    q.rewind(); // a reconnect: all but 80 are to be sent again, from the start
    assert.deepEqual(seqs(q.next(2)), [1, 2]);
    assert.equal(q.expireAwaiting(q.now() + 1, 0), 1, '80 is late, and ahead of the cursor');
    assert.deepEqual(seqs(q.next(1000)), range(3, 100), 'in order, from where the cursor was');
    q.ack([5]);
    assert.equal(q.expireAwaiting(q.now() + 1, 0), 1, '5 is late, and behind the cursor');
    assert.deepEqual(seqs(q.next(1000)), [5]);
    await q.close();
  });

  it('after a crash, sends again every record not committed, whether it awaited its receipt or not, and none committed', async () => {
    const { opts, open } = setup({ segmentBytes: 4096 });
    // A child process queues 100 readings, sends them all, gets the gateway's acks for them and
    // receipts for 1-40, and is killed with SIGKILL once ack.json holds the committed watermark.
    await killedAfter(
      opts,
      `await q.append(Array.from({ length: 100 }, (_, v) => ({ dataType: 'timeseries', payload: { v } })));
      q.ack(q.next(1000).map((m) => m.seq));
      q.commitRanges([[1, 40]]);
      for (;;) {
        await new Promise((r) => setTimeout(r, 20));
        try { if (JSON.parse(readFileSync(join(o.dir, 'ack.json'), 'utf8')).watermark === 40) break; } catch {}
      }`,
    );
    const q = await open();
    assert.equal(q.depth, 60);
    assert.equal(q.committedThrough, 40);
    assert.equal(q.epochOf(101), q.epochOf(1), 'a killed process, the machine still up: its writes are all there, the epoch stays');
    assert.deepEqual(q.awaiting, { count: 0, bytes: 0, oldestAt: undefined }, 'awaiting is memory only');
    const again = q.next(1000);
    assert.deepEqual(seqs(again), range(41, 100), 'every acked-but-uncommitted record, and no committed one');
    assert.deepEqual(again.map((m) => (JSON.parse(m.payloadJson) as { v: number }).v), range(40, 99));
    await q.close();
  });

  it('after a power cut took back records already sent, numbers them again under a new epoch: a receipt for the lost ones deletes none of the new', async () => {
    const { opts, open, dir, logs } = setup();
    // The child queues 10 readings and sends them, then 5 more that it sends too. A record goes out once written, before its fsync: the power cut is played by
    // cutting the segment back to where it ended before the 5 (the disk kept none of them).
    const [before] = (await killedAfter(
      opts,
      `await q.append(Array.from({ length: 10 }, (_, v) => ({ dataType: 'timeseries', payload: { v } })));
      q.ack(q.next(100).map((m) => m.seq));
      const seg = join(o.dir, 'seg-0000000000000001.log');
      const size = statSync(seg).size;
      await q.append(Array.from({ length: 5 }, (_, v) => ({ dataType: 'timeseries', payload: { v: 100 + v } })));
      const lost = q.next(100);
      print({ epoch: q.epoch, size, lost: lost.map((m) => m.messageId) });`,
    )) as [{ epoch: string; size: number; lost: string[] }];
    assert.deepEqual(before.lost, range(11, 15).map((s) => `${before.epoch}.${s}`), 'sent before the cut');
    truncateSync(join(dir, 'seg-0000000000000001.log'), before.size);
    // and the machine starts again: the queue was last opened in another boot
    const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as { boot: string };
    assert.equal(meta.boot, readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), 'the boot the queue was opened in');
    writeFileSync(join(dir, 'meta.json'), JSON.stringify({ ...meta, boot: 'a-boot-before-the-cut' }));

    let q = await open();
    assert.notEqual(q.epoch, before.epoch, 'a stop without close(), then a restart of the machine: a new epoch');
    assert.ok(logs.codes().includes('FIELD_QUEUE_NEW_EPOCH'));
    // What the disk kept goes out again under the epoch it was sent under.
    const again = q.next(100);
    assert.deepEqual(again.map((m) => m.messageId), range(1, 10).map((s) => `${before.epoch}.${s}`));
    assert.deepEqual(again.map((m) => q.epochOf(m.seq)), again.map(() => before.epoch));
    const fresh = await q.append(range(200, 204).map(reading));
    assert.deepEqual(seqs(fresh), range(11, 15), 'the sequence numbers go on');
    const freshIds = fresh.map((m) => m.messageId);
    assert.deepEqual(freshIds, range(11, 15).map((s) => `${q.epoch}.${s}`));
    assert.ok(freshIds.every((id) => !before.lost.includes(id)), 'no id of a lost record names a new one');
    // The receiving side stored 1-15 of the old epoch: its receipt commits 1-10, and none of the new.
    assert.equal(q.commitReceipt(before.epoch, [[1, 15]]), 10);
    assert.equal(q.depth, 5);
    assert.equal(q.seqOf(`${before.epoch}.12`), undefined, 'an ack naming a lost id names nothing');
    assert.equal(q.seqOf(`${q.epoch}.12`), 12);
    assert.equal(q.commitReceipt('not-ours', [[11, 15]]), undefined);
    q.ack(seqs(q.next(100)));
    assert.equal(q.commitReceipt(q.epoch, [[11, 15]]), 5);
    assert.equal(q.depth, 0);
    const epoch = q.epoch;
    await q.close();

    // A clean stop keeps the epoch; the old one, all of it committed, is forgotten.
    q = await open();
    assert.equal(q.epoch, epoch);
    assert.equal(q.epochRange(before.epoch), undefined);
    assert.deepEqual((JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as { epochs: unknown }).epochs, [{ epoch, from: 11 }]);
    assert.equal(existsSync(join(dir, 'clean')), false, 'the clean-stop mark is taken at open');
    await q.close();
  });

  it('forgets an epoch only once the watermark that let it go is on disk', async () => {
    const { open, dir } = setup({ segmentBytes: 4096 });
    let q = await open();
    await q.append(range(0, 99).map(reading));
    q.ack(seqs(q.next(1000)));
    assert.equal(q.commitRanges([[1, 100]]), 100);
    await q.close();
    const epoch = q.epoch;
    // As a power cut during 1-100 would have left it (a second epoch from 51), and with ack.json
    // lost: the watermark now comes from the oldest segment left, the others having been deleted.
    writeFileSync(join(dir, 'meta.json'), JSON.stringify({ epochs: [{ epoch, from: 1 }, { epoch: 'second', from: 51 }], boot: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() }));
    rmSync(join(dir, 'ack.json'));
    q = await open();
    assert.ok(q.committedThrough > 50, `the watermark from the segments left: ${q.committedThrough}`);
    assert.equal(q.epochRange(epoch), undefined, 'the first epoch is forgotten');
    // a segment deleted without a directory fsync could come back after a power cut: the watermark
    // on disk keeps what it holds committed
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'ack.json'), 'utf8')), { watermark: q.committedThrough });
    await q.close();
  });

  it('reads the one-epoch meta.json of earlier versions, and refuses a damaged one', async () => {
    const { open, dir } = setup();
    let q = await open();
    await q.append(range(0, 4).map(reading));
    await q.close();
    // as an earlier version left it: one epoch, and no clean-stop mark
    writeFileSync(join(dir, 'meta.json'), JSON.stringify({ epoch: 'legacy01' }));
    rmSync(join(dir, 'clean'));
    q = await open();
    assert.deepEqual(q.next(10).map((m) => q.epochOf(m.seq)), Array(5).fill('legacy01'));
    assert.notEqual(q.epoch, 'legacy01', 'no clean-stop mark and no boot on record: a new epoch for what comes');
    assert.deepEqual(q.epochRange('legacy01'), [1, 5]);
    await q.close();
    for (const bad of ['{"epochs":[]}', '{"epochs":[{"epoch":"a","from":5},{"epoch":"b","from":5}]}', 'not json']) {
      writeFileSync(join(dir, 'meta.json'), bad);
      await assert.rejects(open(), (err: FieldStreamError) => err.code === 'FIELD_QUEUE_CORRUPT', bad);
    }
  });

  it('counts a record dropped while it awaited its receipt as lost (drop-oldest)', async () => {
    const { open, logs } = setup({ maxBytes: 20_000, segmentBytes: 4096, fullPolicy: 'drop-oldest' });
    const q = await open();
    await q.append(range(0, 99).map(reading));
    q.ack(seqs(q.next(1000))); // all 100 in the DMZ broker, none in the database
    assert.equal(q.commitRanges([[1, 10]]), 10);
    assert.equal(q.awaiting.count, 90);
    for (let i = 100; i < 1000; i++) await q.append([reading(i)]);
    assert.deepEqual(q.awaiting, { count: 0, bytes: 0, oldestAt: undefined }, 'their segments were dropped');
    assert.ok(q.stats.dropped >= 90, `${q.stats.dropped} dropped`);
    assert.equal(q.depth + q.stats.dropped + q.stats.committed, 1000, 'every record is queued, committed or counted as dropped');
    assert.ok(logs.codes().includes('FIELD_QUEUE_DROPPED_OLDEST'));
    const left = seqs(q.next(2000));
    assert.equal(left.length, q.depth);
    assert.equal(left.at(-1), 1000);
    await q.close();
  });

  it('keeps exact counts through acks and receipts in any order, across more records than its first ring holds', async () => {
    const { open, dir } = setup({ segmentBytes: 16 * 1024 });
    const q = await open();
    const n = 5000;
    await q.append(range(0, n - 1).map(reading));
    // a fixed shuffle (LCG), so a failure can be replayed
    let x = 12345;
    const shuffled = range(1, n).sort(() => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) - 0.5);
    assert.equal(q.next(n).length, n);
    for (let i = 0; i < n; i += 250) {
      const part = shuffled.slice(i, i + 250);
      q.ack(part);
      q.commit(part.filter((s) => s % 3 !== 0));
      assert.equal(q.depth, n - q.stats.committed);
      assert.equal(q.awaiting.count, q.stats.acked - q.stats.committed);
    }
    assert.equal(q.commit(range(1, n).filter((s) => s % 3 === 0)), Math.floor(n / 3));
    assert.equal(q.depth, 0);
    assert.equal(q.committedThrough, n);
    assert.deepEqual(q.awaiting, { count: 0, bytes: 0, oldestAt: undefined });
    assert.equal(segments(dir).length, 1);
    await q.close();
  });

  it('without receipts, the ack commits at once, and receipts commit too', async () => {
    const { open } = setup({ receipts: false });
    const q = await open();
    await q.append(range(0, 9).map(reading));
    assert.deepEqual(seqs(q.next(5)), [1, 2, 3, 4, 5]);
    q.ack([1, 2]);
    assert.equal(q.stats.acked, 2);
    assert.equal(q.stats.committed, 2);
    assert.deepEqual(q.awaiting, { count: 0, bytes: 0, oldestAt: undefined });
    assert.equal(q.commitRanges([[3, 3], [9, 10]]), 3);
    assert.equal(q.commitRanges([[1, 3]]), 0);
    assert.equal(q.depth, 5);
    assert.equal(q.expireAwaiting(q.now() + 1e9, 0), 0);
    q.rewind();
    assert.deepEqual(seqs(q.next(10)), [4, 5, 6, 7, 8]);
    await q.close();
  });
});

/**
 * The epochs when the disk is really full (a tmpfs of 256 KiB in a private mount namespace, filled):
 * what meta.json and ack.json would say cannot be saved, and the queue must still send what it holds.
 */
describe("the durable queue's epochs on a full disk", { skip: fullDiskSkip }, () => {
  const tmp = tempDir('queue-epochs-full');
  after(() => tmp.cleanup());
  /** A script's first lines: the queue, a log whose codes it reads, fillDisk, and the queue's options in `opts`. */
  const head = (over: string) => `
    import assert from 'node:assert/strict';
    import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
    import { DurableQueue } from ${moduleUrl('field-client/src/queue/durable-queue.ts')};
    import { createLogger } from ${moduleUrl('shared/logger.ts')};
    import { fillDisk } from ${moduleUrl('test/helpers/full-disk.ts')};
    const lines = [];
    const log = createLogger('child', 'info', { write: (l) => lines.push(JSON.parse(l)) });
    const codes = () => lines.map((l) => l.code).filter(Boolean);
    const reading = (v) => ({ dataType: 'timeseries', payload: { v, timestamp: 1700000000000 + v } });
    const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
    const dir = process.env.MNT + '/queue';
    const bootNow = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const opts = { dir, maxBytes: 1 << 30, segmentBytes: 64 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, receipts: true, log, ${over} };
  `;
  const run = (name: string, body: string, over = '') => {
    const mnt = join(tmp.dir, name);
    mkdirSync(mnt);
    const r = runOnSmallDisk(mnt, `${head(over)}\n${body}\nconsole.log('done');`);
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /done/);
  };

  it('opens drain-only after a power cut when its new epoch cannot be saved: sends what it holds, refuses new data until the epoch is saved', () => {
    run(
      'power-cut',
      `
      let q = await DurableQueue.open(opts);
      await q.append(range(0, 9).map(reading));
      const old = q.epoch;
      await q.close();
      // A power cut: no clean-stop mark, and the machine restarted since the queue was opened.
      rmSync(dir + '/clean');
      const meta = { ...JSON.parse(readFileSync(dir + '/meta.json', 'utf8')), boot: 'a-boot-before-the-cut' };
      writeFileSync(dir + '/meta.json', JSON.stringify(meta));
      const disk = fillDisk(process.env.MNT);
      assert.equal(disk.code, 'ENOSPC');

      q = await DurableQueue.open(opts);
      assert.ok(codes().includes('FIELD_QUEUE_WRITE_FAILED'), 'the drain-only mode is logged');
      // What it holds goes out under the epoch it was numbered by, and its receipt commits it.
      const held = q.next(100);
      assert.deepEqual(held.map((m) => m.messageId), range(1, 10).map((s) => old + '.' + s));
      q.ack(held.map((m) => m.seq));
      assert.equal(q.commitReceipt(old, [[1, 10]]), 10);
      assert.equal(q.depth, 0);
      // New data is refused with the queue's code, until the epoch can be saved.
      await assert.rejects(q.append([reading(100)]), (e) => e.code === 'FIELD_QUEUE_WRITE_FAILED' && /epoch/.test(e.message));
      assert.deepEqual(JSON.parse(readFileSync(dir + '/meta.json', 'utf8')), meta, 'meta.json as the cut left it');
      // A stop meanwhile leaves no clean-stop mark: the next start must not keep the old epoch for new numbers.
      await q.close();
      assert.equal(existsSync(dir + '/clean'), false);

      q = await DurableQueue.open(opts);
      await assert.rejects(q.append([reading(100)]), (e) => e.code === 'FIELD_QUEUE_WRITE_FAILED');
      // Room again: the next append saves the new epoch, then takes the data under it.
      disk.free();
      const [m] = await q.append([reading(100)]);
      assert.notEqual(q.epoch, old);
      assert.equal(m.messageId, q.epoch + '.11');
      const saved = JSON.parse(readFileSync(dir + '/meta.json', 'utf8'));
      assert.deepEqual(saved.epochs.at(-1), { epoch: q.epoch, from: 11 });
      assert.equal(saved.boot, bootNow);
      await q.close();
      assert.ok(existsSync(dir + '/clean'), 'a clean stop once the epoch is saved');
      `,
    );
  });

  it('opens when the watermark that would let an epoch go cannot be written durably, and keeps the epoch', () => {
    run(
      'forget',
      `
      let q = await DurableQueue.open(opts);
      await q.append(range(0, 99).map(reading));
      q.ack(q.next(1000).map((m) => m.seq));
      assert.equal(q.commitRanges([[1, 100]]), 100);
      await q.close();
      const epoch = q.epoch;
      // As in 'forgets an epoch only once the watermark that let it go is on disk', on a full disk.
      writeFileSync(dir + '/meta.json', JSON.stringify({ epochs: [{ epoch, from: 1 }, { epoch: 'second', from: 51 }], boot: bootNow }));
      rmSync(dir + '/ack.json');
      const disk = fillDisk(process.env.MNT);
      q = await DurableQueue.open(opts);
      assert.ok(q.committedThrough > 50, 'the watermark from the segments left: ' + q.committedThrough);
      assert.deepEqual(q.epochRange(epoch), [1, 50], 'kept: the watermark that would let it go is not on disk');
      assert.equal(existsSync(dir + '/ack.json'), false);
      assert.ok(codes().includes('FIELD_STATE_WRITE_FAILED'));
      await q.close();
      disk.free();
      q = await DurableQueue.open(opts);
      assert.equal(q.epochRange(epoch), undefined, 'forgotten at a start that could write the watermark');
      assert.deepEqual(JSON.parse(readFileSync(dir + '/ack.json', 'utf8')), { watermark: q.committedThrough });
      await q.close();
      `,
      'segmentBytes: 4096',
    );
  });
});
