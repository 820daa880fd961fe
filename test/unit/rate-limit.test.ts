import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DeviceRateLimiter, type RateLimits } from '../../dmz/gateway/rate-limit.ts';
import { TIMINGS } from '../../shared/limits.ts';

// 10 messages and 1,000 bytes a second, 1 s of burst, 100 ms of CPU a second.
const limits: RateLimits = { messagesPerS: 10, bytesPerS: 1000, cpuMsPerS: 100, burstS: 1, frameMaxMessages: 5, frameMaxBytes: 500 };

test('a device spends its budgets across frames and earns them back with time', () => {
  const rate = new DeviceRateLimiter(limits);
  const t0 = 1000;
  const d = rate.of('dev-a', t0, Date.now());
  assert.equal(d.admit(600, t0), undefined);
  assert.equal(d.admit(600, t0), 'bytes', 'the bytes budget (1,000 saved up) is spent');
  assert.equal(d.admit(100, t0), undefined, 'a smaller frame still fits');
  assert.equal(d.more(8, t0), true, 'the rest of its messages: 2 + 8 of 10');
  assert.equal(d.admit(1, t0), 'messages');
  assert.equal(d.more(1, t0), false);
  assert.equal(d.admit(100, t0 + 500), undefined, 'half a second later: 5 messages, 500 bytes back');
  assert.equal(d.limited, 3, 'three refusals counted');
  assert.equal(rate.of('dev-a', t0 + 500, Date.now()), d, 'the same budget at the next frame, or of a new connection');
});

test('CPU time is charged after the parse, may leave the device owing, and refuses it until paid', () => {
  const d = new DeviceRateLimiter(limits).of('dev-b', 0, Date.now());
  assert.equal(d.admit(10, 0), undefined);
  d.chargeCpu(300, 0);
  assert.equal(d.admit(10, 1000), 'cpu', '100 saved up, 300 spent, 100 earned back: it owes 100 ms');
  assert.equal(d.admit(10, 2000), undefined, 'paid after another second');
});

test('a device new to a full limiter keeps its budget (it is not the one forgotten)', () => {
  const rate = new DeviceRateLimiter(limits, 2);
  const wall = Date.now();
  rate.of('busy-1', 0, wall);
  rate.of('busy-2', 0, wall);
  const d = rate.of('new-one', 0, wall);
  assert.equal(d.admit(500, 0), undefined);
  assert.equal(d.admit(500, 0), undefined);
  assert.equal(rate.of('new-one', 0, wall).admit(500, 0), 'bytes', 'its 1,000 bytes spent, on the same budget');
});

test('the idle are forgotten once too many are tracked; the busy are not', () => {
  const rate = new DeviceRateLimiter(limits, 2);
  const wall = Date.now();
  const idle = rate.of('idle', 0, wall - TIMINGS.rateLimitIdleMs - 1);
  const busy = rate.of('busy', 0, wall);
  rate.of('third', 0, wall);
  assert.notEqual(rate.of('idle', 0, wall), idle, 'a fresh budget: the idle one was forgotten');
  assert.equal(rate.of('busy', 0, wall), busy);
});
