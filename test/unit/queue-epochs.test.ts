import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { QueueEpochs } from '../../field-client/src/queue/queue-epochs.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * An epoch's name must never come back for the same device: the distributor takes (device, epoch,
 * seq) once, and answers a copy with a receipt, so a new epoch named as an old one has new readings
 * numbered again taken for copies of old ones, receipted and deleted, stored nowhere.
 */
describe("the queue's epochs", () => {
  it('are distinct when the clock reads the same at every start (a device without a real-time clock, before NTP answers)', () => {
    const work = tempDir('queue-epochs');
    const wallClock = Date.now;
    // systemd sets a clock without a battery to one date at every boot: the field client, started
    // as early, opens its queue at about the same millisecond each time.
    Date.now = () => 1_735_689_600_000;
    try {
      const names = new Set<string>();
      const starts = 2000;
      for (let i = 0; i < starts; i++) {
        const dir = join(work.dir, String(i));
        mkdirSync(dir);
        names.add(QueueEpochs.open(dir, { nextSeq: 1, watermark: 0, boot: `boot-${i}`, log: new LogCapture().logger }).current);
      }
      // With 16 random bits, 2000 such starts give some 30 names twice.
      assert.equal(names.size, starts, `${starts - names.size} epoch names came back`);
    } finally {
      Date.now = wallClock;
      work.cleanup();
    }
  });
});
