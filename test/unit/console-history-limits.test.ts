import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LimitedHistory, type HistoryReader, type Series } from '../../internal-network/console/history/history.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { CONSOLE } from '../../shared/limits.ts';

/**
 * The console's limits on history reads (history/history.ts), counted exactly: reads held open by a
 * reader that answers when the test says, so every place is known. Over HTTP, on a real store, in
 * test/e2e/console-hostile.test.ts.
 */
class HeldReader implements HistoryReader {
  readonly description = 'held';
  readonly open: Array<() => void> = [];
  started = 0;
  series(): Promise<Series> {
    this.started++;
    return new Promise((resolve) => this.open.push(() => resolve([])));
  }
  finishOne(): void {
    this.open.shift()?.();
  }
}

const busy = (e: unknown) => isFieldStreamError(e) && e.code === 'CONSOLE_HISTORY_BUSY';
const turn = () => new Promise((r) => setImmediate(r));

describe('history reads, limited', () => {
  it(`runs ${CONSOLE.historyMaxConcurrent} at once and queues ${CONSOLE.historyMaxQueued}, from many users; refuses the next; a place given back is taken`, async () => {
    const inner = new HeldReader();
    const h = new LimitedHistory(inner);
    const places = CONSOLE.historyMaxConcurrent + CONSOLE.historyMaxQueued;
    // Each user within their own limit: one read each.
    const reads = Array.from({ length: places }, (_, i) => h.series(`user-${i}`, 'd', 'f', 0, 1));
    await turn();
    assert.equal(inner.started, CONSOLE.historyMaxConcurrent, 'the others wait');
    await assert.rejects(h.series('one-more', 'd', 'f', 0, 1), busy);
    inner.finishOne();
    await turn();
    assert.equal(inner.started, CONSOLE.historyMaxConcurrent + 1, 'the place goes to the first waiting');
    while (inner.open.length > 0) {
      inner.finishOne();
      await turn();
    }
    await Promise.all(reads);
    assert.equal(inner.started, places);
    const last = h.series('one-more', 'd', 'f', 0, 1);
    await turn();
    inner.finishOne();
    assert.deepEqual(await last, [], 'served once the places are free');
  });

  it(`takes ${CONSOLE.historyMaxPerUser} running or waiting from one user; the user's next is refused, another user's is not`, async () => {
    const inner = new HeldReader();
    const h = new LimitedHistory(inner);
    const mine = Array.from({ length: CONSOLE.historyMaxPerUser }, () => h.series('greedy', 'd', 'f', 0, 1));
    await assert.rejects(h.series('greedy', 'd', 'f', 0, 1), (e) => busy(e) && (e as { details?: { perUser?: number } }).details?.perUser === CONSOLE.historyMaxPerUser);
    const theirs = h.series('modest', 'd', 'f', 0, 1);
    inner.finishOne();
    await turn();
    const again = h.series('greedy', 'd', 'f', 0, 1); // one of theirs ended: a place of their own again
    while (inner.open.length > 0 || inner.started < CONSOLE.historyMaxPerUser + 2) {
      inner.finishOne();
      await turn();
    }
    await Promise.all([...mine, theirs, again]);
  });
});
