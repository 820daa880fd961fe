import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { FanoutSink } from '../../internal-network/distributor/sinks/fanout.ts';
import type { PointSink } from '../../internal-network/distributor/sinks/sink.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';

/** A store that answers as told, and remembers what it took. */
class Store implements PointSink {
  readonly taken: StoredPoint[][] = [];
  constructor(
    readonly description: string,
    public answer: ErrorCode | 'ok' | 'throws' = 'ok',
  ) {}
  async write(points: readonly StoredPoint[]): Promise<void> {
    await new Promise((r) => setImmediate(r));
    if (this.answer === 'throws') throw new Error('not coded');
    if (this.answer !== 'ok') throw new FieldStreamError(this.answer, `${this.description} says no`);
    this.taken.push([...points]);
  }
  async close(): Promise<void> {}
}

const pts: StoredPoint[] = [{ measurement: 'readings', tags: { device: 'd' }, fields: { v: 1 }, time: 1 }];
const outcome = (p: Promise<void>) => p.then(() => 'ok', (e: unknown) => (e instanceof FieldStreamError ? e.code : 'uncoded'));

describe('writing to several stores at once', () => {
  it('is done only when every store has the points', async () => {
    const a = new Store('influx');
    const b = new Store('postgres');
    assert.equal(await outcome(new FanoutSink([a, b]).write(pts)), 'ok');
    assert.deepEqual([a.taken.length, b.taken.length], [1, 1]);
  });

  it('fails (to be retried) when any store fails, even if another refused the data', async () => {
    assert.equal(await outcome(new FanoutSink([new Store('a'), new Store('b', 'DISTRIBUTOR_WRITE_FAILED')]).write(pts)), 'DISTRIBUTOR_WRITE_FAILED');
    assert.equal(await outcome(new FanoutSink([new Store('a', 'DISTRIBUTOR_WRITE_REJECTED'), new Store('b', 'DISTRIBUTOR_WRITE_FAILED')]).write(pts)), 'DISTRIBUTOR_WRITE_FAILED');
    assert.equal(await outcome(new FanoutSink([new Store('a'), new Store('b', 'throws')]).write(pts)), 'DISTRIBUTOR_WRITE_FAILED');
  });

  it('is refused (a dead letter) when a store refuses and none fails, naming the store', async () => {
    const err = await new FanoutSink([new Store('influx'), new Store('postgres', 'DISTRIBUTOR_WRITE_REJECTED')]).write(pts).catch((e: unknown) => e);
    assert.ok(err instanceof FieldStreamError && err.code === 'DISTRIBUTOR_WRITE_REJECTED' && err.message.startsWith('postgres: '));
  });

  it('writes every store again on a retry: the one that had the points takes them once more', async () => {
    const a = new Store('a');
    const b = new Store('b', 'DISTRIBUTOR_WRITE_FAILED');
    const fan = new FanoutSink([a, b]);
    assert.equal(await outcome(fan.write(pts)), 'DISTRIBUTOR_WRITE_FAILED');
    b.answer = 'ok';
    assert.equal(await outcome(fan.write(pts)), 'ok');
    assert.deepEqual([a.taken.length, b.taken.length], [2, 1]);
  });

  it('describes itself by its stores', () => {
    assert.equal(new FanoutSink([new Store('x'), new Store('y')]).description, 'x + y');
  });
});
