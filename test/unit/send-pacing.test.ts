import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { SendPacing } from '../../field-client/src/send-pacing.ts';
import { LinkRateNote } from '../../field-client/src/link-rate.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';

/** The field client's pacing (field-client/src/send-pacing.ts), on a clock of its own. */
describe('send pacing', () => {
  it('before any measurement: the least budget, and one frame always goes whatever its size', () => {
    const p = new SendPacing(5_000);
    assert.equal(p.budget, LIMITS.fieldSendAheadMinBytes);
    assert.equal(p.room(), LIMITS.fieldSendAheadMinBytes);
    p.handed('a', 1_400_000, 0); // a file chunk far larger than the budget
    assert.equal(p.room(), 0, 'nothing more while it is outstanding');
    p.acked(['a'], 100_000);
    assert.ok(p.room() > 0);
    // A frame takes what the budget leaves: a small one leaves room for the next, smaller.
    p.handed('b', 10_000, 200_000);
    assert.equal(p.room(), p.budget - 10_000);
  });

  it('measures the link from the answers: the budget is its rate × the time ahead, within its bounds', () => {
    const p = new SendPacing(5_000);
    // 8 KB/s: a 24 KB frame answered 3 s after it was handed over.
    p.handed('a', 24_000, 0);
    p.acked(['a'], 3_000);
    assert.equal(p.bytesPerSecond, 8_000);
    assert.equal(p.budget, 40_000);
    // A fast link: 10 MB answered in 10 ms.
    p.handed('b', 10_000_000, 10_000);
    p.acked(['b'], 10_010);
    assert.equal(p.budget, LIMITS.fieldSendAheadMaxBytes);
  });

  it('an ack of several frames answers them all; one of an id sent again answers its latest copy', () => {
    const p = new SendPacing(5_000);
    p.handed('a', 10_000, 0);
    p.handed('b', 10_000, 0);
    p.handed('c', 10_000, 0);
    assert.equal(p.outstanding, 30_000);
    p.acked(['x', 'b'], 500); // the gateway's acks end at a frame's end
    assert.equal(p.outstanding, 10_000);
    p.acked(['unknown'], 600);
    assert.equal(p.outstanding, 10_000, 'an id that ends no frame answers nothing');
    p.acked(['c'], 700);
    assert.equal(p.outstanding, 0);
  });

  it("an ack answers the latest frame any of its ids ends, in whatever order: the gateway acks a frame's data types at their own PUBACKs", () => {
    // After a restart, the rate unknown (what a field client's Sparkplug input hit): a frame of two
    // events and readings (e1, e2, r3…r106), one of readings (r107…r122) and one of an event (e123).
    // The gateway publishes each data type as a group: the readings' PUBACK came first, then the
    // events', and all went in one ack ending with e2, which ends no frame.
    const p = new SendPacing(5_000);
    p.handed('r106', 13_978, 0);
    p.handed('r122', 2_261, 0);
    p.handed('e123', 295, 0);
    assert.equal(p.room(), 0, 'more than the budget outstanding');
    const readings = Array.from({ length: 120 }, (_, i) => `r${i + 3}`);
    p.acked([...readings, 'e123', 'e1', 'e2'], 100);
    assert.equal(p.outstanding, 0, 'every frame answered: nothing left to stall the client');
    assert.ok(p.room() > 0);
    // The same with the frame's last id in the middle of the ack and an id of no frame last.
    p.handed('a', 10_000, 200);
    p.handed('b', 10_000, 200);
    p.acked(['b', 'x', 'a', 'y'], 300);
    assert.equal(p.outstanding, 0);
  });

  it('a refusal answers the frame of any message it names, or the oldest when it names none of ours', () => {
    const p = new SendPacing(5_000);
    p.handed('a', 10_000, 0);
    p.handed('b', 10_000, 0);
    p.refused(['a'], 100);
    assert.equal(p.outstanding, 10_000);
    p.refused([], 200); // a frame refused whole (unparsed): the oldest outstanding one
    assert.equal(p.outstanding, 0);
    p.refused([], 300);
    assert.equal(p.outstanding, 0, 'nothing outstanding: nothing to answer');
  });

  it('gives up on frames unanswered since a given time: their bytes no longer hold the budget, and they are no sample of the rate', () => {
    const p = new SendPacing(5_000);
    p.handed('a', 24_000, 0);
    p.acked(['a'], 3_000); // 8 KB/s
    p.handed('b', 30_000, 10_000); // never answered: the gateway dropped it
    p.handed('c', 5_000, 10_500);
    assert.equal(p.room(), 40_000 - 35_000);
    assert.equal(p.giveUp(9_000, 10_600), false, 'nothing handed over that early is outstanding');
    assert.equal(p.giveUp(10_000, 10_600), true);
    assert.equal(p.outstanding, 5_000, 'the frame handed over since still counts');
    // c answered 1 s after the give-up: 5 KB/s, not 35 KB in 1.6 s (above the rate).
    p.acked(['c'], 11_600);
    assert.equal(p.bytesPerSecond, 8_000, 'the rate is not raised by what was given up on');
    assert.equal(p.outstanding, 0);
  });

  it('a slower link lowers the rate only by samples with half the budget or more outstanding; a reset forgets what is outstanding, not the rate', () => {
    const p = new SendPacing(1_000);
    p.handed('a', 100_000, 0);
    p.acked(['a'], 1_000); // 100 KB/s
    assert.equal(p.bytesPerSecond, 100_000);
    // Little to send: 1 KB answered over 2 s says nothing of the link.
    p.handed('b', 1_000, 10_000);
    p.acked(['b'], 12_000);
    assert.equal(p.bytesPerSecond, 100_000);
    // The link slows to 10 KB/s while frames wait for room: halfway down at each sample.
    let t = 20_000;
    for (let i = 0; i < 30; i++) p.handed(`c${i}`, 10_000, t);
    for (let i = 0; i < 8; i++) {
      assert.equal(p.room(), 0, 'held back');
      t += 1_000;
      p.acked([`c${i}`], t);
    }
    assert.ok((p.bytesPerSecond as number) < 15_000, `${p.bytesPerSecond} B/s measured`);
    p.reset();
    assert.equal(p.outstanding, 0);
    assert.ok((p.bytesPerSecond as number) < 15_000);
  });

  it('sizes file chunks by the link only once a full sample confirmed its rate: never by a trickle, nor by a budget still growing', () => {
    const p = new SendPacing(5_000);
    // A trickle of small frames on a fast link: each answered alone, far under the budget.
    for (let i = 0; i < 20; i++) {
      p.handed(`r${i}`, 300, i * 1_000);
      p.acked([`r${i}`], i * 1_000 + 100);
    }
    assert.equal(p.chunkBytes(), undefined, 'a lower bound only: the configured chunk size stays');
    // A backlog: frames outstanding beyond half the budget, answered at 8 KB/s, twice.
    let t = 100_000;
    for (let i = 0; i < 10; i++) p.handed(`c${i}`, 8_000, t);
    for (let i = 0; i < 4; i++) {
      t += 1_000;
      p.acked([`c${i}`], t);
    }
    assert.ok(Math.abs((p.bytesPerSecond as number) - 8_000) < 1_500, `${p.bytesPerSecond} B/s`);
    // 8 KB/s × 5 s is 40 KB framed: 30 KB of file data, base64 making it 40.
    assert.ok(Math.abs((p.chunkBytes() as number) - 30_000) < 6_000, `${p.chunkBytes()} bytes a chunk`);
    // A slower link still: chunks never under the least.
    const slow = new SendPacing(5_000);
    for (let i = 0; i < 10; i++) slow.handed(`s${i}`, 1_000, 0);
    for (let i = 1; i <= 4; i++) slow.acked([`s${i - 1}`], i * 1_000);
    assert.equal(slow.chunkBytes(), LIMITS.fieldFileChunkMinBytes);
    // A budget growing on a fast link: each full sample far above the last confirms nothing.
    const fast = new SendPacing(5_000);
    let out = 16 * 1024;
    for (let i = 0, at = 0; i < 5; i++, at += 1_000) {
      fast.handed(`f${i}`, out, at);
      fast.acked([`f${i}`], at + 50);
      out = fast.budget;
      // Growing, it confirms nothing; at its ceiling, a rate no configured chunk size comes near.
      if (i < 3) assert.equal(fast.chunkBytes(), undefined, `sample ${i}`);
      else assert.ok((fast.chunkBytes() ?? Infinity) >= 4 * 1024 * 1024, `sample ${i}`);
    }
  });

  it('the outbox cuts a file taken after the link was measured in chunks of that size, never above FIELD_FILE_CHUNK_BYTES', async () => {
    const work = tempDir('pacing-outbox');
    try {
      writeFileSync(join(work.dir, 'f.bin'), Buffer.alloc(100_000, 7));
      const outbox = new FileOutbox(work.dir, 64 * 1024);
      let link: number | undefined;
      outbox.sizeChunksBy(() => link);
      assert.equal((await outbox.accept(join(work.dir, 'f.bin'), {})).chunkBytes, 64 * 1024, 'not measured: as configured');
      link = 20_000;
      const rec = await outbox.accept(join(work.dir, 'f.bin'), {});
      assert.deepEqual([rec.chunkBytes, rec.count], [20_000, 5]);
      link = 1024 * 1024;
      assert.equal((await outbox.accept(join(work.dir, 'f.bin'), {})).chunkBytes, 64 * 1024, 'a fast link: as configured');
    } finally {
      work.cleanup();
    }
  });
});

