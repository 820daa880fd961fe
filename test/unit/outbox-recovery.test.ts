import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { constants, closeSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { copyNoFollow } from '../../field-client/src/files/copy-no-follow.ts';
import { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { FinishedTransfers } from '../../field-client/src/files/finished-transfers.ts';
import { FileTransferRecordSchema } from '../../field-client/src/files/transfer-record.ts';
import { recoverOutbox } from '../../field-client/src/files/outbox-recovery.ts';
import { FILE_TRANSFER, FileTransfers } from '../../field-client/src/files/transfers.ts';
import { DurableQueue } from '../../field-client/src/queue/durable-queue.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { RogueGateway } from '../helpers/rogue-gateway.ts';
import { eventually } from '../helpers/ws-device.ts';
import { cannotRunAsNobody } from '../helpers/as-nobody.ts';

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
    // Under a transfer of its own: its record may have been written, sent from and lost (see below).
    assert.notEqual(queued[0]?.transferId, rec.transferId);
    assert.equal(queued[0]?.filename, 'photo.jpg');
    assert.equal(queued[0]?.contentType, 'image/jpeg');
    assert.equal(queued[0]?.sha256, createHash('sha256').update(d.content).digest('hex'));
    assert.ok(again.outbox.has(queued[0]?.transferId ?? '') && !again.outbox.has(rec.transferId));
    assert.deepEqual(again.outbox.unfinished(new LogCapture().logger), new Map(), 'no note left');
    assert.ok(logs.codes().includes('FIELD_FILE_RECOVERED'));
    await again.queue.close();
  });

  it("queues a file again under a transfer of its own when its record was lost: the progress and chunks sent under the lost record's id, at another chunk size, do not apply", async () => {
    // With FIELD_QUEUE_SYNC at an interval, a file's record is sendable before it is on disk: its
    // transfer began (chunks sent, received by the distributor, progress saved beside the file),
    // then a power cut lost the record and kept the note. Queued again under the same id, at the
    // chunk size of this start, the old progress skipped bytes never sent, and the distributor
    // (its replay window, the chunks it holds) took the new chunks for the old ones.
    const d = await device('requeued');
    const content = Buffer.from(Array.from({ length: 10 * 1024 }, (_, i) => i % 251));
    writeFileSync(d.source, content);
    const rec = await d.first.outbox.accept(d.source, { move: true, filename: 'photo.jpg', contentType: 'image/jpeg' });
    assert.equal(rec.chunkBytes, 1024);
    d.first.outbox.saveProgress(rec.transferId, 4); // four chunks of 1 KiB stored before the cut
    await d.first.queue.close();

    // The next start cuts files in chunks of 4 KiB (FIELD_FILE_CHUNK_BYTES changed, or the link measured otherwise).
    const queue = await DurableQueue.open({ dir: join(d.dir, 'queue'), maxBytes: 1 << 30, segmentBytes: 1 << 20, fullPolicy: 'reject', sync: { mode: 'always' }, log: new LogCapture().logger });
    const outbox = new FileOutbox(d.dir, 4096);
    const logs = new LogCapture();
    await recoverOutbox(outbox, queue, logs.logger);
    const [again, ...more] = queuedFiles(queue);
    assert.ok(again && more.length === 0);
    assert.notEqual(again.transferId, rec.transferId, 'a transfer of its own: a new epoch for the replay window, a new folder for its chunks');
    assert.equal(again.chunkBytes, 4096);
    assert.equal(again.sha256, createHash('sha256').update(content).digest('hex'));
    assert.ok(outbox.has(again.transferId) && !outbox.has(rec.transferId));
    assert.ok(!existsSync(join(d.dir, 'outgoing', `${rec.transferId}.progress`)), "the lost record's progress is gone");
    assert.deepEqual(outbox.unfinished(new LogCapture().logger), new Map(), 'no note left');
    assert.ok(logs.codes().includes('FIELD_FILE_RECOVERED'));
    // Sent from its first chunk, the whole file.
    const transfers = new FileTransfers(outbox, { window: 100, receipts: true }, () => {}, new LogCapture().logger);
    const [m] = queue.find((x) => x.dataType === FILE_TRANSFER);
    assert.ok(m && transfers.start(m.seq, again));
    const chunks = [...transfers.chunks()].map((c) => JSON.parse(c.item.payloadJson) as { data: string; transfer: { id: string; index: number } });
    assert.deepEqual(chunks.map((c) => c.transfer.index), [0, 1, 2]);
    assert.ok(chunks.every((c) => c.transfer.id === again.transferId));
    assert.deepEqual(Buffer.concat(chunks.map((c) => Buffer.from(c.data, 'base64'))), content);
    await queue.close();
  });

  it('starts when the queue refuses the record of a file to finish (full, or a full disk): the note stays, and the next start queues it', async () => {
    const d = await device('refused');
    const rec = await d.first.outbox.accept(d.source, { move: true, filename: 'photo.jpg', contentType: 'image/jpeg' });
    await d.first.queue.close();
    // A queue that takes nothing now: refused as full, as a drain-only queue on a full disk refuses too.
    const full = await DurableQueue.open({ dir: join(d.dir, 'queue'), maxBytes: 16, segmentBytes: 1 << 20, fullPolicy: 'reject', sync: { mode: 'always' }, log: new LogCapture().logger });
    const outbox = new FileOutbox(d.dir, 1024);
    const logs = new LogCapture();
    await recoverOutbox(outbox, full, logs.logger);
    assert.deepEqual(queuedFiles(full), []);
    assert.deepEqual(logs.codes(), ['FIELD_QUEUE_FULL'], 'logged with the queue\'s code');
    const [kept, ...others] = outbox.unfinished(new LogCapture().logger).keys();
    assert.ok(kept !== undefined && others.length === 0, 'the note stays, for the next start');
    assert.ok(outbox.has(kept), 'the file stays in the outbox (under the transfer id its note names)');
    await full.close();

    const again = await d.open();
    await recoverOutbox(again.outbox, again.queue, new LogCapture().logger);
    const queued = queuedFiles(again.queue);
    assert.equal(queued.length, 1);
    assert.ok(again.outbox.has(queued[0]?.transferId ?? '') && !again.outbox.has(rec.transferId) && !again.outbox.has(kept));
    assert.deepEqual(again.outbox.unfinished(new LogCapture().logger), new Map());
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
    const [finished] = queuedFiles(again.queue);
    assert.deepEqual(
      queuedFiles(again.queue).map((r) => r.size),
      [d.content.length],
    );
    assert.ok(finished && again.outbox.has(finished.transferId));
    await again.queue.close();

    // A start after a crash that came once the record was written, before the note went.
    const third = await d.open();
    const next = await third.outbox.accept(join(d.dir, 'outgoing', finished.transferId), { move: false, filename: 'copy.jpg' }).then(async (r) => {
      await third.queue.append([{ dataType: FILE_TRANSFER, payload: r }]);
      return r;
    });
    await third.queue.close();
    const fourth = await d.open();
    await recoverOutbox(fourth.outbox, fourth.queue, new LogCapture().logger);
    assert.equal(queuedFiles(fourth.queue).filter((r) => r.transferId === next.transferId).length, 1, 'the record written is the only one');
    assert.deepEqual(fourth.outbox.unfinished(new LogCapture().logger), new Map());
    await fourth.queue.close();
  });

  it('sets aside at a start a file in the outbox that no queue record names, and touches none whose record is written', async () => {
    const d = await device('unqueued');
    const out = join(d.dir, 'outgoing');
    // Taken whole, as takeFile does: moved in, its record written and synced, its note gone.
    const queued = await d.first.outbox.accept(d.source, { move: true, filename: 'photo.jpg' });
    await d.first.queue.append([{ dataType: FILE_TRANSFER, payload: queued }]);
    d.first.outbox.accepted(queued.transferId);
    // Killed once its record was written, before its note went.
    writeFileSync(join(d.dir, 'second.jpg'), 'the second picture');
    const noted = await d.first.outbox.accept(join(d.dir, 'second.jpg'), { move: true });
    await d.first.queue.append([{ dataType: FILE_TRANSFER, payload: noted }]);
    // Neither a note nor a record: a file whose transfer was done but which could not be set aside
    // (the disk), or a crash between drop-oldest dropping its record and the file's removal.
    const orphan = `f${Date.now().toString(36)}0123456789ab`;
    writeFileSync(join(out, orphan), 'bytes a producer handed over');
    writeFileSync(join(out, `${orphan}.progress`), '3');
    await d.first.queue.close();

    const again = await d.open();
    const logs = new LogCapture();
    await recoverOutbox(again.outbox, again.queue, logs.logger);
    assert.deepEqual(readdirSync(out).sort(), [queued.transferId, noted.transferId].sort(), 'the files queued stay, untouched; the other left, with its progress');
    assert.equal(readFileSync(join(out, queued.transferId), 'utf8'), d.content.toString());
    assert.equal(readFileSync(join(out, noted.transferId), 'utf8'), 'the second picture');
    assert.equal(readFileSync(join(d.dir, 'rejected', `${orphan}-unqueued`), 'utf8'), 'bytes a producer handed over', 'set aside whole, not deleted');
    const line = logs.lines.find((l) => l.code === 'FIELD_FILE_UNQUEUED');
    assert.equal(line?.transferId, orphan);
    assert.equal(line?.path, join(d.dir, 'rejected', `${orphan}-unqueued`));
    assert.equal(again.outbox.bytes(), d.content.length + 'the second picture'.length, 'no longer counted as waiting to be sent');
    assert.deepEqual(queuedFiles(again.queue).map((r) => r.transferId), [queued.transferId, noted.transferId], 'nothing queued twice');
    await again.queue.close();
  });

  it('sets aside at a start a file being taken (ID.tmp) whose note is gone, never deleting it nor leaving it uncounted', async () => {
    const d = await device('tmp-no-note');
    const out = join(d.dir, 'outgoing');
    // Moved in, then its note damaged on disk (readNotes removes a note it cannot read): ID.tmp alone.
    const rec = await d.first.outbox.accept(d.source, { move: true });
    renameSync(join(out, rec.transferId), join(out, `${rec.transferId}.tmp`));
    writeFileSync(join(out, `${rec.transferId}.accepting`), '{"filename":');
    // Beside it, a file being taken whose note is whole: it is finished and queued, as before.
    writeFileSync(join(d.dir, 'second.jpg'), 'the second picture');
    const moving = await d.first.outbox.accept(join(d.dir, 'second.jpg'), { move: true });
    renameSync(join(out, moving.transferId), join(out, `${moving.transferId}.tmp`));
    await d.first.queue.close();

    const again = await d.open();
    const logs = new LogCapture();
    await recoverOutbox(again.outbox, again.queue, logs.logger);
    const aside = join(d.dir, 'rejected', `${rec.transferId}-unqueued-taking`);
    assert.equal(readFileSync(aside, 'utf8'), d.content.toString(), 'set aside whole, not deleted');
    const [finished] = queuedFiles(again.queue);
    assert.deepEqual(queuedFiles(again.queue).map((r) => r.size), ['the second picture'.length]);
    assert.deepEqual(readdirSync(out), [finished?.transferId]);
    const line = logs.lines.find((l) => l.code === 'FIELD_FILE_UNQUEUED');
    assert.deepEqual([line?.transferId, line?.path], [rec.transferId, aside]);
    // Why its note went is said too: the note's file, and what is wrong with it.
    const damaged = logs.lines.find((l) => l.code === 'FIELD_STATE_INVALID');
    assert.equal(damaged?.path, join(out, `${rec.transferId}.accepting`));
    assert.equal(damaged?.transferId, rec.transferId);
    assert.equal(typeof damaged?.err, 'string');
    await again.queue.close();
  });

  it('starts over a folder in the place of a note (ID.accepting), said and left where it is, its file set aside', async () => {
    const d = await device('note-folder');
    const out = join(d.dir, 'outgoing');
    const rec = await d.first.outbox.accept(d.source, { move: true });
    renameSync(join(out, rec.transferId), join(out, `${rec.transferId}.tmp`));
    const folder = join(out, `${rec.transferId}.accepting`);
    rmSync(folder, { force: true });
    mkdirSync(folder);
    writeFileSync(join(folder, 'kept.txt'), 'what someone put there');
    await d.first.queue.close();

    const again = await d.open();
    const logs = new LogCapture();
    await recoverOutbox(again.outbox, again.queue, logs.logger);
    assert.equal(readFileSync(join(d.dir, 'rejected', `${rec.transferId}-unqueued-taking`), 'utf8'), d.content.toString(), 'its file set aside whole');
    const damaged = logs.lines.find((l) => l.code === 'FIELD_STATE_INVALID');
    assert.equal(damaged?.path, folder);
    assert.equal(readFileSync(join(folder, 'kept.txt'), 'utf8'), 'what someone put there', 'a folder is not removed, nor what it holds');
    await again.queue.close();
  });

  it('removes at a start what a crash left beside the files (a progress or note written aside, the progress of a file gone), never what a file needs', async () => {
    const d = await device('strays');
    const out = join(d.dir, 'outgoing');
    // Queued and part sent: its progress is what a restart resumes from.
    const queued = await d.first.outbox.accept(d.source, { move: true });
    await d.first.queue.append([{ dataType: FILE_TRANSFER, payload: queued }]);
    d.first.outbox.accepted(queued.transferId);
    d.first.outbox.saveProgress(queued.transferId, 1);
    // Killed while it was hashed: moved in, not yet renamed, its note beside it.
    writeFileSync(join(d.dir, 'second.jpg'), 'the second picture');
    const moving = await d.first.outbox.accept(join(d.dir, 'second.jpg'), { move: true });
    renameSync(join(out, moving.transferId), join(out, `${moving.transferId}.tmp`));
    // Killed while writing aside: a progress (FileOutbox.saveProgress) and a note (replaceFileDurablySync), never renamed.
    writeFileSync(join(out, `${queued.transferId}.progress.tmp`), '2');
    writeFileSync(join(out, `${moving.transferId}.accepting.tmp-4242`), '{"filename":');
    // Killed between a finished file's removal and its progress's.
    const gone = `f${Date.now().toString(36)}0123456789ab`;
    writeFileSync(join(out, `${gone}.progress`), '3');
    writeFileSync(join(out, `${gone}.progress.tmp`), '3');
    await d.first.queue.close();

    const again = await d.open();
    await recoverOutbox(again.outbox, again.queue, new LogCapture().logger);
    const [, finished] = queuedFiles(again.queue);
    assert.deepEqual(readdirSync(out).sort(), [queued.transferId, `${queued.transferId}.progress`, finished?.transferId].sort());
    assert.equal(again.outbox.progress(queued.transferId), 1, 'its progress untouched');
    assert.deepEqual(queuedFiles(again.queue).map((r) => [r.transferId, r.size]), [[queued.transferId, d.content.length], [finished?.transferId, 'the second picture'.length]]);
    assert.notEqual(finished?.transferId, moving.transferId);
    await again.queue.close();

    // An outbox holding nothing else: the strays go too.
    writeFileSync(join(out, `${gone}.progress`), '3');
    writeFileSync(join(out, `${gone}.progress.tmp`), '3');
    writeFileSync(join(out, `${gone}.accepting.tmp-4242`), '{');
    const empty = join(tmp.dir, 'strays-only');
    mkdirSync(join(empty, 'outgoing'), { recursive: true });
    for (const f of readdirSync(out).filter((f) => f.startsWith(gone))) renameSync(join(out, f), join(empty, 'outgoing', f));
    const queue = await DurableQueue.open({ dir: join(empty, 'queue'), maxBytes: 1 << 30, segmentBytes: 1 << 20, fullPolicy: 'reject', sync: { mode: 'always' }, log: new LogCapture().logger });
    await recoverOutbox(new FileOutbox(empty, 1024), queue, new LogCapture().logger);
    assert.deepEqual(readdirSync(join(empty, 'outgoing')), []);
    await queue.close();
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

  it('never queues a move across file systems a crash cut mid-copy: the partial copy goes, the source is taken again', async (t) => {
    // The watched folder on another file system (an SD card, a mount): the move is a copy, then a removal.
    const other = '/dev/shm';
    if (!existsSync(other) || statSync(other).dev === statSync(tmp.dir).dev) return t.skip('needs a second file system at /dev/shm');
    const watched = mkdtempSync(join(other, 'fieldstream-xfs-'));
    try {
      const size = 32 * 1024 * 1024;
      const source = join(watched, 'scan.tif');
      writeFileSync(source, Buffer.alloc(size, 7));
      const live = join(tmp.dir, 'xfs-live');
      const crashed = join(tmp.dir, 'xfs-crashed');
      const outbox = new FileOutbox(live, 64 * 1024);
      const taking = outbox.accept(source, { move: true });
      // What a SIGKILL mid-copy leaves on disk: outgoing/ as it is while the copy runs (copied with
      // sync calls, between two of the copy's writes), the source still in its folder.
      mkdirSync(join(crashed, 'outgoing'), { recursive: true });
      let partial = 0;
      while (partial === 0) {
        await new Promise((r) => setImmediate(r));
        const out = join(live, 'outgoing');
        const tmpFile = readdirSync(out).find((f) => f.endsWith('.tmp'));
        const at = tmpFile ? statSync(join(out, tmpFile)).size : 0;
        if (at > 0 && at < size) {
          for (const f of readdirSync(out)) copyFileSync(join(out, f), join(crashed, 'outgoing', f));
          partial = at;
        }
      }
      const whole = await taking;
      assert.equal(whole.size, size, 'the copy the crash did not cut is whole');
      assert.equal(existsSync(source), false, 'and its source went once it was');

      const queue = await DurableQueue.open({ dir: join(crashed, 'queue'), maxBytes: 1 << 30, segmentBytes: 1 << 20, fullPolicy: 'reject', sync: { mode: 'always' }, log: new LogCapture().logger });
      await recoverOutbox(new FileOutbox(crashed, 64 * 1024), queue, new LogCapture().logger);
      assert.deepEqual(queuedFiles(queue).map((r) => r.size), [], `the ${partial} bytes copied of ${size} are not queued as the file`);
      assert.deepEqual(readdirSync(join(crashed, 'outgoing')), [], 'neither the partial copy nor its note is left');
      await queue.close();
    } finally {
      rmSync(watched, { recursive: true, force: true });
    }
  });
});

