import assert from 'node:assert/strict';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { afterEach, describe, it } from 'node:test';
import { encodeRecord } from '../../field-client/src/queue/record-codec.ts';
import { reading, segments, values, range, corruptLogs, recordBounds, damagedQueues, drains } from '../helpers/queue-damage.ts';

/**
 * Records whose checksum holds but whose body is not a queue record: not JSON, or JSON that is not
 * one by its schema (written by another build, or damage the CRC-32 did not catch). Such a record
 * is stepped over like a damaged one, its length being trustworthy: the queue opens, every other
 * record is sent, and only the numbers such records took are forgotten.
 */


/** Bodies whose checksum is right but that are not queue records. */
const bodies: Array<[string, string]> = [
  ['not JSON', 'this is no JSON at all'],
  ['JSON, not a queue record', '{"hello":"from another build"}'],
  ['a queue record of another shape', '{"seq":"7","messageId":1,"payload":{}}'],
];

describe('the durable queue, with records whose checksum holds but that are not queue records', () => {
  const queues = damagedQueues('queue-bad-body');
  afterEach(queues.cleanup);
  const filled = queues.filled;
  /** Puts a record of `body` (its checksum right) in place of record `index` of `path` (-1: the last), or before it with `insert`. */
  const putRecord = (path: string, index: number, body: string, insert = false) => {
    const buf = readFileSync(path);
    const starts = recordBounds(buf);
    const i = index < 0 ? starts.length - 1 + index : index;
    const at = starts[i] as number;
    const after = insert ? at : (starts[i + 1] as number);
    writeFileSync(path, Buffer.concat([buf.subarray(0, at), encodeRecord(body), buf.subarray(after)]));
  };

  for (const [name, body] of bodies) {
    it(`opens with such a record (${name}) as the last of the last segment: every other record sent, its number not given again`, async () => {
      const n = 100;
      const { reopen, logs, seg } = await filled(n);
      putRecord(seg(-1), -1, body);
      const q = await reopen();
      try {
        assert.deepEqual({ corruptTails: q.stats.corruptTails, corruptRecords: q.stats.corruptRecords, depth: q.depth }, { corruptTails: 0, corruptRecords: 1, depth: n - 1 });
        assert.ok(corruptLogs(logs).some((l) => JSON.stringify(l.lostSeqs) === `[${n},${n}]`), 'logged with the number lost');
        const sent = q.next(1000);
        assert.deepEqual(values(sent), range(n - 1));
        drains(q, n, sent);
        assert.deepEqual((await q.append([reading(1000)])).map((m) => m.seq), [n + 1], 'numbered on after it');
        assert.deepEqual(values(q.next(10)), [1000]);
      } finally {
        await q.close();
      }
    });
  }

  it('opens with such a record as the last of a segment that is not the last, and as the first of one', async () => {
    const n = 200;
    const { reopen, seg, dir, firstSeq } = await filled(n, { segmentBytes: 4096 });
    assert.ok(segments(dir).length > 3);
    putRecord(seg(0), -1, bodies[0]?.[1] as string);
    putRecord(seg(1), 0, bodies[1]?.[1] as string);
    putRecord(seg(1), -1, bodies[2]?.[1] as string);
    // values: one below the numbers
    const gone = [firstSeq(1) - 2, firstSeq(1) - 1, firstSeq(2) - 2];
    const q = await reopen();
    try {
      assert.equal(q.stats.corruptTails, 0);
      const sent = q.next(1000);
      assert.deepEqual(values(sent), range(n).filter((v) => !gone.includes(v)));
      assert.equal(q.stats.corruptRecords, gone.length);
      drains(q, n, sent);
    } finally {
      await q.close();
    }
  });

  it('opens with such a record before a torn tail: the tail cut, the record stepped over', async () => {
    const n = 100;
    const { reopen, seg } = await filled(n);
    putRecord(seg(-1), -1, bodies[0]?.[1] as string);
    appendFileSync(seg(-1), Buffer.from([0, 0, 0, 200, 1, 2, 3, 4, 0x7b, 0x22, 9]));
    const q = await reopen();
    try {
      assert.deepEqual({ corruptTails: q.stats.corruptTails, corruptRecords: q.stats.corruptRecords }, { corruptTails: 1, corruptRecords: 1 });
      const sent = q.next(1000);
      assert.deepEqual(values(sent), range(n - 1));
      drains(q, n, sent);
    } finally {
      await q.close();
    }
  });

  it('the sender steps over such a record in the middle of a segment: the number it took alone is lost, and one put between two records costs none', async () => {
    for (const [name, body] of bodies) {
      const n = 100;
      const { reopen, seg, logs } = await filled(n);
      putRecord(seg(0), 30, body); // in place of number 31
      putRecord(seg(0), 60, body, true); // between numbers 60 and 61
      const q = await reopen();
      try {
        const sent = q.next(1000);
        assert.deepEqual(values(sent), range(n).filter((v) => v !== 30), name);
        assert.equal(q.stats.corruptRecords, 1, name);
        assert.equal(corruptLogs(logs).length, 2, `${name}: each logged`);
        drains(q, n, sent);
      } finally {
        await q.close();
      }
    }
  });

  it('the sender reading back at run time steps over such a record in a segment that is not the last', async () => {
    const n = 200;
    const { reopen, seg, firstSeq, dir } = await filled(0, { segmentBytes: 4096 });
    const q = await reopen();
    try {
      await q.append(range(n).map(reading)); // no sender yet: read back from disk
      assert.ok(segments(dir).length > 3);
      putRecord(seg(1), 5, bodies[1]?.[1] as string);
      putRecord(seg(2), -1, bodies[0]?.[1] as string);
      const gone = [firstSeq(1) + 5 - 1, firstSeq(3) - 2];
      const sent = q.next(1000);
      assert.deepEqual(values(sent), range(n).filter((v) => !gone.includes(v)));
      assert.equal(q.stats.corruptRecords, 2);
      drains(q, n, sent);
    } finally {
      await q.close();
    }
  });
});
