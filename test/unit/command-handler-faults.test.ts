import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { CommandFrame } from '../../shared/contract/downlink.ts';
import type { ResponsePayload } from '../../shared/contract/payloads.ts';
import { createLogger } from '../../shared/logger.ts';
import type { CommandHandler } from '../../field-client/src/command-types.ts';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import { tempDir } from '../helpers/pki.ts';

// What a handler registered in code (CommandHandlers.register) may do wrong: the command is still
// answered once, at once, "failed" with what went wrong, never "interrupted by a restart".
const opts = { deviceId: 'valve-1', key: undefined, allowUnsigned: true, maxAgeMs: 1e12, skewMs: 5_000 };
const log = createLogger('field-client', 'silent');
const frameOf = (id: string, command: string): CommandFrame => ({ type: 'command', commandId: id, command, issuedAt: Date.now() });

describe('a command handler that misbehaves (commands.ts)', () => {
  const cases: Array<[string, CommandHandler]> = [
    ['throws null', () => {
      throw null;
    }],
    ['throws a string', () => {
      throw 'valve stuck';
    }],
    ['rejects with undefined', () => Promise.reject(undefined)],
    ['returns nothing', (() => undefined) as unknown as CommandHandler],
    ['returns a string', (() => 'done') as unknown as CommandHandler],
    ['throws an object without a prototype', () => {
      throw Object.create(null);
    }],
  ];
  for (const [what, handler] of cases) {
    it(`answers "failed" at once when it ${what}`, async () => {
      const tmp = tempDir('handler-fault');
      try {
        const h = new CommandHandlers(opts, join(tmp.dir, 'commands.journal')).register('bad', handler);
        const sent: ResponsePayload[] = [];
        await h.answer(frameOf('cmd-bad', 'bad'), async (r) => void sent.push(r), log);
        assert.equal(sent.length, 1, 'answered once, now');
        assert.equal(sent[0]?.status, 'failed');
        assert.doesNotMatch(String(sent[0]?.result), /interrupted|OUTCOME_UNKNOWN/);
      } finally {
        tmp.cleanup();
      }
    });
  }
});
