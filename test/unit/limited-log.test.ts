import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LimitedLog } from '../../shared/limited-log.ts';
import { LogCapture } from '../helpers/embedded.ts';

/**
 * Every log line that something outside a process decides how often to cause (a flood of forged
 * messages, a hostile gateway's frames, a broken Sparkplug publisher) goes through one limiter.
 */
describe('a limited log', () => {
  it('writes at most its lines per window, then says how many it left out and of which codes', () => {
    const logs = new LogCapture();
    const l = new LimitedLog(logs.logger, { maxPerWindow: 3, windowMs: 1_000, what: 'test refusals' });
    for (let i = 0; i < 10; i++) l.write({ code: i % 2 === 0 ? 'SECURITY_STALE' : 'SECURITY_REPLAY', i }, `refusal ${i}`, 5_000 + i);
    assert.deepEqual(logs.lines.map((x) => x.i), [0, 1, 2]);
    assert.ok(logs.lines.every((x) => x.level === 40), 'warn unless told');
    // Still within the window: nothing.
    l.write({ code: 'SECURITY_STALE' }, 'refusal', 5_999);
    assert.equal(logs.lines.length, 3);
    // The next window: first the count of those left out (8 of them), then the line.
    l.write({ code: 'SECURITY_STALE', i: 11 }, 'refusal 11', 6_000);
    const [count, line] = logs.lines.slice(3);
    assert.deepEqual(count?.leftOutByCode, { SECURITY_STALE: 4, SECURITY_REPLAY: 4 });
    assert.equal(count?.leftOut, 8);
    assert.match(String(count?.msg), /^test refusals: 8 left out/);
    assert.equal(count?.code, undefined, 'the count is not a line of any one code');
    assert.equal(line?.i, 11);
    // A window with nothing left out writes no count.
    l.write({ code: 'SECURITY_STALE', i: 12 }, 'refusal 12', 8_000);
    assert.deepEqual(logs.lines.slice(5).map((x) => x.i), [12]);
  });

  it("counts a line without a code by its error's errno (a failed system call), else as none", () => {
    const logs = new LogCapture();
    const l = new LimitedLog(logs.logger, { maxPerWindow: 1, windowMs: 1_000, what: 'retries' });
    const full = Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC', errno: -28 });
    l.write({ err: full }, 'a system call failed', 0);
    l.write({ err: full }, 'a system call failed', 1);
    l.write({ err: full }, 'a system call failed', 2);
    l.write({ err: new Error('a defect') }, 'unexpected failure', 3);
    l.write({ code: 'DISTRIBUTOR_WRITE_FAILED', err: full }, 'coded', 4);
    l.write({}, 'next window', 1_000);
    assert.deepEqual(logs.lines.find((x) => x.leftOut !== undefined)?.leftOutByCode, { ENOSPC: 2, none: 1, DISTRIBUTOR_WRITE_FAILED: 1 });
  });

  it('writes at the level it is given, one line per window at the least', () => {
    const logs = new LogCapture();
    const l = new LimitedLog(logs.logger, { level: 'error', maxPerWindow: 1, windowMs: 10_000, what: 'floods' });
    for (let t = 0; t < 25_000; t += 100) l.write({}, 'flood', t);
    assert.equal(logs.lines.filter((x) => x.msg === 'flood').length, 3);
    assert.deepEqual(logs.lines.filter((x) => x.leftOut !== undefined).map((x) => x.leftOut), [99, 99]);
    assert.ok(logs.lines.every((x) => x.level === 50));
  });
});
