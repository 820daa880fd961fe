import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Submission } from '../../field-client/src/client-options.ts';
import { encodeWire } from '../../field-client/src/inputs/sparkplug/proto.ts';
import { SparkplugSession } from '../../field-client/src/inputs/sparkplug/session.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';

/**
 * Messages with nothing to store (null values only, a Template or DataSet, a refusal, a duplicate)
 * that arrive while an earlier message of their edge node waits for the queue's append: each waits
 * with it, to be acknowledged, or undone, with it (appends.ts). Each such message looked through
 * every message waiting to find the batches of its edge node, so N of them behind one slow append
 * (an SD card's fsync, a disk stalled) cost N²: 10,000 took 25 s and 40,000 seven minutes, the event
 * loop held all the while, every input and the link with it. And nothing bounded how many waited: a
 * flood of them behind an append that never ends grew the field client's memory without end, where
 * messages carrying data are refused past LIMITS.sparkplugPendingMaxItems.
 */
describe('Sparkplug messages with nothing to store, waiting behind an append', () => {
  const silent = createLogger('test', 'silent');
  const nbirth = encodeWire({ timestamp: 1, seq: 0, metrics: [{ name: 'bdSeq', datatype: 8, longValue: 0 }, { name: 'T', alias: 1, datatype: 10, doubleValue: 1 }] });
  const nullData = (i: number) => encodeWire({ timestamp: 2 + i, seq: (i + 1) % 256, metrics: [{ alias: 1, isNull: true }] });

  /** A session whose first append waits until `release` is called (a disk stalled in its fsync). */
  function stalledSession() {
    let release!: () => void;
    const stalled = new Promise<void>((resolve) => (release = resolve));
    let first = true;
    const queued: Submission[] = [];
    const client = {
      submitMany: async (items: Submission[]) => {
        if (first) {
          first = false;
          await stalled;
        }
        queued.push(...items);
        return [];
      },
    };
    return { session: new SparkplugSession(client, () => undefined, silent), release, queued };
  }

  it('takes each in constant time, not in the number waiting', async () => {
    const { session, release } = stalledSession();
    const waiting = [session.onMessage('spBv1.0/G/NBIRTH/E', nbirth)];
    const n = 10_000;
    const started = performance.now();
    for (let i = 0; i < n; i++) waiting.push(session.onMessage('spBv1.0/G/NDATA/E', nullData(i)));
    const ms = performance.now() - started;
    release();
    await Promise.all(waiting);
    assert.equal(session.stats.accepted, n + 1);
    assert.ok(ms < 5_000, `${n} messages took ${Math.round(ms)} ms`);
  });

  it('refuses one past LIMITS.sparkplugPendingMaxItems waiting, as a message with data is', async () => {
    const { session, release, queued } = stalledSession();
    const waiting = [session.onMessage('spBv1.0/G/NBIRTH/E', nbirth)];
    // The NBIRTH and these: LIMITS.sparkplugPendingMaxItems messages waiting.
    for (let i = 0; i < LIMITS.sparkplugPendingMaxItems - 1; i++) waiting.push(session.onMessage('spBv1.0/G/NDATA/E', nullData(i)));
    await assert.rejects(session.onMessage('spBv1.0/G/NDATA/E', nullData(LIMITS.sparkplugPendingMaxItems - 1)), { code: 'FIELD_QUEUE_FULL' });
    // The messages of its edge node waiting with it are undone (their resends taken as new): its seq back at the NBIRTH's.
    assert.equal(session.host.session('G', 'E')?.seq, undefined);
    release();
    await Promise.all(waiting);
    assert.equal(queued.filter((q) => q.dataType === 'event').length, 1, 'the NBIRTH stored once');
  });

  it('takes the time of its own edge node to refuse one past the bound, not that of every message waiting', async () => {
    const { session, release } = stalledSession();
    const waiting: Array<Promise<void>> = [];
    // 10,000 edge nodes, 5 messages waiting each: LIMITS.sparkplugPendingMaxItems in all.
    const edges = LIMITS.sparkplugPendingMaxItems / 5;
    for (let e = 0; e < edges; e++) {
      waiting.push(session.onMessage(`spBv1.0/G/NBIRTH/E${e}`, nbirth).catch(() => undefined));
      for (let i = 0; i < 4; i++) waiting.push(session.onMessage(`spBv1.0/G/NDATA/E${e}`, nullData(i)).catch(() => undefined));
    }
    // One more of each: one in six refused (its edge node's 5 undone, which makes room for the next 5).
    const started = performance.now();
    let refused = 0;
    for (let e = 0; e < edges; e++) waiting.push(session.onMessage(`spBv1.0/G/NDATA/E${e}`, nullData(4)).catch(() => void refused++));
    await new Promise((r) => setImmediate(r));
    const ms = performance.now() - started;
    assert.ok(refused >= edges / 6 - 1, `${refused} refused`);
    assert.ok(ms < 10_000, `${edges} messages at the bound took ${Math.round(ms)} ms`);
    release();
    await Promise.all(waiting);
  });
});
