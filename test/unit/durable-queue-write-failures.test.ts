import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { DurableQueue, type QueueOptions } from '../../field-client/src/queue/durable-queue.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { withFileSizeLimit } from '../helpers/file-size-limit.ts';
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
