import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterEach, describe, it } from 'node:test';
import { reading, values, range, corruptLogs, recordBounds, damagedQueues } from '../helpers/queue-damage.ts';

/**
 * Damage in the active segment (the one still written) with no whole record after it, found by
 * the sender reading back at run time: it is found once, logged once, and read past from then on
 * (not searched and logged again at every read), while the records the writer appends after it
 * are all sent.
 */


/** Ways to damage the last records of a segment so that no whole record follows the damage. */
const damages: Array<[string, (buf: Buffer, starts: number[]) => void]> = [
  ['the last record\'s length zero', (buf, starts) => buf.writeUInt32BE(0, starts.at(-1) as number)],
  ['the last record\'s length past the end', (buf, starts) => buf.writeUInt32BE(buf.readUInt32BE(starts.at(-1) as number) + 1000, starts.at(-1) as number)],
  ['random bytes over the last three records', (buf, starts) => randomBytes(buf.length - (starts.at(-3) as number)).copy(buf, starts.at(-3) as number)],
];

describe('the durable queue, with damage at the end of its active segment found at run time', () => {
  const queues = damagedQueues('queue-active-damage');
  afterEach(queues.cleanup);
  const open = queues.opened;
  const damage = (path: string, how: (buf: Buffer, starts: number[]) => void) => {
    const buf = readFileSync(path);
    how(buf, recordBounds(buf).slice(0, -1));
    writeFileSync(path, buf); // the same size: the writer appends after it as before
  };

  for (const [name, how] of damages) {
    it(`is logged once, read past without another search, and the records appended after it are sent (${name})`, async () => {
      const { q, logs, seg } = await open();
      try {
        await q.append(range(0, 100).map(reading)); // no sender yet: read back from disk
        damage(seg(), how);
        const first = values(q.next(1000));
        const lost = 100 - first.length;
        assert.deepEqual(first, range(0, 100 - lost));
        assert.equal(q.stats.corruptRecords, lost);
        assert.equal(corruptLogs(logs).length, 1);
        // Nothing acked yet: the sender asks again and again, and reads again after a reconnect.
        for (let i = 0; i < 5; i++) assert.deepEqual(q.next(1000), []);
        q.rewind();
        assert.deepEqual(values(q.next(1000)), first, 'sent again after a reconnect, up to the damage');
        assert.deepEqual(q.next(1000), []);
        assert.equal(corruptLogs(logs).length, 1, 'the damage logged once');
        // The writer goes on after the damaged bytes: what it appends is sent, from memory and from disk.
        await q.append(range(100, 150).map(reading));
        assert.deepEqual(values(q.next(1000)), range(100, 150));
        q.rewind();
        const all = q.next(1000);
        assert.deepEqual(values(all), [...first, ...range(100, 150)], 'read back from disk past the damage');
        assert.equal(corruptLogs(logs).length, 1, 'the damage logged once');
        assert.equal(q.stats.corruptRecords, lost);
        q.ack(all.map((m) => m.seq));
        assert.deepEqual({ depth: q.depth, committedThrough: q.committedThrough }, { depth: 0, committedThrough: 150 });
      } finally {
        await q.close();
      }
    });
  }

  it('records appended while the sender reads from disk are not taken for lost when the damage before them is found', async () => {
    // No memory for records ahead of the sender: each is read back from disk, by a reader made
    // for the bytes written when the sender started reading.
    const { q, logs, seg } = await open({ tailCacheBytes: 1 });
    try {
      await q.append(range(0, 100).map(reading));
      damage(seg(), damages[0]?.[1] as (buf: Buffer, starts: number[]) => void);
      const first = q.next(50); // not up to the damage yet
      assert.deepEqual(values(first), range(0, 50));
      await q.append(range(100, 150).map(reading));
      const rest = q.next(1000);
      assert.deepEqual(values(rest), [...range(50, 99), ...range(100, 150)]);
      assert.equal(q.stats.corruptRecords, 1);
      assert.equal(corruptLogs(logs).length, 1);
      q.ack([...first, ...rest].map((m) => m.seq));
      assert.deepEqual({ depth: q.depth, committedThrough: q.committedThrough }, { depth: 0, committedThrough: 150 });
    } finally {
      await q.close();
    }
  });
});
