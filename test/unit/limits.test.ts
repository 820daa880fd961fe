import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DAY_MS, DAY_S, LIMITS, TIMINGS } from '../../shared/limits.ts';

const repoRoot = join(import.meta.dirname, '..', '..');

describe('timings agreed between tiers', () => {
  it("the field client's idle timeout is three of the gateway's heartbeats", () => {
    assert.equal(TIMINGS.heartbeatMs, 30_000);
    assert.equal(TIMINGS.idleTimeoutMs, 3 * TIMINGS.heartbeatMs);
    // A device is never given up on while the gateway still considers it alive (one ping unanswered).
    assert.ok(TIMINGS.idleTimeoutMs > 2 * TIMINGS.heartbeatMs);
  });

  it('the compose healthcheck allows three intervals of the health file', () => {
    const compose = readFileSync(join(repoRoot, 'docker-compose.internal.yml'), 'utf8');
    const m = /newermt '-(\d+) seconds'/.exec(compose);
    assert.ok(m, 'healthcheck on the health file');
    assert.equal(Number(m[1]) * 1000, 3 * TIMINGS.healthFileIntervalMs);
  });

  it('keeps the units it names', () => {
    assert.equal(DAY_MS, DAY_S * 1000);
    assert.equal(LIMITS.commandMaxTtlS, 30 * DAY_S);
    for (const [name, value] of Object.entries(TIMINGS)) {
      assert.ok(Number.isInteger(value) && value > 0, name);
      assert.match(name, /(Ms|S|Days)$/, `${name} names its unit`);
    }
  });
});