describe('a move across file systems killed between its copy and the removal of its source', () => {
  const tmp = tempDir('outbox-xfs-kill');
  after(() => tmp.cleanup());
  const queuedFiles = (queue: DurableQueue) => queue.find((m) => m.dataType === FILE_TRANSFER);

  it('queues the file once: the source the kill left in the watched folder goes at the next start, not taken again', async (t) => {
    const other = '/dev/shm';
    if (!existsSync(other) || statSync(other).dev === statSync(tmp.dir).dev) return t.skip('needs a second file system at /dev/shm');
    const watched = mkdtempSync(join(other, 'fieldstream-xfs-kill-'));
    try {
      const source = join(watched, 'scan.tif');
      writeFileSync(source, Buffer.alloc(256 * 1024, 9));
      const data = join(tmp.dir, 'data');
      // A real process taking the file, SIGKILLed as it is about to remove the source: its copy is
      // whole and synced, its note says the outbox's copy is the file, the source is still there.
      const code = `
        const fs = (await import('node:fs')).default;
        const { syncBuiltinESMExports } = await import('node:module');
        const unlink = fs.unlinkSync;
        fs.unlinkSync = (p, ...rest) => { if (String(p) === ${JSON.stringify(source)}) process.kill(process.pid, 'SIGKILL'); return unlink(p, ...rest); };
        syncBuiltinESMExports();
        const { FileOutbox } = await import(${JSON.stringify(join(import.meta.dirname, '..', '..', 'field-client', 'src', 'files', 'file-outbox.ts'))});
        await new FileOutbox(${JSON.stringify(data)}, 64 * 1024).accept(${JSON.stringify(source)}, { move: true, filename: 'scan.tif' });
        console.log('not killed');`;
      const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: join(import.meta.dirname, '..', '..'), encoding: 'utf8' });
      assert.equal(child.signal, 'SIGKILL', `killed at the removal: ${child.stdout}${child.stderr}`);
      assert.ok(existsSync(source), 'the source is still in the watched folder');

      const queue = await DurableQueue.open({ dir: join(data, 'queue'), maxBytes: 1 << 30, segmentBytes: 1 << 20, fullPolicy: 'reject', sync: { mode: 'always' }, log: new LogCapture().logger });
      await recoverOutbox(new FileOutbox(data, 64 * 1024), queue, new LogCapture().logger);
      const queued = queuedFiles(queue).length;
      // Queued, and the source left in the folder too: the folder's next look takes it again, a second file downstream.
      assert.ok(queued + (existsSync(source) ? 1 : 0) === 1, `the file is taken once: ${queued} queued, source ${existsSync(source) ? 'still in the folder' : 'gone'}`);
      assert.equal(queued, 1, 'the whole copy the kill left is queued, not dropped');
      await queue.close();
    } finally {
      rmSync(watched, { recursive: true, force: true });
    }
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

  it('refuses a FIFO swapped in for the file at once, never waiting on it for a writer', async () => {
    // The watched folder is writable by others: between the look (lstat) and the copy's open, the
    // name may become a FIFO. An open waiting for a writer would hold a libuv pool thread for good.
    const fifo = join(tmp.dir, 'swapped.txt');
    execFileSync('mkfifo', [fifo]);
    const target = join(tmp.dir, 'swapped.copy');
    const outcome = await Promise.race([
      copyNoFollow(fifo, target).then(() => 'copied', (err: unknown) => err),
      new Promise((r) => setTimeout(() => r('still waiting after 2 s'), 2000)),
    ]);
    if (outcome === 'still waiting after 2 s') closeSync(openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK)); // lets the waiting open go
    assert.ok(isFieldStreamError(outcome, 'FIELD_FILE_UNREADABLE'), String(outcome));
    assert.equal(existsSync(target), false, 'nothing copied');
    assert.ok(lstatSync(fifo).isFIFO(), 'left in place');
  });
});

