import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { CommandFrame } from '../../shared/contract/downlink.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import { captureLogs } from '../helpers/gateway-fixture.ts';
import { tempDir } from '../helpers/pki.ts';

// A compromised DMZ can deliver a genuine command again as often as it likes. While its answer
// cannot be queued (the queue full, FIELD_QUEUE_FULL_POLICY=reject), or the command cannot be run
// (as many answers wait), each copy was a log line: a device's storage written without bound.
const opts = { deviceId: 'valve-1', key: undefined, allowUnsigned: true, maxAgeMs: 1e12, skewMs: 5_000 };
const frameOf = (id: string): CommandFrame => ({ type: 'command', commandId: id, command: 'open_valve', issuedAt: Date.now() });
const queueFull = () => Promise.reject(new FieldStreamError('FIELD_QUEUE_FULL', 'full'));
const COPIES = 500;

describe('copies of a command that cannot be answered now (commands.ts)', () => {
  it(`log at most ${LIMITS.fieldCommandLogMaxPerWindow} lines a window`, async () => {
    const tmp = tempDir('command-log-flood');
    try {
      const { lines, logger } = captureLogs();
      const h = new CommandHandlers(opts, join(tmp.dir, 'commands.journal')).register('open_valve', () => ({ status: 'completed' }));
      // Its answer kept: the queue refuses it at each copy.
      await h.answer(frameOf('cmd-kept'), queueFull, logger);
      for (let i = 0; i < COPIES; i++) await h.answer(frameOf('cmd-kept'), queueFull, logger);
      // As many answers wait as are kept: a new command is not run, at each copy.
      for (let i = 1; i < LIMITS.fieldCommandAnswersHeldMax; i++) await h.answer(frameOf(`cmd-${i}`), queueFull, logger);
      const before = lines.length;
      const waiting = frameOf('cmd-waiting');
      for (let i = 0; i < COPIES; i++) await h.answer(waiting, queueFull, logger);
      const perCopy = lines.filter((l) => l.commandId === 'cmd-kept').length;
      assert.ok(perCopy <= LIMITS.fieldCommandLogMaxPerWindow + 2, `${perCopy} lines for ${COPIES} copies of a command whose answer the queue refuses`);
      const deferred = lines.slice(before).filter((l) => l.commandId === 'cmd-waiting').length;
      assert.ok(deferred <= LIMITS.fieldCommandLogMaxPerWindow + 2, `${deferred} lines for ${COPIES} copies of a command not run`);
    } finally {
      tmp.cleanup();
    }
  });
});
