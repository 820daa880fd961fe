import assert from 'node:assert/strict';
import { appendFileSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { CommandFrame } from '../../shared/contract/downlink.ts';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import { CommandJournal } from '../../field-client/src/command-journal.ts';
import { tempDir } from '../helpers/pki.ts';

// The command journal is what keeps a command from running twice: a line of it the client cannot
// read (torn by a power cut, damaged on the disk, an answer that fails its schema) was skipped
// without a word, and an operator had no way to know that replays of those ids were no longer
// recognised.
const opts = { deviceId: 'valve-1', key: undefined, allowUnsigned: true, maxAgeMs: 1e12, skewMs: 5_000 };
const T = Date.now();
const f = (id: string, issuedAt: number): CommandFrame => ({ type: 'command', commandId: id, command: 'open_valve', issuedAt });

describe('a command journal damaged on the disk (command-journal.ts)', () => {
  it('counts at start the lines it cannot read, and still reads the others', async () => {
    const tmp = tempDir('journal-damage');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      const good = new CommandHandlers(opts, journal).register('open_valve', () => ({ status: 'completed' }));
      await good.run(f('cmd-1', T));
      good.answered('cmd-1');
      assert.equal(good.journalUnreadable, 0);
      appendFileSync(journal, 'cmd-2 sta\n'); // torn by a power cut, then appended after
      appendFileSync(journal, '\u0000\u0000garbage \u00ff\n'); // damaged
      appendFileSync(journal, 'cmd-3 done 1000 {"status":"finished"}\n'); // parses, fails its schema
      appendFileSync(journal, `cmd-4 started ${T}\n`);
      const after = new CommandHandlers(opts, journal).register('open_valve', () => ({ status: 'completed' }));
      assert.equal(after.journalUnreadable, 3);
      assert.equal((await after.run(f('cmd-1', T)))?.code, 'FIELD_COMMAND_REPLAYED');
      assert.equal((await after.run(f('cmd-4', T)))?.status, 'failed', 'started before: answered, not run again');
    } finally {
      tmp.cleanup();
    }
  });

  // A floor or an issuedAt damaged into a huge number (a bit flipped in a digit, digits added) was
  // believed: every new command was then at or before the floor, refused as a replay and not
  // answered, for ever. Values no command can have (beyond the device's clock by more than
  // TIMINGS.fieldCommandJournalAheadMaxMs) are damage: counted, and not believed.
  it('does not believe a floor or an issuedAt far beyond the device\'s clock', async () => {
    const tmp = tempDir('journal-future');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      appendFileSync(journal, '#floor 99999999999999\n'); // the year 5138
      appendFileSync(journal, `cmd-1 answered ${T}\n`);
      appendFileSync(journal, `cmd-2 answered 9${'9'.repeat(400)}\n`); // Infinity as a number
      appendFileSync(journal, `#floor ${T - 10_000}\n`); // believable
      const after = new CommandHandlers(opts, journal, 2).register('open_valve', () => ({ status: 'completed' }));
      assert.equal(after.journalUnreadable, 0, 'every line is one of ours');
      assert.equal(after.journalDamagedValues, 2);
      assert.equal((await after.run(f('cmd-1', T)))?.code, 'FIELD_COMMAND_REPLAYED', 'the ids are still known');
      assert.equal((await after.run(f('cmd-2', T)))?.code, 'FIELD_COMMAND_REPLAYED');
      assert.equal((await after.run(f('cmd-0', T - 20_000)))?.code, 'FIELD_COMMAND_REPLAYED', 'the believable floor holds');
      const now = Date.now() + 1;
      assert.equal((await after.run(f('cmd-3', now)))?.status, 'completed', 'a new command runs');
      // cmd-1 and cmd-2 are forgotten now: the floor takes cmd-2's issuedAt as "before the start", not Infinity.
      assert.equal((await after.run(f('cmd-4', now + 1)))?.status, 'completed');
      assert.equal((await after.run(f('cmd-5', now + 2)))?.status, 'completed', 'a forgotten damaged issuedAt does not become the floor');
      assert.equal((await after.run(f('cmd-2', T)))?.code, 'FIELD_COMMAND_REPLAYED', 'a forgotten id stays refused');
      // Read again (compacted or not), the damage is gone or counted again, never believed.
      const again = new CommandHandlers(opts, journal, 2).register('open_valve', () => ({ status: 'completed' }));
      assert.equal((await again.run(f('cmd-6', Date.now() + 1)))?.status, 'completed');
    } finally {
      tmp.cleanup();
    }
  });

  it('believes the journal when the device\'s clock cannot be right (before it was built): it cannot judge', () => {
    const tmp = tempDir('journal-early-clock');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      appendFileSync(journal, `#floor ${T}\ncmd-1 answered ${T}\n`);
      // A device without a real-time clock boots in 1970 until NTP sets it: the journal is right, the clock is not.
      const early = new CommandJournal(journal, 10, 0);
      assert.equal(early.damagedValues, 0);
      assert.equal(early.floor, T);
      const now = new CommandJournal(journal, 10, T);
      assert.equal(now.damagedValues, 0);
      // Judged against the later of the clock and the journal's last write (its mtime, by the clock then).
      const written = T / 1000;
      utimesSync(journal, written - 3 * 86_400, written - 3 * 86_400);
      assert.equal(new CommandJournal(journal, 10, T - 3 * 86_400_000).damagedValues, 2, 'three days beyond both the clock and the last write');
    } finally {
      tmp.cleanup();
    }
  });

  // A device whose clock reads behind at a start (a dead RTC battery: systemd sets the clock to its
  // build date; a clock restored from an old saved value) read every value of its journal as damage:
  // the floor was dropped and each id's issuedAt replaced by the start's time, so an id forgotten
  // since was no longer refused. Once the clock was set right, the DMZ's copy of such a command, still
  // within its TTL, ran a second time. The journal's values are now judged against the later of the
  // clock and the time the journal was last written, by the clock then.
  it('keeps its floor and issuedAts when the device starts with its clock behind the journal: a forgotten id still refused once the clock is right', async () => {
    const tmp = tempDir('journal-clock-behind');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      // Written three days ahead of the clock this start reads (the clock then was right, this one is behind).
      const W = T + 3 * 86_400_000;
      appendFileSync(journal, `#floor ${W - 60_000}\ncmd-1 answered ${W - 1_000}\n`);
      utimesSync(journal, W / 1000, W / 1000);
      const after = new CommandHandlers(opts, journal, 2).register('open_valve', () => ({ status: 'completed' }));
      assert.equal(after.journalDamagedValues, 0, 'nothing in it is past the time it was written');
      // NTP sets the clock right: `now` is W from here on.
      assert.equal((await after.run(f('cmd-0', W - 120_000), W))?.code, 'FIELD_COMMAND_REPLAYED', 'an id forgotten before the floor');
      assert.equal((await after.run(f('cmd-2', W + 1), W + 1))?.status, 'completed');
      assert.equal((await after.run(f('cmd-3', W + 2), W + 2))?.status, 'completed');
      assert.equal((await after.run(f('cmd-4', W + 3), W + 3))?.status, 'completed');
      // cmd-1 is forgotten now: its issuedAt, believed, is the floor's.
      assert.equal((await after.run(f('cmd-1', W - 1_000), W + 4))?.code, 'FIELD_COMMAND_REPLAYED', 'an id forgotten since the start');
    } finally {
      tmp.cleanup();
    }
  });
});
