import assert from 'node:assert/strict';
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { CommandFrame } from '../../shared/contract/downlink.ts';
import { CommandHandlers } from '../../field-client/src/commands.ts';
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
});
