import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { settleWithin } from '../../shared/settle-within.ts';

describe('settleWithin: a wait given a grace', () => {
  it('gives the value or the error of a promise that settles in time, and "late" for one that does not', async () => {
    assert.deepEqual(await settleWithin(Promise.resolve(7), 1_000), { outcome: 'fulfilled', value: 7 });
    const error = new Error('refused');
    assert.deepEqual(await settleWithin(Promise.reject(error), 1_000), { outcome: 'rejected', error });
    const never = new Promise<number>(() => undefined);
    assert.deepEqual(await settleWithin(never, 50), { outcome: 'late' });
  });

  it('handles the rejection of a promise that fails after its grace (no unhandled rejection)', async () => {
    let fail: (err: Error) => void = () => undefined;
    const later = new Promise<void>((_, reject) => (fail = reject));
    assert.deepEqual(await settleWithin(later, 20), { outcome: 'late' });
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      fail(new Error('after the grace'));
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
