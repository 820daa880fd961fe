import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FileOutbox, FileTransferRecordSchema } from '../../field-client/src/files/file-outbox.ts';
import { recoverOutbox } from '../../field-client/src/files/outbox-recovery.ts';
import { FILE_TRANSFER } from '../../field-client/src/files/transfers.ts';
import { DurableQueue } from '../../field-client/src/queue/durable-queue.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * A file moved into the field client's outbox (from the watched folder, or the HTTP input's upload)
 * has left where it was before its queue record is written: a crash between the two, real files and
 * a real queue here, must neither strand it in the outbox unsent nor queue it twice.
 */
describe('files taken into the outbox when the client stopped', () => {
  const tmp = tempDir('outbox-recovery');
  after(() => tmp.cleanup());

  /** A data folder with a file to send, its queue and outbox as a start opens them. */
  async function device(name: string) {
    const dir = join(tmp.dir, name);
    const source = join(dir, 'photo.jpg');
    const content = Buffer.from(`the picture of ${name}`);
    const open = async () => ({
      queue: await DurableQueue.open({ dir: join(dir, 'queue'), maxBytes: 1 << 30, segmentBytes: 1 << 20, fullPolicy: 'reject', sync: { mode: 'always' }, log: new LogCapture().logger }),
      outbox: new FileOutbox(dir, 1024),
    });
    const first = await open();
    writeFileSync(source, content);
    return { dir, source, content, first, open };
  }
  const queuedFiles = (queue: DurableQueue) => queue.find((m) => m.dataType === FILE_TRANSFER).map((m) => FileTransferRecordSchema.parse(m.payload));

  it('queues at the next start a file that was moved in but whose queue record was never written', async () => {
    const d = await device('moved');
    const rec = await d.first.outbox.accept(d.source, { move: true, filename: 'photo.jpg', contentType: 'image/jpeg' });
    // The crash: the record was never appended.
    await d.first.queue.close();
    assert.equal(existsSync(d.source), false, 'the file left the folder it was sent from');

    const again = await d.open();
    const logs = new LogCapture();
    await recoverOutbox(again.outbox, again.queue, logs.logger);
    const queued = queuedFiles(again.queue);
    assert.equal(queued.length, 1);
    assert.equal(queued[0]?.transferId, rec.transferId);
    assert.equal(queued[0]?.filename, 'photo.jpg');
    assert.equal(queued[0]?.contentType, 'image/jpeg');
    assert.equal(queued[0]?.sha256, createHash('sha256').update(d.content).digest('hex'));
    assert.ok(again.outbox.has(rec.transferId));
    assert.deepEqual(again.outbox.unfinished(), new Map(), 'no note left');
    assert.ok(logs.codes().includes('FIELD_FILE_RECOVERED'));
    await again.queue.close();
  });

  it('finishes a move a crash cut before the file had its name, and queues nothing twice once the record is there', async () => {
    const d = await device('mid-move');
    const rec = await d.first.outbox.accept(d.source, { move: true });
    // As if the crash came while it was still being hashed: moved in, not yet renamed.
    renameSync(join(d.dir, 'outgoing', rec.transferId), join(d.dir, 'outgoing', `${rec.transferId}.tmp`));
    await d.first.queue.close();
    const again = await d.open();
    await recoverOutbox(again.outbox, again.queue, new LogCapture().logger);
    assert.deepEqual(
      queuedFiles(again.queue).map((r) => [r.transferId, r.size]),
      [[rec.transferId, d.content.length]],
    );
    await again.queue.close();

    // A start after a crash that came once the record was written, before the note went.
    const third = await d.open();
    const next = await third.outbox.accept(join(d.dir, 'outgoing', rec.transferId), { move: false, filename: 'copy.jpg' }).then(async (r) => {
      await third.queue.append([{ dataType: FILE_TRANSFER, payload: r }]);
      return r;
    });
    await third.queue.close();
    const fourth = await d.open();
    await recoverOutbox(fourth.outbox, fourth.queue, new LogCapture().logger);
    assert.equal(queuedFiles(fourth.queue).filter((r) => r.transferId === next.transferId).length, 1, 'the record written is the only one');
    assert.deepEqual(fourth.outbox.unfinished(), new Map());
    await fourth.queue.close();
  });

  it('leaves a copy that had not finished to its producer: the source is still there, nothing is queued', async () => {
    const d = await device('copy');
    const rec = await d.first.outbox.accept(d.source, { move: false });
    renameSync(join(d.dir, 'outgoing', rec.transferId), join(d.dir, 'outgoing', `${rec.transferId}.tmp`));
    await d.first.queue.close();
    const again = await d.open();
    await recoverOutbox(again.outbox, again.queue, new LogCapture().logger);
    assert.deepEqual(queuedFiles(again.queue), []);
    assert.ok(existsSync(d.source));
    assert.deepEqual(readdirSync(join(d.dir, 'outgoing')), [], 'neither the partial copy nor its note is left');
    await again.queue.close();
  });
});

describe('the outbox takes regular files only', () => {
  const tmp = tempDir('outbox-links');
  after(() => tmp.cleanup());

  it('refuses a link, moved or copied, never reading what it points to, and leaves it where it was', async () => {
    const secret = join(tmp.dir, 'signing.key');
    writeFileSync(secret, 'TOP-SECRET');
    const outbox = new FileOutbox(join(tmp.dir, 'data'), 1024);
    for (const move of [true, false]) {
      const link = join(tmp.dir, `innocent-${move}.txt`);
      symlinkSync(secret, link);
      await assert.rejects(outbox.accept(link, { move }), (err) => isFieldStreamError(err, 'FIELD_FILE_UNREADABLE'));
      assert.ok(lstatSync(link).isSymbolicLink(), 'the link stays where it was');
    }
    assert.deepEqual(readdirSync(join(tmp.dir, 'data', 'outgoing')), [], 'nothing taken, no note left');
  });
});
