import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFileSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { afterEach, describe, it } from 'node:test';
import { HEADER_BYTES, MAX_RECORD_BYTES } from '../../field-client/src/queue/record-codec.ts';
import { LIMITS } from '../../shared/limits.ts';
import { reading, segments, values, range, corruptLogs, recordBounds, damagedQueues, drains } from '../helpers/queue-damage.ts';

/**
 * Records damaged on the medium in the middle of a segment, by their length as well as by their
 * body, and spans of garbage between records: every record whose own bytes are whole is found
 * again, at recovery and by the sender reading back, and only a torn tail (nothing whole after
 * the damage) is cut.
 */


describe('the durable queue, with records damaged in the middle of a segment', () => {
  const queues = damagedQueues('queue-damage');
  afterEach(queues.cleanup);
  const filled = queues.filled;

  /** Sets the length field of record `index` of `path` to `length` (a function of its true one). */
  const setLength = (path: string, index: number, length: (was: number, start: number, size: number) => number) => {
    const buf = readFileSync(path);
    const at = recordBounds(buf)[index] as number;
    buf.writeUInt32BE(length(buf.readUInt32BE(at), at, buf.length) >>> 0, at);
    writeFileSync(path, buf);
  };
  const flipInBody = (path: string, index: number) => {
    const buf = readFileSync(path);
    const at = recordBounds(buf)[index] as number;
    buf[at + HEADER_BYTES + 5] = (buf[at + HEADER_BYTES + 5] as number) ^ 0x01;
    writeFileSync(path, buf);
  };

  // A length damaged into another value: plausible ones (within the segment, leading into the
  // middle of a later record; past the segment's end; onto the start of the record after next),
  // and ones that cannot be true.
  const lengths: Array<[string, (was: number, start: number, size: number) => number]> = [
    ['plausible: into the next record', (was) => was + 37],
    ['plausible: a bit flipped high (past the end of the segment)', (was) => was ^ 0x10000],
    ['plausible: one byte short of the end of the segment', (_was, start, size) => size - start - HEADER_BYTES - 1],
    ['plausible: shorter than the record', (was) => was - 40],
    ['zero', () => 0],
    ['over 16 MiB', () => MAX_RECORD_BYTES + 1],
    ['all ones', () => 0xffffffff],
  ];

  for (const [name, length] of lengths) {
    it(`recovery steps over a record whose length was damaged (${name}): every other record is kept and sent, nothing cut`, async () => {
      const n = 300;
      const { seg, reopen, logs } = await filled(n);
      setLength(seg(0), 120, length);
      const q = await reopen();
      try {
        assert.deepEqual({ corruptTails: q.stats.corruptTails, corruptRecords: q.stats.corruptRecords, depth: q.depth }, { corruptTails: 0, corruptRecords: 1, depth: n - 1 });
        const sent = q.next(1000);
        assert.deepEqual(values(sent), range(n).filter((v) => v !== 120));
        assert.ok(corruptLogs(logs).some((l) => JSON.stringify(l.lostSeqs) === '[121,121]'), 'logged with the number lost');
        drains(q, n, sent);
      } finally {
        await q.close();
      }
    });
  }

  it('the sender reading back at run time steps over a record whose length was damaged, plausible or not, in a segment that is not the last', async () => {
    for (const [name, length] of lengths) {
      const n = 200;
      const { dir, seg, firstSeq, reopen } = await filled(0, { segmentBytes: 4096 });
      const q = await reopen();
      try {
        await q.append(range(n).map(reading)); // no sender yet: nothing kept in memory, read back from disk
        assert.ok(segments(dir).length > 3);
        setLength(seg(1), 7, length);
        const lost = firstSeq(1) + 7 - 1; // the value of record 7 of the second segment
        const sent = q.next(1000);
        assert.deepEqual(values(sent), range(n).filter((v) => v !== lost), `${name}: all but the damaged record sent`);
        assert.equal(q.stats.corruptRecords, 1, name);
        drains(q, n, sent);
        q.rewind();
        assert.deepEqual(q.next(1000), [], name);
      } finally {
        await q.close();
      }
    }
  });

  it('a record damaged in its body still costs that record alone, as does one in each of several segments', async () => {
    const n = 200;
    const { seg, reopen } = await filled(n, { segmentBytes: 4096 });
    flipInBody(seg(0), 3);
    flipInBody(seg(2), 0);
    setLength(seg(4), 5, (was) => was + 1);
    const q = await reopen();
    try {
      assert.deepEqual({ corruptTails: q.stats.corruptTails, corruptRecords: q.stats.corruptRecords, depth: q.depth }, { corruptTails: 0, corruptRecords: 3, depth: n - 3 });
      const sent = q.next(1000);
      assert.equal(sent.length, n - 3);
      drains(q, n, sent);
    } finally {
      await q.close();
    }
  });

  it('two damaged records side by side, and a span of random bytes over several records, cost those records only', async () => {
    const n = 300;
    const { seg, reopen } = await filled(n);
    const buf = readFileSync(seg(0));
    const starts = recordBounds(buf);
    buf.writeUInt32BE(0, starts[50] as number);
    buf.writeUInt32BE(buf.readUInt32BE(starts[51] as number) + 3, starts[51] as number);
    // from the middle of record 200 to the middle of record 204: 201..203 wholly gone
    const from = (starts[200] as number) + 30;
    const to = (starts[204] as number) + 30;
    randomBytes(to - from).copy(buf, from);
    writeFileSync(seg(0), buf);
    const q = await reopen();
    try {
      const gone = [50, 51, 200, 201, 202, 203, 204];
      assert.deepEqual({ corruptTails: q.stats.corruptTails, corruptRecords: q.stats.corruptRecords }, { corruptTails: 0, corruptRecords: gone.length });
      const sent = q.next(1000);
      assert.deepEqual(values(sent), range(n).filter((v) => !gone.includes(v)));
      drains(q, n, sent);
    } finally {
      await q.close();
    }
  });

  it('a span of random bytes between two records loses nothing: every record is found, the segment kept whole', async () => {
    const n = 300;
    const { seg, reopen, logs } = await filled(n);
    const buf = readFileSync(seg(0));
    const at = recordBounds(buf)[150] as number;
    // 200 kB of random bytes, and 64 kB of zeros (a page never written), in the middle
    writeFileSync(seg(0), Buffer.concat([buf.subarray(0, at), randomBytes(200_000), Buffer.alloc(65_536), buf.subarray(at)]));
    const size = statSync(seg(0)).size;
    const q = await reopen();
    try {
      assert.deepEqual({ corruptTails: q.stats.corruptTails, corruptRecords: q.stats.corruptRecords, depth: q.depth }, { corruptTails: 0, corruptRecords: 0, depth: n });
      assert.equal(statSync(seg(0)).size, size, 'nothing cut');
      assert.ok(corruptLogs(logs).length > 0, 'the damage is logged');
      const sent = q.next(1000);
      assert.deepEqual(values(sent), range(n), 'read back past the garbage too');
      drains(q, n, sent);
    } finally {
      await q.close();
    }
  });

  it('a torn tail is still cut where the last whole record ends, also after damage earlier in the segment', async () => {
    for (const tail of [
      Buffer.from([0, 0, 0, 200, 1, 2, 3, 4, 0x7b, 0x22, 9]), // a record's header and the start of its body
      Buffer.alloc(4096), // a page of zeros
      randomBytes(3000),
    ]) {
      const n = 100;
      const { seg, reopen } = await filled(n);
      setLength(seg(0), 40, () => 0);
      const whole = statSync(seg(0)).size;
      appendFileSync(seg(0), tail);
      const q = await reopen();
      try {
        assert.deepEqual({ corruptTails: q.stats.corruptTails, corruptRecords: q.stats.corruptRecords, depth: q.depth }, { corruptTails: 1, corruptRecords: 1, depth: n - 1 });
        assert.equal(statSync(seg(0)).size, whole, 'cut where the last whole record ends');
        const sent = q.next(1000);
        assert.deepEqual(values(sent), range(n).filter((v) => v !== 40));
        drains(q, n, sent);
        assert.deepEqual((await q.append([reading(1000)])).map((m) => m.seq), [n + 1], 'numbered on after the cut');
      } finally {
        await q.close();
      }
    }
  });

  it('a whole record of an older segment among the bytes of a torn tail is not taken for one of this segment: the tail is cut', async () => {
    // A power cut after a file grew, before its new bytes were written: on some file systems the
    // bytes it grew into are whatever the disk held there, such as a deleted segment's records.
    const n = 100;
    const { seg, reopen } = await filled(n);
    const buf = readFileSync(seg(0));
    const starts = recordBounds(buf);
    const old = buf.subarray(starts[3], starts[4]); // number 4: long sent, its segment deleted
    appendFileSync(seg(0), Buffer.concat([randomBytes(500), old, randomBytes(100)]));
    const q = await reopen();
    try {
      assert.deepEqual({ corruptTails: q.stats.corruptTails, corruptRecords: q.stats.corruptRecords, depth: q.depth }, { corruptTails: 1, corruptRecords: 0, depth: n });
      assert.equal(statSync(seg(0)).size, buf.length, 'cut where the last record of its own ends');
      const sent = q.next(1000);
      assert.deepEqual(values(sent), range(n));
      drains(q, n, sent);
      assert.deepEqual((await q.append([reading(1000)])).map((m) => m.seq), [n + 1], 'numbered on after the last record of its own');
    } finally {
      await q.close();
    }
  });

  it('searches a segment of garbage in bounded time: 16 MiB of random bytes, and bytes made to look like records, between records', async () => {
    const n = 20;
    const { seg, reopen } = await filled(n, { segmentBytes: 64 * 1024 * 1024 });
    const buf = readFileSync(seg(0));
    const starts = recordBounds(buf);
    const at = starts[10] as number;
    writeFileSync(seg(0), Buffer.concat([buf.subarray(0, at), randomBytes(16 * 1024 * 1024), buf.subarray(at)]));
    let started = Date.now();
    let q = await reopen();
    try {
      assert.deepEqual({ corruptTails: q.stats.corruptTails, depth: q.depth }, { corruptTails: 0, depth: n });
      assert.deepEqual(values(q.next(1000)), range(n));
    } finally {
      await q.close();
    }
    assert.ok(Date.now() - started < 20_000, `${Date.now() - started} ms`);

    // 8 MiB of false headers, one every 16 bytes, each with a length of about 1 MiB whose last
    // byte is `}`, a body starting `{"`, and a wrong checksum: each passes every check but its
    // checksum. Checked one by one, that is half a million checksums of 1 MiB each; the search
    // gives up after LIMITS.queueResyncCrcMaxBytes, and what follows that span is lost, as before.
    const fake = Buffer.alloc(8 * 1024 * 1024, '}');
    for (let p = 0; p + 16 <= fake.length; p += 16) {
      fake.writeUInt32BE(1024 * 1024 + 5, p); // its last byte is 12 bytes into a cell of 16: a `}`
      fake.writeUInt32BE(0, p + 4);
      fake.write('{"', p + 8, 'latin1');
    }
    const again = readFileSync(seg(0));
    const at2 = starts[5] as number; // before the garbage: where it was
    writeFileSync(seg(0), Buffer.concat([again.subarray(0, at2), fake, again.subarray(at2)]));
    started = Date.now();
    q = await reopen();
    try {
      assert.equal(q.stats.corruptTails, 1, 'given up: the rest of the segment cut');
      assert.deepEqual(values(q.next(1000)), range(5));
    } finally {
      await q.close();
    }
    assert.ok(LIMITS.queueResyncCrcMaxBytes <= 256 * 1024 * 1024);
    assert.ok(Date.now() - started < 20_000, `${Date.now() - started} ms`);
  });
});
