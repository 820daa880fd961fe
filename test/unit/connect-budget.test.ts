import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConnectBudget } from '../../dmz/gateway/connect-budget.ts';

describe("a device's budget of connections (connect-budget.ts)", () => {
  it('lets a device open its burst, then one per refill, and a refused try costs nothing', () => {
    const b = new ConnectBudget({ burst: 3, refillMs: 1000 });
    const t = 1_000_000;
    assert.deepEqual([1, 2, 3, 4].map(() => b.take('a', t)), [true, true, true, false]);
    assert.equal(b.take('b', t), true, 'another device has its own budget');
    assert.equal(b.take('a', t + 999), false);
    assert.equal(b.take('a', t + 1000), true);
    assert.equal(b.take('a', t + 1500), false);
    // A refused try does not start the wait again: one more at t + 2000.
    assert.equal(b.take('a', t + 2000), true);
    // Long idle: the whole burst again, never more.
    assert.deepEqual([1, 2, 3, 4].map(() => b.take('a', t + 60_000)), [true, true, true, false]);
  });

  it('forgets devices whose budget came back whole, so it holds only those that connected lately', () => {
    const b = new ConnectBudget({ burst: 2, refillMs: 1000 });
    for (let i = 0; i < 1000; i++) b.take(`old-${i}`, 0);
    for (let i = 0; i < 2000; i++) b.take(`new-${i}`, 10_000);
    assert.ok(b.size <= 2000 + 24, `${b.size} devices tracked`);
    assert.equal(b.take('new-1', 10_000), true);
    assert.equal(b.take('new-1', 10_000), false, 'a device connected lately keeps what it spent');
  });
});
