import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import { FieldClient } from '../../field-client/src/field-client.ts';
import { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { DurableQueue } from '../../field-client/src/queue/durable-queue.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { chunkAcker } from '../helpers/chunk-acks.ts';
import { eventually } from '../helpers/ws-device.ts';
import { tempDir } from '../helpers/pki.ts';

const log = createLogger('test', 'silent');
const CHUNK = 64 * 1024;

/**
 * A field client without a signing key whose gateway is the test: it acknowledges every chunk sent.
 * `place` puts something in the place of the file's progress (outgoing/ID.progress) before the
 * connection opens. Resolves with the chunks the gateway received (by index), the codes logged and
 * what is left in outgoing/.
 */
async function sendOneFile(dir: string, content: Buffer, place: (progressPath: string) => void) {
  const logs = new LogCapture();
  const queue = await DurableQueue.open({ dir: join(dir, 'queue'), maxBytes: 64 * 1024 * 1024, segmentBytes: 1024 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, log });
  const outbox = new FileOutbox(dir, CHUNK);
  const commands = new CommandHandlers({ deviceId: 'd1', key: undefined, allowUnsigned: false, maxAgeMs: 1000, skewMs: 1000 });
  const connection = new GatewayConnection({ url: 'wss://127.0.0.1:9/ws', tls: { ca: '', cert: '', key: '' }, reconnectInitialMs: 100, reconnectMaxMs: 100, idleTimeoutMs: 1000 }, log);
  const frames: string[] = [];
  connection.canSend = () => true;
  connection.send = (text: string) => void frames.push(text);
  const client = new FieldClient({ deviceId: 'd1', batchMax: 100, window: 100, fileWindow: 1, maxBytes: 64 * 1024 * 1024, dataDir: dir }, queue, outbox, connection, commands, logs.logger);
  try {
    const src = join(dir, 'scan.tif');
    writeFileSync(src, content);
    const m = await client.submitFile(src);
    const { transferId } = m.payload as { transferId: string };
    place(join(dir, 'outgoing', `${transferId}.progress`));
    connection.emit('open');
    connection.emit('frame', { type: 'welcome', deviceId: 'd1', gatewayId: 'gw', serverTime: Date.now(), limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages } });
    const gateway = chunkAcker(frames, (ack) => connection.emit('frame', ack));
    await eventually(() => {
      gateway.answerNew();
      return queue.depth === 0 && !existsSync(join(dir, 'outgoing', transferId)) ? true : undefined;
    }, 5_000, 'the file sent and its transfer ended');
    return { received: gateway.received, codes: logs.codes(), left: readdirSync(join(dir, 'outgoing')) };
  } finally {
    client.stop();
    await queue.close();
  }
}

describe("a file transfer's saved progress", () => {
  it('is read only as the client writes it: anything else is refused with FIELD_STATE_INVALID', () => {
    const work = tempDir('progress-schema');
    try {
      const outbox = new FileOutbox(work.dir, CHUNK);
      const p = join(outbox.dir, 'f1.progress');
      writeFileSync(p, '12');
      assert.equal(outbox.progress('f1'), 12);
      writeFileSync(p, '0');
      assert.equal(outbox.progress('f1'), 0);
      assert.equal(outbox.progress('f2'), 0, 'none saved: from the first chunk');
      // Number() took all of these for a count of chunks.
      for (const damaged of ['1e3', '  12 ', '12\n', '0x10', '012', '+3', '-1', '1.0', '', '9007199254740993']) {
        writeFileSync(p, damaged);
        assert.throws(() => outbox.progress('f1'), (err) => isFieldStreamError(err, 'FIELD_STATE_INVALID'), JSON.stringify(damaged));
      }
    } finally {
      work.cleanup();
    }
  });

  it('damaged, sends the file from its first chunk and logs FIELD_STATE_INVALID', async () => {
    const work = tempDir('progress-damaged');
    try {
      const content = randomBytes(3 * CHUNK);
      // '  2 ' was taken for 2: chunks 0 and 1 were never sent.
      const { received, codes } = await sendOneFile(work.dir, content, (p) => writeFileSync(p, '  2 '));
      assert.equal(received.filter(Boolean).length, 3, 'every chunk sent');
      assert.deepEqual(Buffer.concat(received), content);
      assert.deepEqual(codes, ['FIELD_STATE_INVALID']);
    } finally {
      work.cleanup();
    }
  });

  it('with a folder in its place, sends the file whole and ends its transfer (the file removed, the folder left)', async () => {
    const work = tempDir('progress-folder');
    try {
      const content = randomBytes(3 * CHUNK);
      let folder = '';
      const { received, codes, left } = await sendOneFile(work.dir, content, (p) => {
        folder = p;
        mkdirSync(p);
        writeFileSync(join(p, 'kept'), 'x');
      });
      assert.deepEqual(Buffer.concat(received), content);
      assert.ok(!codes.includes('FIELD_FILE_NOT_REMOVED'), codes.join());
      assert.ok(codes.includes('FIELD_STATE_INVALID'), codes.join());
      assert.deepEqual(left, [folder.split('/').pop()], 'only the folder, untouched, is left');
      assert.ok(existsSync(join(folder, 'kept')));
    } finally {
      work.cleanup();
    }
  });

  it('with a FIFO in its place, sends the file whole without waiting on it', async () => {
    const work = tempDir('progress-fifo');
    try {
      const content = randomBytes(3 * CHUNK);
      const { received, codes, left } = await sendOneFile(work.dir, content, (p) => execFileSync('mkfifo', [p]));
      assert.deepEqual(Buffer.concat(received), content);
      assert.deepEqual(codes, ['FIELD_STATE_INVALID']);
      assert.deepEqual(left, [], 'the FIFO went with the transfer');
    } finally {
      work.cleanup();
    }
  });
});
