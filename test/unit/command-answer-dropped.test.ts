import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { CommandFrame } from '../../shared/contract/downlink.ts';
import type { ResponsePayload } from '../../shared/contract/payloads.ts';
import { createLogger } from '../../shared/logger.ts';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import { FieldClient } from '../../field-client/src/field-client.ts';
import { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { DurableQueue } from '../../field-client/src/queue/durable-queue.ts';
import { tempDir } from '../helpers/pki.ts';

// Under FIELD_QUEUE_FULL_POLICY=drop-oldest, a command's answer queued for the gateway could be
// dropped with its segment once the journal said "answered": the command's next deliveries were
// replays, never answered, and the command ended `expired` at the command API though it ran.
const guard = { deviceId: 'valve-1', key: undefined, allowUnsigned: true, maxAgeMs: 1e12, skewMs: 5_000 };
const quiet = createLogger('field-client', 'silent');
const frameOf = (id: string): CommandFrame => ({ type: 'command', commandId: id, command: 'open_valve', issuedAt: Date.now() });
const KiB = 1024;

async function until(what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 250; i++) {
    if (ok()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`timed out waiting until ${what}`);
}

/** `journal`: another client's command journal, as the same device's after a restart on a new queue. */
async function device(name: string, journal?: string) {
  const tmp = tempDir(name);
  journal ??= join(tmp.dir, 'commands.journal');
  const queue = await DurableQueue.open({ dir: join(tmp.dir, 'queue'), maxBytes: 64 * KiB, segmentBytes: 8 * KiB, fullPolicy: 'drop-oldest', sync: { mode: 'always' }, log: quiet });
  let runs = 0;
  const commands = new CommandHandlers(guard, journal).register('open_valve', () => (runs++, { status: 'completed', result: 'opened' }));
  const connection = new GatewayConnection({ url: 'wss://127.0.0.1:9/ws', tls: { ca: '', cert: '', key: '' }, reconnectInitialMs: 100, reconnectMaxMs: 100, idleTimeoutMs: 1000 }, quiet);
  const client = new FieldClient({ deviceId: 'valve-1', batchMax: 100, window: 100, fileWindow: 1, maxBytes: 64 * KiB, dataDir: tmp.dir }, queue, new FileOutbox(tmp.dir, 64 * KiB), connection, commands, quiet);
  const answers = (id: string) => queue.find((m) => m.dataType === 'response' && (m.payload as ResponsePayload).commandId === id).map((m) => m.payload as ResponsePayload);
  /** readings until the oldest segments, the answer's among them, are dropped */
  const fill = async () => {
    for (let i = 0; i < 40; i++) await queue.append([{ dataType: 'reading', payload: { sensor: 's', value: i, pad: 'x'.repeat(2 * KiB) } }]);
  };
  return {
    dir: tmp.dir,
    journal,
    queue,
    client,
    commands,
    connection,
    answers,
    fill,
    runs: () => runs,
    close: async () => {
      client.stop();
      await queue.close();
      tmp.cleanup();
    },
  };
}

describe('a command answer dropped by drop-oldest (commands.ts)', () => {
  it('is queued again, the same, without running the command again', async () => {
    const d = await device('answer-dropped');
    try {
      d.connection.emit('frame', frameOf('cmd-a'));
      await until('the answer is queued', () => d.answers('cmd-a').length === 1);
      const first = d.answers('cmd-a')[0];
      await new Promise((r) => setTimeout(r, 50)); // journaled "answered"
      await d.fill();
      assert.ok(d.queue.stats.dropped > 0, 'drop-oldest dropped records');
      await until('the answer is queued again', () => d.answers('cmd-a').length === 1);
      assert.deepEqual(d.answers('cmd-a')[0], first, 'the same answer: status, result and timestamp');
      // Delivered again (the command API sends it until its answer comes): not run, not answered twice.
      d.connection.emit('frame', frameOf('cmd-a'));
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(d.runs(), 1);
      assert.equal(d.answers('cmd-a').length, 1);
    } finally {
      await d.close();
    }
  });

  it('dropped while it is being queued (data arriving before its sync) is kept, not journaled as answered, and queued again', async () => {
    // The journal says "done" from the command's run until its answer is in the queue: a drop in
    // that window was taken for a copy of an answer kept already, and the "answered" line written
    // once the sync returned made every later delivery a replay, the answer gone for good.
    const d = await device('answer-dropped-while-queued');
    try {
      let first = true;
      await d.commands.answer(
        frameOf('cmd-d'),
        async (r) => {
          // What the field client's queueResponse does (its append, then the sync), with readings of
          // the local inputs appended while the first sync waits: they drop the answer's segment.
          await d.client.submit('response', r);
          if (first) {
            first = false;
            await d.fill();
            assert.ok(d.queue.stats.dropped > 0, 'drop-oldest dropped records');
            assert.equal(d.answers('cmd-d').length, 0, "the answer's segment was dropped");
          }
          await d.queue.durable();
        },
        quiet,
      );
      await until('the answer is queued again', () => d.answers('cmd-d').length === 1);
      assert.equal(d.answers('cmd-d')[0]?.result, 'opened');
      await new Promise((r) => setTimeout(r, 50)); // journaled "answered"
      // Delivered again (the command API sends it until its answer comes): a replay now, not run.
      d.connection.emit('frame', frameOf('cmd-d'));
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(d.runs(), 1, 'not run again');
      assert.equal(d.answers('cmd-d').length, 1, 'queued once more, not twice');
    } finally {
      await d.close();
    }
  });

  it('is in the journal before its segment is deleted: after a crash, the next delivery gets the answer kept, not run', async () => {
    const d = await device('answer-dropped-restart');
    try {
      d.connection.emit('frame', frameOf('cmd-b'));
      await until('the answer is queued', () => d.answers('cmd-b').length === 1);
      const first = d.answers('cmd-b')[0];
      await new Promise((r) => setTimeout(r, 50));
      // The drop without the re-queue that follows it (as if the client were killed in between):
      // the journal alone must hold the answer.
      const dropped = d.queue.find((m) => m.dataType === 'response');
      d.commands.answersDropped(dropped, () => Promise.reject(new Error('killed')), quiet);
      let runs = 0;
      const restarted = new CommandHandlers(guard, d.journal).register('open_valve', () => (runs++, { status: 'completed', result: 'again' }));
      const sent: ResponsePayload[] = [];
      await restarted.answer(frameOf('cmd-b'), async (r) => void sent.push(r), quiet);
      assert.equal(runs, 0, 'not run again');
      assert.deepEqual(sent, [first], 'answered with the answer kept');
      await restarted.answer(frameOf('cmd-b'), async (r) => void sent.push(r), quiet);
      assert.equal(sent.length, 1, 'once queued, a replay again');
    } finally {
      await d.close();
    }
  });

  it('a kept answer goes out at the next connection after a restart, with no command delivered again', async () => {
    const d = await device('answer-kept-at-connect');
    try {
      d.connection.emit('frame', frameOf('cmd-c'));
      await until('the answer is queued', () => d.answers('cmd-c').length === 1);
      const first = d.answers('cmd-c')[0];
      await new Promise((r) => setTimeout(r, 50));
      // Dropped, then killed before the re-queue: the journal alone holds the answer.
      d.commands.answersDropped(d.queue.find((m) => m.dataType === 'response'), () => Promise.reject(new Error('killed')), quiet);
      // The client started again on that journal, its queue without the answer.
      const again = await device('answer-kept-at-connect-restarted', d.journal);
      try {
        assert.equal(again.answers('cmd-c').length, 0);
        again.connection.emit('open');
        await until('the kept answer is queued at the connection', () => again.answers('cmd-c').length === 1);
        assert.deepEqual(again.answers('cmd-c')[0], first, 'the answer kept, the same');
        assert.equal(again.runs(), 0, 'not run again');
      } finally {
        await again.close();
      }
    } finally {
      await d.close();
    }
  });
});
