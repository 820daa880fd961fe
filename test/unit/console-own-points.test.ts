import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { OwnPointsWriter } from '../../internal-network/console/own-points.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import { toLines } from '../../internal-network/distributor/sinks/line-protocol.ts';
import type { PointSink } from '../../internal-network/distributor/sinks/sink.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LogCapture } from '../helpers/embedded.ts';

const T0 = Date.UTC(2026, 0, 5);

/**
 * A store that answers as InfluxDB does: a batch holding a point it refuses (here: a `bad` field,
 * or a line protocol encoding error) is refused whole (400, DISTRIBUTOR_WRITE_REJECTED); while
 * `down`, every write fails as when it is unreachable (DISTRIBUTOR_WRITE_FAILED).
 */
class FakeStore implements PointSink {
  readonly description = 'fake store';
  readonly stored: string[] = [];
  writes = 0;
  down = false;
  /** fail (as unreachable) the write with this number, once */
  failWrite = -1;

  async write(points: readonly StoredPoint[]): Promise<void> {
    this.writes++;
    if (this.down || this.writes === this.failWrite) throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', 'InfluxDB is unreachable: ECONNREFUSED');
    const lines = toLines(points);
    if (points.some((p) => p.fields.bad !== undefined)) throw new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', 'InfluxDB answered 400: field type conflict', { status: 400 });
    this.stored.push(...lines);
  }

  async close(): Promise<void> {}
}

const state = (i: number): StoredPoint => ({ measurement: 'device_state', tags: { device: `pump-${i}` }, fields: { state: 'offline', previous: 'online' }, time: T0 + i });
const anomaly = (i: number, score: number): StoredPoint => ({ measurement: 'anomalies', tags: { device: `pump-${i}`, field_name: 'flow', detector: 'mad' }, fields: { score, value: 1 }, time: T0 + i });

describe("the console's own points", () => {
  it('are written past a point the store refuses for good: it alone is dropped, counted and logged with its code', async () => {
    const store = new FakeStore();
    const logs = new LogCapture();
    const own = new OwnPointsWriter(store, logs.logger);
    try {
      // An anomaly whose score line protocol cannot carry, among 1,000 device states.
      for (let i = 0; i < 1000; i++) own.add(i === 500 ? anomaly(i, Infinity) : state(i));
      await own.flush();
      assert.equal(own.refused, 1);
      assert.equal(own.written, 999);
      assert.equal(own.dropped, 0);
      assert.equal(store.stored.length, 999);
      assert.ok(store.stored.every((l) => l.startsWith('device_state,')));
      // Halving finds it in about 2 log2(1000) writes, not one a point.
      assert.ok(store.writes <= 2 * Math.ceil(Math.log2(1000)) + 1, `${store.writes} writes`);
      const line = logs.lines.find((l) => l.code === 'DISTRIBUTOR_WRITE_REJECTED');
      assert.deepEqual([line?.measurement, line?.deviceId], ['anomalies', 'pump-500']);
      // Nothing left to write again.
      const before = store.writes;
      await own.flush();
      assert.equal(store.writes, before);
    } finally {
      await own.close();
    }
  });

  it('drop only the refused among many, and log a line per window, not one a point', async () => {
    const store = new FakeStore();
    const logs = new LogCapture();
    const own = new OwnPointsWriter(store, logs.logger);
    try {
      for (let i = 0; i < 200; i++) own.add(i % 10 === 3 ? { ...state(i), fields: { bad: 1 } } : state(i));
      await own.flush();
      assert.deepEqual([own.refused, own.written], [20, 180]);
      assert.equal(logs.lines.filter((l) => l.code === 'DISTRIBUTOR_WRITE_REJECTED').length, 1);
    } finally {
      await own.close();
    }
  });

  it('keep every point, in order, while the store is down, and write them once it is back', async () => {
    const store = new FakeStore();
    const logs = new LogCapture();
    const own = new OwnPointsWriter(store, logs.logger);
    try {
      store.down = true;
      for (let i = 0; i < 10; i++) own.add(state(i));
      for (let k = 0; k < 3; k++) await own.flush();
      assert.deepEqual([own.written, own.refused, own.dropped], [0, 0, 0]);
      assert.equal(logs.lines.filter((l) => l.msg === 'console points not written; trying again').length, 1, 'one line while it lasts');
      store.down = false;
      own.add(state(10));
      await own.flush();
      assert.equal(own.written, 11);
      assert.deepEqual(
        store.stored.map((l) => /device=pump-(\d+)/.exec(l)?.[1]),
        Array.from({ length: 11 }, (_, i) => String(i)),
      );
    } finally {
      await own.close();
    }
  });

  it('keep what is not written yet when the store goes down while a refused batch is halved', async () => {
    const store = new FakeStore();
    const own = new OwnPointsWriter(store, new LogCapture().logger);
    try {
      for (let i = 0; i < 16; i++) own.add(i === 11 ? { ...state(i), fields: { bad: 1 } } : state(i));
      // Write 1: all 16, refused; write 2: 0-7, stored; write 3: 8-15, refused; write 4 (8-11) fails.
      store.failWrite = 4;
      await own.flush();
      assert.deepEqual([own.written, own.refused], [8, 0]);
      await own.flush();
      assert.deepEqual([own.written, own.refused, own.dropped], [15, 1, 0]);
      assert.deepEqual(
        store.stored.map((l) => Number(/device=pump-(\d+)/.exec(l)?.[1])),
        Array.from({ length: 16 }, (_, i) => i).filter((i) => i !== 11),
      );
    } finally {
      await own.close();
    }
  });
});
