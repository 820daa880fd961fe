import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { CommandFrame } from '../../shared/contract/downlink.ts';
import type { ResponsePayload } from '../../shared/contract/payloads.ts';
import { signCommand, type SignedCommand } from '../../shared/security/command-auth.ts';
import type { CommandGuardOptions } from '../../field-client/src/command-guard.ts';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import { tempDir } from '../helpers/pki.ts';

// A device whose clock is wrong (no RTC after a power cut, before NTP) refuses an authentic command
// as dated in the future, and answers it `rejected`: the command API takes that as final. Once the
// clock is right, the same command (sent again while the answer was on its way, or replayed by the
// DMZ) must not run: the operator was told it did not, and sends it again.
const key = randomBytes(32);
const now = 1_800_000_000_000;
const guard: CommandGuardOptions = { deviceId: 'valve-1', key, allowUnsigned: false, maxAgeMs: 60_000, skewMs: 5_000 };

function signed(c: SignedCommand, expiresAt: number): CommandFrame {
  return { type: 'command', commandId: c.commandId, command: c.command, issuedAt: c.issuedAt, auth: signCommand(key, c, expiresAt) };
}

describe('an authentic command answered rejected as future-dated or stale (commands.ts)', () => {
  it('never runs later, when the device clock is right again, not even after a restart', async () => {
    const tmp = tempDir('refused-once');
    try {
      const journal = join(tmp.dir, 'commands.journal');
      let runs = 0;
      const make = () => new CommandHandlers(guard, journal).register('open_valve', () => (runs++, { status: 'completed' }));
      const issuedAt = now;
      const future = signed({ commandId: 'cmd-future', deviceId: 'valve-1', command: 'open_valve', issuedAt }, issuedAt + 3_600_000);
      const sent: ResponsePayload[] = [];
      const h = make();
      const behind = issuedAt - 600_000; // the device's clock ten minutes behind
      const first = await h.run(future, behind);
      assert.equal(first?.code, 'FIELD_COMMAND_FUTURE');
      assert.equal(first?.unanswered, undefined, 'answered rejected');
      sent.push({ commandId: future.commandId, status: first.status });
      // The clock is right now: the same command delivered again is no new command.
      const again = await h.run(future, issuedAt + 1000);
      assert.notEqual(again?.status, 'completed', 'a command answered rejected ran');
      assert.equal(runs, 0);
      // After a restart too.
      const rebooted = make();
      const later = await rebooted.run(future, issuedAt + 2000);
      assert.notEqual(later?.status, 'completed', 'a command answered rejected ran after a restart');
      assert.equal(runs, 0);
      // The stale one, for a device whose clock ran ahead and was set back.
      const stale = signed({ commandId: 'cmd-stale', deviceId: 'valve-1', command: 'open_valve', issuedAt }, issuedAt + 3_600_000);
      const ahead = issuedAt + 3_600_000 + 60_000;
      assert.equal((await rebooted.run(stale, ahead))?.code, 'FIELD_COMMAND_STALE');
      const afterFix = make();
      assert.notEqual((await afterFix.run(stale, issuedAt + 1000))?.status, 'completed');
      assert.equal(runs, 0);
    } finally {
      tmp.cleanup();
    }
  });
});
