import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';
import { SparkplugSession } from '../../field-client/src/inputs/sparkplug/session.ts';
import { createLogger } from '../../shared/logger.ts';

/**
 * The reorder timer of a Sparkplug session (session.ts arm, reorder.ts nextDeadline) with many edge
 * nodes holding messages ahead of their seq. After every message the session looked through every
 * edge node holding one for the earliest deadline: with thousands holding (a large plant on a
 * clustered broker, or anyone publishing there, each edge node's message one ahead), every message of
 * any edge node cost thousands of steps, 9,000 holding made the input 9 times slower. The earliest
 * deadline is now worked out again only when what is held changes its holders or their deadlines.
 */
describe('Sparkplug reorder buffers of many edge nodes', () => {
  const nbirth = encodeWire({ timestamp: 1, seq: 0, metrics: [{ name: 'bdSeq', datatype: 8, longValue: 0 }, { name: 'T', alias: 1, datatype: 10, doubleValue: 1 }] });
  const ahead = encodeWire({ timestamp: 5, seq: 3, metrics: [{ alias: 1, doubleValue: 2 }] });

  /** ms for `n` messages of other edge nodes while `holding` edge nodes hold one message each. */
  function timed(holding: number, n: number): number {
    const session = new SparkplugSession({ submitMany: async () => [] }, () => undefined, createLogger('test', 'silent'), [], { reorderTimeoutMs: 60_000 });
    for (let e = 0; e < holding; e++) {
      void session.onMessage(`spBv1.0/G/NBIRTH/H${e}`, nbirth);
      void session.onMessage(`spBv1.0/G/NDATA/H${e}`, ahead);
    }
    assert.equal(session.host.reorder.held, holding);
    const data = (seq: number) => encodeWire({ timestamp: 10 + seq, seq, metrics: [{ alias: 1, doubleValue: seq }] });
    void session.onMessage('spBv1.0/G/NBIRTH/X', nbirth);
    const started = performance.now();
    for (let i = 1; i <= n; i++) void session.onMessage('spBv1.0/G/NDATA/X', data(i % 256));
    const ms = performance.now() - started;
    assert.equal(session.host.reorder.held, holding, 'the held messages still held');
    assert.equal(session.host.reorder.nextDeadline() !== undefined, holding > 0);
    session.stop();
    return ms;
  }

  it('costs a message of another edge node the same whether 10 or 8,000 edge nodes hold messages', () => {
    timed(10, 5_000); // warm up
    const few = timed(10, 20_000);
    const many = timed(8_000, 20_000);
    assert.ok(many < 3 * few + 500, `20,000 messages took ${Math.round(many)} ms with 8,000 edge nodes holding, ${Math.round(few)} ms with 10`);
  });
});