/** The link's measured rate kept across restarts (field-client/src/link-rate.ts). */
describe("the link's rate kept across restarts", () => {
  it('a rate kept is gone by at the next start: files are cut for the link at once, not at FIELD_FILE_CHUNK_BYTES', () => {
    const scratch = tempDir('link-rate');
    try {
      const path = join(scratch.dir, 'link-rate.json');
      const logs = new LogCapture();
      const first = new LinkRateNote(path, logs.logger);
      assert.equal(first.load(1_000_000), undefined, 'nothing kept yet');
      first.note(undefined, 1_000_000);
      assert.ok(!existsSync(path), 'nothing measured: nothing written');
      first.note(8_000, 1_000_000); // 8 KB/s, as the slow-link test's relay
      // The next start: the pacing knows the link, and a file is cut for it before any answer.
      const kept = new LinkRateNote(path, logs.logger).load(2_000_000);
      assert.equal(kept, 8_000);
      const p = new SendPacing(5_000, kept);
      assert.equal(p.linkBytesPerSecond, 8_000);
      assert.equal(p.budget, Math.max(LIMITS.fieldSendAheadMinBytes, 8 * 5_000));
      assert.equal(p.chunkBytes(), Math.max(LIMITS.fieldFileChunkMinBytes, Math.floor((8 * 5_000 * 3) / 4)));
      assert.equal(new SendPacing(5_000).chunkBytes(), undefined, 'without it, unknown until measured');
      // Written again only when it moved by a quarter, at most once a minute.
      first.note(8_500, 1_000_000 + TIMINGS.fieldLinkRateSaveIntervalMs);
      assert.equal(new LinkRateNote(path, logs.logger).load(2_000_000), 8_000);
      first.note(20_000, 1_000_000 + 10_000);
      assert.equal(new LinkRateNote(path, logs.logger).load(2_000_000), 8_000, 'within the minute: not written');
      first.note(20_000, 1_000_000 + TIMINGS.fieldLinkRateSaveIntervalMs);
      assert.equal(new LinkRateNote(path, logs.logger).load(2_000_000), 20_000);
      // Too old (the device may have moved to another link), or from the future: measured again.
      const last = 1_000_000 + TIMINGS.fieldLinkRateSaveIntervalMs;
      assert.equal(new LinkRateNote(path, logs.logger).load(last + TIMINGS.fieldLinkRateMaxAgeMs + 1), undefined);
      assert.equal(new LinkRateNote(path, logs.logger).load(last - 1), undefined);
    } finally {
      scratch.cleanup();
    }
  });

  it('removes at the next start what a rewrite of the note killed before its rename left aside, and keeps the note', () => {
    // Written aside (link-rate.json.tmp-PID), synced, then renamed: a kill before the rename left it
    // on the device's disk for good, another at each such kill (another process id each start).
    const scratch = tempDir('link-rate-aside');
    try {
      const path = join(scratch.dir, 'link-rate.json');
      new LinkRateNote(path, new LogCapture().logger).note(8_000, 1_000_000);
      const aside = `${path}.tmp-4194301`;
      writeFileSync(aside, '{"v":1,"bytes'); // cut off by the kill
      writeFileSync(`${path}.bak`, "an operator's copy\n");
      const note = new LinkRateNote(path, new LogCapture().logger);
      assert.equal(existsSync(aside), false, 'the file aside is gone');
      assert.equal(existsSync(`${path}.bak`), true, 'nothing else is touched');
      assert.equal(note.load(1_000_000), 8_000, 'the note stands');
    } finally {
      scratch.cleanup();
    }
  });

  it('a damaged note is FIELD_STATE_INVALID, ignored, and made again', () => {
    const scratch = tempDir('link-rate-bad');
    try {
      const path = join(scratch.dir, 'link-rate.json');
      const logs = new LogCapture();
      for (const bad of ['{"v":1,"bytesPerSecond":', '{"v":1,"bytesPerSecond":-5,"measuredAt":1}', '{"v":2,"bytesPerSecond":5,"measuredAt":1}', '[]']) {
        writeFileSync(path, bad);
        assert.equal(new LinkRateNote(path, logs.logger).load(1_000), undefined, bad);
      }
      assert.equal(logs.codes().filter((c) => c === 'FIELD_STATE_INVALID').length, 4);
      const note = new LinkRateNote(path, logs.logger);
      note.load(1_000);
      note.note(12_345, 1_000);
      assert.equal(new LinkRateNote(path, logs.logger).load(2_000), 12_345);
    } finally {
      scratch.cleanup();
    }
  });
});