describe('the outbox moves only what it can read', () => {
  it("leaves another user's file it cannot read where it was, rather than moving it out and never sending it", async (t) => {
    const cannot = cannotRunAsNobody('the outbox');
    if (cannot) return t.skip(cannot);
    // A folder others may write (a producer's drop folder): the outbox runs as `nobody`, a producer
    // (root here) leaves a 0600 file of its own. A rename needs only the folder's write access.
    const root = mkdtempSync('/tmp/fieldstream-outbox-unreadable-');
    try {
      execFileSync('chmod', ['0755', root]);
      const watched = join(root, 'watched');
      const data = join(root, 'data');
      mkdirSync(watched, { mode: 0o777 });
      mkdirSync(data, { mode: 0o777 });
      execFileSync('chmod', ['0777', watched, data]);
      const file = join(watched, 'reading.bin');
      writeFileSync(file, 'private bytes', { mode: 0o600 });
      const code = `
        const { FileOutbox } = await import(${JSON.stringify(join(import.meta.dirname, '..', '..', 'field-client', 'src', 'files', 'file-outbox.ts'))});
        const outbox = new FileOutbox(${JSON.stringify(data)}, 1024);
        try { await outbox.accept(${JSON.stringify(file)}, { move: true }); console.log('accepted'); }
        catch (err) { console.log(err.code); }`;
      const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
        uid: 65534,
        gid: 65534,
        cwd: join(import.meta.dirname, '..', '..'),
        env: { ...process.env, TSX_DISABLE_CACHE: '1', HOME: root },
        encoding: 'utf8',
      });
      assert.equal(out.trim(), 'FIELD_FILE_UNREADABLE');
      assert.equal(statSync(file).size, 'private bytes'.length, 'still where its producer left it');
      assert.deepEqual(readdirSync(join(data, 'outgoing')), [], 'nothing in the outbox, no note');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('the outbox lets a file go once its transfer is done', () => {
  const tmp = tempDir('outbox-finish');
  after(() => tmp.cleanup());

  it('keeps a file whose size cannot be read (an I/O error), never removing it unchecked; one gone is let go', async () => {
    const outbox = new FileOutbox(join(tmp.dir, 'data'), 1024);
    const src = join(tmp.dir, 'scan.log');
    writeFileSync(src, 'what was taken');
    const rec = await outbox.accept(src, { move: true });
    outbox.accepted(rec.transferId);
    const path = join(tmp.dir, 'data', 'outgoing', rec.transferId);
    // Whether its producer wrote more to it after it was taken is unknown: removed, those bytes would go with it.
    const statting = fs.statSync;
    (fs as { statSync: unknown }).statSync = (p: fs.PathLike, ...rest: unknown[]) => {
      if (p === path) throw Object.assign(new Error(`EIO: i/o error, stat '${path}'`), { code: 'EIO' });
      return (statting as (...a: unknown[]) => unknown)(p, ...rest);
    };
    syncBuiltinESMExports();
    const logs = new LogCapture();
    const done: Array<[number, boolean | undefined]> = [];
    const transfers = new FileTransfers(outbox, { window: 1, receipts: false }, (seq, _transferId, aside) => done.push([seq, aside]), logs.logger);
    try {
      assert.ok(transfers.start(7, rec));
      const [chunk] = [...transfers.chunks()];
      assert.ok(chunk);
      transfers.onAck(chunk.item.messageId, 0); // its one chunk delivered: the transfer is done
      assert.deepEqual(done, [[7, true]], 'its record let go, rejected/ measured again');
      assert.deepEqual(logs.codes(), ['FIELD_FILE_UNREADABLE']);
      assert.throws(() => outbox.finish(rec), (err) => isFieldStreamError(err, 'FIELD_FILE_UNREADABLE'));
    } finally {
      (fs as { statSync: unknown }).statSync = statting;
      syncBuiltinESMExports();
    }
    assert.equal(readFileSync(path, 'utf8'), 'what was taken', 'kept, whole');
    rmSync(path); // removed by hand: nothing more to keep
    assert.equal(outbox.finish(rec), undefined);
    assert.deepEqual(readdirSync(join(tmp.dir, 'data', 'outgoing')), []);
  });
});

/**
 * The queue keeps one committed watermark: a file record let go while an earlier record was still
 * open (a reading unanswered) is above it, and read back at the next start, clean stops included.
 * Its file left the outbox when it was delivered (or set aside in rejected/ when refused): that
 * start must let the record go quietly, not report the file missing nor send anything of it.
 */
describe('a file done before a stop is not taken for missing at the next start', () => {
  const DEVICE = 'cam-done';
  const pki = makeTestPki([DEVICE]);
  const tmp = tempDir('outbox-done');
  after(() => {
    pki.cleanup();
    tmp.cleanup();
  });

  it('keeps its note checked and bounded: a torn last line dropped quietly, a damaged one logged, lines let go once ack.json is past their records', async () => {
    const dir = join(tmp.dir, 'note');
    mkdirSync(dir);
    const path = join(dir, 'transfers-finished.jsonl');
    writeFileSync(path, '{"transferId":"fa","seq":3}\n{"transferId":"fb","seq":"x"}\n{"transferId":"fc","seq":9}\n{"transferId":"fd","se');
    const logs = new LogCapture();
    const note = new FinishedTransfers(dir, logs.logger);
    assert.deepEqual([note.has('fa'), note.has('fb'), note.has('fc'), note.has('fd')], [true, false, true, false]);
    assert.deepEqual(logs.lines.map((l) => [l.code, l.lines]), [['FIELD_STATE_INVALID', 1]], 'the damaged line logged, the torn last one not');
    assert.equal(readFileSync(path, 'utf8'), '{"transferId":"fa","seq":3}\n{"transferId":"fc","seq":9}\n', 'written anew without them');
    // ack.json holds 5: the record 3 is never read back again, its line goes; 9 stays.
    note.add('fe', 12, 5);
    assert.deepEqual([note.has('fa'), note.has('fc'), note.has('fe')], [false, true, true]);
    const again = new FinishedTransfers(dir, logs.logger);
    assert.deepEqual([again.has('fc'), again.has('fe')], [true, true], 'what was appended is read back');
    // Bounded: past LIMITS.fileTransfersFinishedMax one is not written down (its record, read back, is reported missing).
    const max = LIMITS.fileTransfersFinishedMax;
    writeFileSync(path, Array.from({ length: max }, (_, i) => `{"transferId":"g${i}","seq":${100 + i}}\n`).join(''));
    const full = new FinishedTransfers(dir, logs.logger);
    assert.equal(full.size, max);
    full.add('fy', 999_999, 5);
    assert.equal(full.has('fy'), false, 'not written down past the bound');
    full.add('fz', 1_000_000, 150); // the records at or below 150 are behind ack.json: room again
    assert.deepEqual([full.has('fz'), full.has('g50'), full.has('g51')], [true, false, true]);
    assert.equal(new FinishedTransfers(dir, logs.logger).has('fz'), true);
  });

  it('removes at the next start what a rewrite of its note killed before its rename left aside, and keeps the note', () => {
    // Written aside (transfers-finished.jsonl.tmp-PID), synced, then renamed: a kill before the rename
    // left it on the device's disk for good, another at each such kill (another process id each start).
    const dir = join(tmp.dir, 'note-aside');
    mkdirSync(dir);
    const path = join(dir, 'transfers-finished.jsonl');
    writeFileSync(path, '{"transferId":"fa","seq":3}\n');
    const aside = `${path}.tmp-4194301`;
    writeFileSync(aside, '{"transferId":"fa","se'); // cut off by the kill
    writeFileSync(`${path}.bak`, "an operator's copy\n");
    const note = new FinishedTransfers(dir, new LogCapture().logger);
    assert.equal(existsSync(aside), false, 'the file aside is gone');
    assert.equal(existsSync(`${path}.bak`), true, 'nothing else is touched');
    assert.equal(note.has('fa'), true, 'the note stands');
  });

  it('sets aside, never sends, a file still in the outbox whose transfer was finished (it could not be removed then)', async () => {
    const dir = join(tmp.dir, 'left');
    const open = () => DurableQueue.open({ dir: join(dir, 'queue'), maxBytes: 1 << 30, segmentBytes: 1 << 20, fullPolicy: 'reject', sync: { mode: 'always' }, log: new LogCapture().logger });
    const queue = await open();
    const outbox = new FileOutbox(dir, 1024);
    const src = join(dir, 'scan.txt');
    writeFileSync(src, 'all sent');
    const [reading] = await queue.append([{ dataType: 'event', payload: { eventType: 'e', message: 'open', severity: 'info' } }]);
    const rec = await outbox.accept(src, { move: true });
    const [file] = await queue.append([{ dataType: FILE_TRANSFER, payload: rec }]);
    outbox.accepted(rec.transferId);
    // Every chunk delivered, the file not removable then (files/transfer-finish.ts): it stays, its record let go.
    queue.commit([(file as { seq: number }).seq]);
    new FinishedTransfers(dir, new LogCapture().logger).add(rec.transferId, (file as { seq: number }).seq, queue.persistedThrough);
    await queue.close();

    const again = await open();
    const logs = new LogCapture('debug');
    await recoverOutbox(new FileOutbox(dir, 1024), again, logs.logger);
    assert.deepEqual(again.find(() => true).map((m) => m.seq), [(reading as { seq: number }).seq], 'only the reading is held');
    assert.deepEqual(logs.codes(), ['FIELD_FILE_UNQUEUED']);
    assert.equal(readFileSync(join(dir, 'rejected', `${rec.transferId}-unqueued`), 'utf8'), 'all sent', 'set aside whole');
    await again.close();
    // The reading still open, the record is read back at every start, let go quietly each time.
    const third = await open();
    const thirdLogs = new LogCapture();
    await recoverOutbox(new FileOutbox(dir, 1024), third, thirdLogs.logger);
    assert.deepEqual(thirdLogs.lines, []);
    assert.equal(third.depth, 1);
    third.commit([(reading as { seq: number }).seq]);
    await third.close();
    // ack.json past it now: never read back again, its line goes.
    const fourth = await open();
    await recoverOutbox(new FileOutbox(dir, 1024), fourth, new LogCapture().logger);
    assert.equal(new FinishedTransfers(dir, new LogCapture().logger).size, 0);
    await fourth.close();
  });

  it('writes down a file found missing when its transfer starts, so the next start lets its record go quietly', async () => {
    const data = join(tmp.dir, 'missing');
    const open = () => DurableQueue.open({ dir: join(data, 'queue'), maxBytes: 1 << 30, segmentBytes: 1 << 20, fullPolicy: 'reject', sync: { mode: 'always' }, log: new LogCapture().logger });
    const queue = await open();
    const outbox = new FileOutbox(data, 1024);
    writeFileSync(join(data, 'gone.txt'), 'removed by hand');
    await queue.append([{ dataType: 'event', payload: { eventType: 'e', message: 'unanswered', severity: 'info' } }]);
    const rec = await outbox.accept(join(data, 'gone.txt'), { move: true });
    await queue.append([{ dataType: FILE_TRANSFER, payload: rec }]);
    outbox.accepted(rec.transferId);
    await queue.close();
    rmSync(join(data, 'outgoing', rec.transferId)); // its outbox copy removed by hand (a full disk)
    // Answers nothing: the reading stays open below the file's record.
    const rogue: RogueGateway = await RogueGateway.start(pki.paths, DEVICE, () => {}, { ack: false });
    try {
      const logs = new LogCapture();
      const first = await startTestFieldClient(pki.paths, DEVICE, rogue.url, logs.logger, { FIELD_DATA_DIR: data }, { receipts: false });
      try {
        await eventually(() => (logs.codes().includes('FIELD_FILE_UNREADABLE') ? true : undefined), 15_000, 'the file reported missing');
      } finally {
        await first.close();
      }
      assert.equal(new FinishedTransfers(data, new LogCapture().logger).has(rec.transferId), true, 'written down as finished');
      const again = new LogCapture();
      const second = await startTestFieldClient(pki.paths, DEVICE, rogue.url, again.logger, { FIELD_DATA_DIR: data }, { receipts: false });
      try {
        await new Promise((r) => setTimeout(r, 300));
        assert.ok(!again.codes().includes('FIELD_FILE_UNREADABLE'), 'not reported missing again');
      } finally {
        await second.close();
      }
    } finally {
      await rogue.close();
    }
  });

  it('writes down a queued file record that is not one, so the next start lets it go quietly', async () => {
    const data = join(tmp.dir, 'not-a-record');
    const open = () => DurableQueue.open({ dir: join(data, 'queue'), maxBytes: 1 << 30, segmentBytes: 1 << 20, fullPolicy: 'reject', sync: { mode: 'always' }, log: new LogCapture().logger });
    const queue = await open();
    await queue.append([{ dataType: 'event', payload: { eventType: 'e', message: 'unanswered', severity: 'info' } }]);
    const [bad] = await queue.append([{ dataType: FILE_TRANSFER, payload: { transferId: 'no-size' } }]);
    await queue.close();
    // Answers nothing: the reading stays open below the record.
    const rogue: RogueGateway = await RogueGateway.start(pki.paths, DEVICE, () => {}, { ack: false });
    try {
      const logs = new LogCapture();
      const first = await startTestFieldClient(pki.paths, DEVICE, rogue.url, logs.logger, { FIELD_DATA_DIR: data }, { receipts: false });
      try {
        await eventually(() => (logs.codes().includes('FIELD_QUEUE_CORRUPT') ? true : undefined), 15_000, 'the record refused');
      } finally {
        await first.close();
      }
      const again = new LogCapture('debug');
      const second = await startTestFieldClient(pki.paths, DEVICE, rogue.url, again.logger, { FIELD_DATA_DIR: data }, { receipts: false });
      try {
        await new Promise((r) => setTimeout(r, 300));
        assert.ok(!again.codes().includes('FIELD_QUEUE_CORRUPT'), 'not logged again');
        assert.ok(again.lines.some((l) => l.seq === (bad as { seq: number }).seq && l.level === 20), 'let go with a debug line');
      } finally {
        await second.close();
      }
    } finally {
      await rogue.close();
    }
  });

  it('lets go quietly the records of a file delivered and of a file refused, queued behind a reading unanswered', async () => {
    const data = join(tmp.dir, 'data');
    const items: Array<{ run: number; dataType: string; messageId: string; filename?: string }> = [];
    let run = 1;
    // Acks the chunks of delivered.txt, refuses those of refused.txt for good, answers nothing else
    // in the first run (the reading stays open below both file records); acks everything after.
    const rogue: RogueGateway = await RogueGateway.start(
      pki.paths,
      DEVICE,
      (batch) => {
        for (const m of batch) {
          const filename = m.dataType === 'file' ? (m.payload as { filename: string }).filename : undefined;
          items.push({ run, dataType: m.dataType, messageId: m.messageId, filename });
          if (run > 1 || filename === 'delivered.txt') rogue.send({ type: 'ack', messageIds: [m.messageId] });
          else if (filename === 'refused.txt') rogue.send({ type: 'error', code: 'CONTRACT_INVALID_MESSAGE', message: 'refused', messageIds: [m.messageId] });
        }
      },
      { ack: false },
    );
    try {
      const logs = new LogCapture();
      const first = await startTestFieldClient(pki.paths, DEVICE, rogue.url, logs.logger, { FIELD_DATA_DIR: data }, { receipts: false });
      try {
        await first.client.submit('event', { eventType: 'e', message: 'unanswered', severity: 'info' });
        for (const name of ['delivered.txt', 'refused.txt']) {
          writeFileSync(join(tmp.dir, name), `the content of ${name}`);
          await first.client.submitFile(join(tmp.dir, name), { move: true });
        }
        await eventually(() => (logs.lines.some((l) => l.msg === 'file delivered') && logs.codes().includes('FIELD_MESSAGE_REFUSED') ? true : undefined), 15_000, 'one file delivered, one refused');
        assert.deepEqual(readdirSync(join(data, 'outgoing')), [], 'both files left the outbox');
        assert.equal(readdirSync(join(data, 'rejected')).length, 1, 'the refused one set aside');
        assert.equal(first.client.unacknowledged, 1, 'the reading is still open');
      } finally {
        await first.close(); // a clean stop
      }

      run = 2;
      const again = new LogCapture('debug');
      const second = await startTestFieldClient(pki.paths, DEVICE, rogue.url, again.logger, { FIELD_DATA_DIR: data }, { receipts: false });
      try {
        await eventually(() => (items.some((i) => i.run === 2 && i.dataType === 'event') ? true : undefined), 15_000, 'the reading sent again');
        await eventually(() => (second.client.unacknowledged === 0 ? true : undefined), 15_000, 'everything let go');
        assert.ok(!again.codes().includes('FIELD_FILE_UNREADABLE'), 'neither file reported missing');
        assert.deepEqual(again.lines.filter((l) => (l.level as number) >= 50).map((l) => [l.code, l.msg]), [], 'no error logged');
        assert.deepEqual(items.filter((i) => i.run === 2 && i.dataType === 'file'), [], 'nothing of either file sent again');
        assert.ok(again.lines.some((l) => l.level === 20 && typeof l.transferId === 'string'), 'each let go at debug level');
        assert.equal(readdirSync(join(data, 'rejected')).length, 1, 'the refused file still set aside, nothing else there');
        assert.deepEqual(readdirSync(join(data, 'outgoing')), []);
      } finally {
        await second.close();
      }
    } finally {
      await rogue.close();
    }
  });
});
