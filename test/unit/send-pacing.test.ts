import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SendPacing } from '../../field-client/src/send-pacing.ts';
import { LIMITS } from '../../shared/limits.ts';

/** The field client's pacing (field-client/src/send-pacing.ts), on a clock of its own. */
describe('send pacing', () => {
  it('before any measurement: the least budget, and one frame always goes whatever its size', () => {
    const p = new SendPacing(5_000);
    assert.equal(p.budget, LIMITS.fieldSendAheadMinBytes);
    assert.ok(p.room());
    p.handed('a', 1_400_000, 0); // a file chunk far larger than the budget
    assert.equal(p.room(), false, 'nothing more while it is outstanding');
    p.acked(['a'], 100_000);
    assert.ok(p.room());
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

  it('a slower link lowers the rate only while the budget held frames back; a reset forgets what is outstanding, not the rate', () => {
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
      assert.equal(p.room(), false, 'held back');
      t += 1_000;
      p.acked([`c${i}`], t);
    }
    assert.ok((p.bytesPerSecond as number) < 15_000, `${p.bytesPerSecond} B/s measured`);
    p.reset();
    assert.equal(p.outstanding, 0);
    assert.ok((p.bytesPerSecond as number) < 15_000);
  });
});
