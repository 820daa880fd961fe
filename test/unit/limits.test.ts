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
    // Once it sent a frame: past a heartbeat (a live gateway pings within one, even while it reads
    // nothing) and past the longest the gateway takes to answer a frame (an error at its publish timeout).
    assert.ok(TIMINGS.answerTimeoutMs > TIMINGS.heartbeatMs && TIMINGS.answerTimeoutMs > LIMITS.publishTimeoutMs);
    assert.ok(TIMINGS.answerTimeoutMs < TIMINGS.idleTimeoutMs);
  });

  it("both Mosquittos take packets up to LIMITS.brokerPacketMaxBytes, the gateway's bound for an envelope", () => {
    for (const file of ['dmz/mosquitto/mosquitto.conf', 'internal-network/mosquitto/mosquitto.conf']) {
      assert.match(readFileSync(join(repoRoot, file), 'utf8'), new RegExp(`^max_packet_size ${LIMITS.brokerPacketMaxBytes}$`, 'm'), file);
    }
    assert.ok(LIMITS.envelopeJoinMaxBytes + LIMITS.frameMaxBytes < LIMITS.brokerPacketMaxBytes);
  });

  it("the compose healthchecks ask each service's /readyz on the port it serves it on", () => {
    const ports: Array<[string, number]> = [
      ['docker-compose.dmz.yml', 9464],
      ['docker-compose.internal.yml', 9465],
      ['docker-compose.internal.yml', 9466],
      ['docker-compose.internal.yml', 9468],
      ['docker-compose.internal.yml', 9469],
      ['field-client/docker-compose.yml', 9467],
    ];
    for (const [file, port] of ports) {
      const compose = readFileSync(join(repoRoot, file), 'utf8');
      assert.ok(compose.includes(`127.0.0.1:${port}/readyz`), `${file}: a healthcheck on /readyz at ${port}`);
    }
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
