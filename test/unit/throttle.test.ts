import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TokenThrottle } from '../../shared/security/throttle.ts';
import { TokenThrottle as GatewayThrottle } from '../../dmz/gateway/token-throttle.ts';

/**
 * The shared failure budget (shared/security/throttle.ts) as the management API uses it: per
 * source address, never cleared by a success, blocked until the window from the first counted
 * failure has passed. Its gateway uses are tested in device-tokens.test.ts.
 */
describe('TokenThrottle (shared)', () => {
  it('is the one the gateway uses', () => {
    assert.equal(GatewayThrottle, TokenThrottle);
  });

  it('says how long a spent key stays blocked, and forgets it after the window', () => {
    const t = new TokenThrottle(3, 60_000);
    const key = ['addr:a'];
    t.fail(key, 1_000);
    t.fail(key, 20_000);
    assert.equal(t.retryAfterMs(key, 20_000), 0, 'not blocked below the budget');
    t.fail(key, 30_000);
    assert.equal(t.blocked(key, 30_000), true);
    assert.equal(t.retryAfterMs(key, 30_000), 31_000, 'until 60 s after the first failure, not the last');
    assert.equal(t.retryAfterMs(['addr:b', ...key], 30_000), 31_000, 'the longest of the keys blocked');
    assert.equal(t.blocked(key, 61_000), false);
    assert.equal(t.retryAfterMs(key, 61_000), 0);
    assert.equal(t.size, 0, 'the record is gone');
  });

  it('a valid token between guesses resets nothing: a key is cleared only by its window passing', () => {
    const t = new TokenThrottle(2, 60_000);
    const key = ['addr:a'];
    t.fail(key, 0);
    // A caller proving a token in between leaves the count as it is.
    assert.equal(t.blocked(key, 1), false);
    t.fail(key, 2);
    assert.equal(t.blocked(key, 3), true);
    assert.equal(t.blocked(key, 59_999), true);
    assert.equal(t.blocked(key, 60_000), false);
  });
});
