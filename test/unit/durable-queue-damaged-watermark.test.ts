import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { DurableQueue, type QueueOptions } from '../../field-client/src/queue/durable-queue.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';

const reading = (v: number) => ({ dataType: 'timeseries', payload: { v, timestamp: 1700000000000 + v } });
const seqs = (ms: { seq: number }[]) => ms.map((m) => m.seq);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * ack.json lost or damaged (written without fsync: a power cut on an SD card can leave it empty)
 * sends again what the oldest segment holds. Records of an epoch meta.json still names go again
 * under that epoch: copies the distributor recognises. But an epoch is forgotten once all its
 * numbers are committed, while its records may still lie in a segment that goes on (the active one
 * continues after a power cut, under a new epoch). Read back with no epoch to name them, they were
 * sent under the current one: ids never sent before, stored a second time downstream; and no
 * receipt of that epoch names numbers below its start, so they were never let go of again, holding
 * the committed watermark, and with it the receipt window, for good.
 */
describe('the durable queue, its committed watermark lost', () => {
  const dirs: Array<{ cleanup(): void }> = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) d.cleanup();
  });
  const setup = () => {
    const tmp = tempDir('queue-watermark');
    dirs.push(tmp);
    const logs = new LogCapture();
    const opts: QueueOptions = { dir: tmp.dir, maxBytes: 1 << 30, segmentBytes: 64 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, log: logs.logger, receipts: true };
    return { dir: tmp.dir, logs, open: () => DurableQueue.open(opts) };
  };

  for (const damage of ['emptied', 'removed'] as const) {
    it(`never sends again, under another epoch, the records of an epoch forgotten as committed (ack.json ${damage})`, async () => {
      const { open, dir, logs } = setup();
      let q = await open();
      const first = q.epoch;
      await q.append(range(1, 10).map(reading));
      q.ack(seqs(q.next(100)));
      assert.equal(q.commitReceipt(first, [[1, 10]]), 10);
      // ack.json follows the watermark within TIMINGS.ackPersistDelayMs
      while (readFileSync(join(dir, 'ack.json'), { encoding: 'utf8', flag: 'a+' }) !== JSON.stringify({ watermark: 10 })) await sleep(20);
      // A power cut (no close, and the machine starts again): a new epoch, the same segment goes on.
      const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as { boot: string };
      writeFileSync(join(dir, 'meta.json'), JSON.stringify({ ...meta, boot: 'a-boot-before-the-cut' }));
      q = await open();
      const second = q.epoch;
      assert.notEqual(second, first);
      await q.append(range(11, 15).map(reading));
      q.ack(seqs(q.next(100)));
      assert.equal(q.commitReceipt(second, [[11, 13]]), 3);
      await q.close();
      // A clean stop: the first epoch, all committed, is forgotten; its records lie in the segment still.
      q = await open();
      assert.equal(q.epochRange(first), undefined, 'the first epoch is forgotten');
      await q.close();

      if (damage === 'emptied') writeFileSync(join(dir, 'ack.json'), '');
      else rmSync(join(dir, 'ack.json'));
      q = await open();
      const again = q.next(100);
      assert.deepEqual(
        again.map((m) => m.messageId),
        range(11, 15).map((s) => `${second}.${s}`),
        'what the second epoch holds goes again under it (copies, recognised downstream); nothing of the first',
      );
      assert.ok(q.committedThrough >= 10, `the first epoch's numbers stay committed: watermark ${q.committedThrough}`);
      q.ack(seqs(again));
      assert.equal(q.commitReceipt(second, [[11, 15]]), 5, 'the receipt of what went again lets it all go');
      assert.equal(q.depth, 0);
      if (damage === 'emptied') assert.ok(logs.codes().includes('FIELD_QUEUE_CORRUPT'));
      await q.close();
    });
  }
});
