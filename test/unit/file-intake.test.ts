import assert from 'node:assert/strict';
import fs, { appendFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import fsp, { open } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { request } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { dropFilesOf } from '../../field-client/src/files/file-records.ts';
import { FileTransferRecordSchema, type FileTransferRecord } from '../../field-client/src/files/transfer-record.ts';
import { recoverOutbox } from '../../field-client/src/files/outbox-recovery.ts';
import { FILE_TRANSFER, FileTransfers } from '../../field-client/src/files/transfers.ts';
import { folderInput } from '../../field-client/src/inputs/folder-watch.ts';
import { KeptFiles } from '../../field-client/src/inputs/kept-files.ts';
import { httpInput } from '../../field-client/src/inputs/http-input.ts';
import { DurableQueue, type SyncPolicy } from '../../field-client/src/queue/durable-queue.ts';
import type { FieldClient as Client } from '../../field-client/src/field-client.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { chunkAcker } from '../helpers/chunk-acks.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { localDevice } from '../helpers/local-device.ts';
import { tempDir } from '../helpers/pki.ts';
import { chattr, chattrReason } from '../helpers/chattr.ts';
import { eventually } from '../helpers/ws-device.ts';
import { watchDatasync } from '../helpers/datasync-watch.ts';

const MiB = 1024 * 1024;

/**
 * Runs `hook` before every FileHandle sync (the outbox syncs its copy of a file, then the file it
 * placed): the moment a producer may write to the source, or a disk fail. Returns what restores it.
 * The prototype is reached through a handle opened in `dir`.
 */
async function beforeFileSync(dir: string, hook: () => void): Promise<() => void> {
  const handle = await open(join(dir, 'probe'), 'w');
  const proto = Object.getPrototypeOf(handle) as { sync: () => Promise<void> };
  await handle.close();
  const sync = proto.sync;
  proto.sync = async function (this: unknown) {
    hook();
    return sync.call(this);
  };
  return () => {
    proto.sync = sync;
  };
}

/**
 * Files taken by the field client's local inputs (the watched folder, HTTP /v1/files) stay within
 * FIELD_QUEUE_MAX_BYTES however many arrive at once, and a file is never left in the outbox unqueued.
 * A real queue, outbox, folder and HTTP server; no gateway (nothing is sent).
 */
describe('files taken within the bound', () => {
  const tmp = tempDir('file-intake');
  after(() => tmp.cleanup());

  /** The options of a test that moves a file from another file system: /dev/shm, when it is one. */
  const acrossFileSystems = () => ({ skip: existsSync('/dev/shm') && statSync('/dev/shm').dev !== statSync(tmp.dir).dev ? false : 'needs /dev/shm on another file system' });

  async function device(name: string, maxBytes: number, sync: SyncPolicy = { mode: 'always' }) {
    const d = await localDevice(join(tmp.dir, name), maxBytes, sync);
    const { dir, queue } = d;
    const queued = () => queue.find((m) => m.dataType === FILE_TRANSFER).map((m) => FileTransferRecordSchema.parse(m.payload));
    const outgoing = () => readdirSync(join(dir, 'outgoing'));
    return { ...d, queued, outgoing };
  }

  it('takes a burst of files in the watched folder only as far as the bound, stranding none in the outbox', async () => {
    const d = await device('burst', 4 * MiB);
    const watched = join(d.dir, 'watched');
    mkdirSync(watched);
    for (let i = 0; i < 10; i++) writeFileSync(join(watched, `img${i}.jpg`), Buffer.alloc(700 * 1024, i));
    const input = folderInput(d.client, watched, 20, d.logs.logger);
    await input.start();
    await eventually(() => (d.queued().length >= 4 ? true : undefined), 15_000, 'the files that fit taken');
    await new Promise((r) => setTimeout(r, 1500));
    await input.close();
    await new Promise((r) => setTimeout(r, 300)); // what was being taken at the close
    const files = d.outgoing().filter((f) => /^f[0-9a-z]+$/.test(f));
    assert.deepEqual(d.outgoing().filter((f) => f.endsWith('.accepting') || f.endsWith('.tmp')), [], 'no file left half taken');
    assert.deepEqual(files.sort(), d.queued().map((r) => r.transferId).sort(), 'every file in the outbox is queued');
    assert.ok(files.length >= 4, `as many as fit were taken (${files.length})`);
    assert.equal(files.length + readdirSync(watched).length, 10, 'the rest wait in the folder');
    assert.ok(d.queue.bytesOnDisk + d.outbox.bytes() <= 4 * MiB, 'within the bound');
    assert.equal(d.outbox.room.bytes, 0, 'no room left held');
    await d.close();
  });

  it('logs a file in the watched folder it cannot take once, not at every look, and takes it once it can', async () => {
    const d = await device('folder-once', 1 * MiB);
    const watched = join(d.dir, 'watched');
    mkdirSync(watched);
    writeFileSync(join(watched, 'bad\nname.csv'), 'a,b'); // a name the contract refuses: left in place
    writeFileSync(join(watched, 'huge.bin'), Buffer.alloc(2 * MiB)); // more than the whole bound: no room, ever
    const input = folderInput(d.client, watched, 20, d.logs.logger);
    await input.start();
    try {
      const about = (file: string) => d.logs.lines.filter((l) => l.file === file).length;
      await eventually(() => (about('bad\nname.csv') > 0 && about('huge.bin') > 0 ? true : undefined), 15_000, 'both files logged');
      await new Promise((r) => setTimeout(r, 1000)); // some 50 looks
      assert.equal(about('bad\nname.csv'), 1, 'the refused name, logged once');
      assert.equal(about('huge.bin'), 1, 'the file there is no room for, logged once');
      assert.deepEqual(readdirSync(watched).sort(), ['bad\nname.csv', 'huge.bin'], 'both left in place');
      // Still tried: once there is room (here, the file made smaller), it is taken.
      writeFileSync(join(watched, 'huge.bin'), Buffer.alloc(64 * 1024));
      await eventually(() => (d.queued().length > 0 ? true : undefined), 15_000, 'the smaller file taken');
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(readdirSync(watched), ['bad\nname.csv']);
      assert.equal(d.queued().length, 1);
    } finally {
      await input.close();
      await d.close();
    }
  });

  it('refuses a name in the watched folder that is not UTF-8 with a warning, once, and leaves it in place, not silently for ever', async () => {
    const d = await device('folder-latin1', 1 * MiB);
    const watched = join(d.dir, 'watched');
    mkdirSync(watched);
    // "café.jpg" as a camera writing Latin-1 names it: the byte 0xE9 alone is not UTF-8.
    const latin1 = Buffer.concat([Buffer.from(`${watched}/caf`), Buffer.from([0xe9]), Buffer.from('.jpg')]);
    writeFileSync(latin1, 'jpeg');
    writeFileSync(join(watched, 'fine.jpg'), 'jpeg');
    const input = folderInput(d.client, watched, 20, d.logs.logger);
    await input.start();
    try {
      const refusals = () => d.logs.lines.filter((l) => l.code === 'FIELD_INPUT_INVALID' && l.nameBytesHex === '636166e92e6a7067');
      await eventually(() => (refusals().length > 0 && d.queued().length > 0 ? true : undefined), 15_000, 'the name refused and the other file taken');
      await new Promise((r) => setTimeout(r, 1000)); // some 50 looks
      const about = refusals();
      assert.equal(about.length, 1, 'logged once, naming its bytes');
      assert.ok(existsSync(latin1), 'left in place');
      assert.deepEqual(d.queued().map((r) => r.filename), ['fine.jpg'], 'the other file is taken');
    } finally {
      await input.close();
      await d.close();
    }
  });

  it('takes a file its folder does not let go (append-only: no file removed or renamed) once, leaves it there, and logs it once with a code; on this file system or another', { skip: chattrReason('a') }, async () => {
    // chattr +a on the folder: a file can be made in it, none removed or renamed out, root too
    // (EPERM), as in a folder of another user with the sticky bit, or on a read-only mount (EROFS).
    const d = await device('kept', 64 * MiB);
    const folders = [join(d.dir, 'watched')];
    const other = '/dev/shm';
    if (existsSync(other) && statSync(other).dev !== statSync(tmp.dir).dev) folders.push(mkdtempSync(join(other, 'fieldstream-kept-')));
    const inputs = folders.map((f) => folderInput(d.client, f, 20, d.logs.logger));
    try {
      folders.forEach((f, i) => {
        mkdirSync(f, { recursive: true });
        writeFileSync(join(f, `scan${i}.tif`), `the scan ${i}`);
        chattr(f, '+a');
      });
      for (const input of inputs) await input.start();
      await eventually(() => (d.queued().length >= folders.length && d.logs.lines.filter((l) => l.code === 'FIELD_FILE_SOURCE_KEPT').length >= folders.length ? true : undefined), 15_000, 'each file taken');
      await new Promise((r) => setTimeout(r, 1500)); // some 75 looks
      const queued = d.queued();
      assert.deepEqual(queued.map((r) => r.filename).sort(), folders.map((_, i) => `scan${i}.tif`), `each taken once: ${JSON.stringify(d.logs.lines.filter((l) => l.file !== undefined).slice(0, 4))}`);
      folders.forEach((f, i) => assert.equal(readFileSync(join(f, `scan${i}.tif`), 'utf8'), `the scan ${i}`, `left in ${f}`));
      for (const r of queued) assert.equal(readFileSync(join(d.dir, 'outgoing', r.transferId), 'utf8'), `the scan ${r.filename.slice(4, 5)}`, 'the outbox holds its copy');
      const kept = d.logs.lines.filter((l) => l.code === 'FIELD_FILE_SOURCE_KEPT');
      assert.equal(kept.length, folders.length, `logged once each: ${JSON.stringify(d.logs.lines.filter((l) => l.file !== undefined).slice(0, 5))}`);
      assert.deepEqual(d.outgoing().filter((f) => f.endsWith('.accepting') || f.endsWith('.tmp')), [], 'nothing half taken');
      // Changed, it is another file: taken again, once.
      chattr(folders[0]!, '-a');
      writeFileSync(join(folders[0]!, 'scan0.tif'), 'the scan 0, again');
      chattr(folders[0]!, '+a');
      await eventually(() => (d.queued().length > folders.length ? true : undefined), 15_000, 'the changed file taken');
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(d.queued().length, folders.length + 1, 'the changed file taken once more');
    } finally {
      for (const input of inputs) await input.close();
      for (const f of folders) chattr(f, '-a');
      for (const f of folders.slice(1)) rmSync(f, { recursive: true, force: true });
      await d.close();
    }
  });

  it('does not send again after a restart a file its folder kept (it is remembered once queued, by device, inode, size and time); a changed one, or one never queued, is sent', { skip: chattrReason('a') }, async () => {
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const watched = join(tmp.dir, 'kept-restart-watched');
    const keptFile = join(tmp.dir, 'kept-restart', 'watched-kept.jsonl');
    mkdirSync(watched);
    writeFileSync(join(watched, 'scan.tif'), 'the scan');
    writeFileSync(join(watched, 'other.tif'), 'the other scan');
    chattr(watched, '+a');
    /** A run of the field client (its queue, outbox and folder input over the same FIELD_DATA_DIR), for `ms`, then stopped. */
    const run = async (ms: number, meanwhile?: (d: Awaited<ReturnType<typeof device>>) => Promise<void>) => {
      const d = await device('kept-restart', 64 * MiB);
      const input = folderInput(d.client, watched, 20, d.logs.logger, { keptFile });
      await input.start();
      await sleep(ms);
      await meanwhile?.(d);
      await input.close();
      await sleep(200); // what was being taken at the close
      const queued = d.queued().map((r) => r.filename).sort();
      const keptLogs = d.logs.lines.filter((l) => l.code === 'FIELD_FILE_SOURCE_KEPT').length;
      await d.close();
      return { queued, keptLogs };
    };
    try {
      const first = await run(800);
      assert.deepEqual(first.queued, ['other.tif', 'scan.tif'], 'each taken once');
      assert.equal(first.keptLogs, 2);
      // A restart: the queue holds the two (not sent: no gateway), and neither is taken again.
      const second = await run(800);
      assert.deepEqual(second.queued, ['other.tif', 'scan.tif'], 'not taken again after a restart');
      assert.equal(second.keptLogs, 0);
      // Changed under the same name: another file, taken once more, and remembered as it is now.
      chattr(watched, '-a');
      writeFileSync(join(watched, 'scan.tif'), 'the scan, again');
      chattr(watched, '+a');
      assert.deepEqual((await run(800)).queued, ['other.tif', 'scan.tif', 'scan.tif']);
      assert.deepEqual((await run(800)).queued, ['other.tif', 'scan.tif', 'scan.tif'], 'the changed file not again either');
      // A file whose queue record is never written (the queue closed under it) is not remembered:
      // the next start takes it.
      writeFileSync(join(watched, 'late.tif'), 'a late scan');
      const failed = await run(0, async (d) => {
        await d.queue.close();
        await sleep(800);
      });
      assert.ok(!failed.queued.includes('late.tif'));
      assert.doesNotMatch(readFileSync(keptFile, 'utf8'), /late\.tif/, 'not remembered');
      assert.deepEqual((await run(800)).queued, ['late.tif', 'other.tif', 'scan.tif', 'scan.tif'], 'taken at the next start');
      // A line torn by a kill while it was appended: dropped (the file it was naming is sent once more, a copy), the rest remembered.
      appendFileSync(keptFile, '{"dir":"');
      assert.deepEqual((await run(800)).queued, ['late.tif', 'other.tif', 'scan.tif', 'scan.tif']);
    } finally {
      chattr(watched, '-a');
    }
  });

  it('with FIELD_QUEUE_SYNC at an interval, a file leaves its outbox note only once its queue record is synced (a power cut cannot lose both)', async () => {
    const d = await device('interval-sync', 64 * MiB, { mode: 'interval', ms: 3_600_000 });
    const queueDir = realpathSync(join(d.dir, 'queue'));
    // Which file each fsync was of, and when it ended, beside when the outbox let the note go.
    const events: string[] = [];
    const watch = await watchDatasync(d.dir, queueDir, events);
    const accepted = d.outbox.accepted.bind(d.outbox);
    d.outbox.accepted = (id: string) => {
      events.push('outbox note gone');
      accepted(id);
    };
    try {
      mkdirSync(join(d.dir, 'watched'), { recursive: true });
      writeFileSync(join(d.dir, 'watched', 'scan.tif'), 'the scan');
      await d.client.submitFile(join(d.dir, 'watched', 'scan.tif'), { move: true });
      const gone = events.indexOf('outbox note gone');
      assert.ok(gone > 0 && events.slice(0, gone).includes('queue synced'), `the queue's record synced before the note went: ${events.join(', ')}`);
    } finally {
      watch.restore();
      await d.close();
    }
  });

  it('with FIELD_QUEUE_SYNC at an interval, a file whose record was written but whose sync failed stays in the outbox with its note, for that record (and for the next start)', async () => {
    const d = await device('interval-sync-fails', 64 * MiB, { mode: 'interval', ms: 3_600_000 });
    const queueDir = realpathSync(join(d.dir, 'queue'));
    const probe = await open(join(d.dir, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> };
    await probe.close();
    const datasync = proto.datasync;
    // The disk fails the queue's fsync (EIO) after the record's write went through.
    proto.datasync = async function (this: { fd: number }) {
      let path = '';
      try {
        path = readlinkSync(`/proc/self/fd/${this.fd}`);
      } catch {
        // not Linux: every fsync fails, which the test does not need
      }
      if (path.startsWith(queueDir)) throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
      return datasync.call(this);
    };
    try {
      const watched = join(d.dir, 'watched');
      mkdirSync(watched, { recursive: true });
      writeFileSync(join(watched, 'scan.tif'), 'the scan');
      const m = await d.client.submitFile(join(watched, 'scan.tif'), { move: true }).catch((err: unknown) => err as Error);
      const queued = d.queued();
      assert.equal(queued.length, 1, 'its record is queued, and sendable in this run');
      const id = (queued[0] as { transferId: string }).transferId;
      assert.ok(d.outbox.has(id), `the record's file is in the outbox, not given back from under it (${m instanceof Error ? m.message : 'queued'})`);
      assert.ok(!existsSync(join(watched, 'scan.tif')), 'not put back as well, to be queued a second time');
      assert.ok(d.outbox.unfinished(new LogCapture().logger).has(id), 'its note stays: the next start queues it again should the unsynced record be lost');
    } finally {
      proto.datasync = datasync;
      d.client.stop();
      await d.queue.close().catch(() => undefined);
    }
  });

  it('removes at the next start what a rewrite of the files kept killed before its rename left aside, and keeps what they remember', () => {
    // Written aside (watched-kept.jsonl.tmp-PID), synced, then renamed: a kill before the rename left
    // it on the device's disk for good, another at each such kill (another process id each start).
    const dir = join(tmp.dir, 'kept-aside');
    mkdirSync(dir);
    const path = join(dir, 'watched-kept.jsonl');
    writeFileSync(path, `${JSON.stringify({ dir: '/watched', name: 'scan.tif', sig: 's1' })}\n`);
    const aside = `${path}.tmp-4194301`;
    writeFileSync(aside, '{"dir":"/wat'); // cut off by the kill
    writeFileSync(`${path}.bak`, "an operator's copy\n");
    const kept = new KeptFiles(path, '/watched', new LogCapture().logger);
    assert.equal(existsSync(aside), false, 'the file aside is gone');
    assert.equal(existsSync(`${path}.bak`), true, 'nothing else is touched');
    assert.equal(kept.has('scan.tif', 's1'), true, 'what they remember stands');
  });

  it('puts a file back where it was when its queue record cannot be written, on this file system or another', async () => {
    const d = await device('give-back', 64 * MiB);
    const folders = [join(d.dir, 'watched')];
    const other = '/dev/shm';
    if (existsSync(other) && statSync(other).dev !== statSync(tmp.dir).dev) folders.push(mkdtempSync(join(other, 'fieldstream-intake-')));
    try {
      const taking = folders.map((f, i) => {
        mkdirSync(f, { recursive: true });
        writeFileSync(join(f, `scan${i}.tif`), `the scan ${i}`);
        return d.client.submitFile(join(f, `scan${i}.tif`), { move: true });
      });
      await d.queue.close(); // the record's append fails: the queue is closed meanwhile
      for (const t of taking) await assert.rejects(t);
      folders.forEach((f, i) => assert.equal(readFileSync(join(f, `scan${i}.tif`), 'utf8'), `the scan ${i}`, `back in ${f}`));
      assert.deepEqual(d.outgoing(), [], 'nothing stranded in the outbox');
      assert.equal(d.outbox.bytes(), 0);
    } finally {
      for (const f of folders.slice(1)) rmSync(f, { recursive: true, force: true });
      d.client.stop();
    }
  });

  it('leaves a file moved across file systems where it was when its producer writes to it after it was copied, before its removal, rather than deleting what it wrote', acrossFileSystems(), async () => {
    // A move to another file system is a copy, synced, then the source's removal. Only growth seen
    // by the copy was refused: bytes written once it had read to the end (while the copy was synced,
    // a while on an SD card) went with the source when it was removed, in no copy.
    const d = await device('changed-after-copy', 64 * MiB);
    const folder = mkdtempSync(join('/dev/shm', 'fieldstream-changed-'));
    const src = join(folder, 'scan.tif');
    let armed = false;
    // The producer appends as the outbox syncs its copy (the copy's first sync: it read to the end already).
    const restoreSync = await beforeFileSync(d.dir, () => {
      if (armed) {
        armed = false;
        appendFileSync(src, Buffer.alloc(10 * 1024, 2));
      }
    });
    try {
      writeFileSync(src, Buffer.alloc(200 * 1024, 1));
      armed = true;
      await assert.rejects(d.client.submitFile(src, { move: true }), (err: Error & { code?: string }) => err.code === 'FIELD_FILE_GROWING', 'refused: it changed while it was taken');
      const kept = readFileSync(src);
      assert.equal(kept.length, 210 * 1024, 'still where it was, what its producer wrote with it');
      assert.deepEqual(d.outgoing(), [], 'nothing left in the outbox, no note, no copy');
      assert.equal(d.outbox.room.bytes, 0, 'its room given back');
      assert.equal(d.queued().length, 0, 'not queued');
      // Once it holds still, it is taken whole.
      await d.client.submitFile(src, { move: true });
      const [rec] = d.queued();
      assert.equal(rec?.size, kept.length, 'taken whole');
      assert.equal(existsSync(src), false);
    } finally {
      restoreSync();
      rmSync(folder, { recursive: true, force: true });
      await d.close();
    }
  });

  it('puts a file moved across file systems back where it was when it cannot be placed in the outbox after its source was removed, rather than leaving it there uncounted until the next start', acrossFileSystems(), async () => {
    // Across file systems a move is a copy, synced, then the source's removal; placing it (synced
    // again, hashed, renamed) may still fail. Put back with a bare link, it failed (EXDEV), and the
    // file lay in the outbox with its note, unsent and uncounted, until the next start.
    const d = await device('unplaced-across', 64 * MiB);
    const folder = mkdtempSync(join('/dev/shm', 'fieldstream-unplaced-'));
    const src = join(folder, 'scan.tif');
    let armed = false;
    // The outbox's sync of its copy fails once the source is gone: placing it, not copying it.
    const restoreSync = await beforeFileSync(d.dir, () => {
      if (armed && !existsSync(src)) {
        armed = false;
        throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
      }
    });
    try {
      writeFileSync(src, Buffer.alloc(200 * 1024, 1));
      armed = true;
      await assert.rejects(d.client.submitFile(src, { move: true }));
      assert.equal(armed, false, 'placing it failed');
      assert.ok(readFileSync(src).equals(Buffer.alloc(200 * 1024, 1)), 'back where it was, whole');
      assert.deepEqual(d.outgoing(), [], 'nothing left in the outbox, no note, no copy');
      assert.equal(d.outbox.bytes(), 0);
      assert.equal(d.queued().length, 0, 'not queued');
    } finally {
      restoreSync();
      rmSync(folder, { recursive: true, force: true });
      await d.close();
    }
  });

  it('refuses a file that grows while it is taken (copied, moved, moved across file systems): the outbox holds no more than the room held for it, and the file stays whole where it was until it holds still', async () => {
    const d = await device('growing', 64 * MiB);
    const folders = [join(d.dir, 'watched')];
    const other = '/dev/shm';
    if (existsSync(other) && statSync(other).dev !== statSync(tmp.dir).dev) folders.push(mkdtempSync(join(other, 'fieldstream-growing-')));
    // The producer appends to the file as the outbox opens it to copy or move it: after its size was
    // read and room held for that many bytes. Before, the copy took whatever was there by then,
    // past the room held (and past FIELD_QUEUE_MAX_BYTES when the room held was the last).
    const growing = new Set<string>();
    const opening = fsp.open;
    (fsp as { open: unknown }).open = async (...args: Parameters<typeof opening>) => {
      if (typeof args[0] === 'string' && growing.has(args[0])) appendFileSync(args[0], Buffer.alloc(300 * 1024, 7));
      return opening(...args);
    };
    syncBuiltinESMExports();
    try {
      const cases = [
        ...folders.map((f) => ({ path: join(f, 'moved.tif'), move: true })),
        { path: join(folders[0] as string, 'copied.tif'), move: false },
      ];
      let taken = 0;
      for (const c of cases) {
        mkdirSync(join(c.path, '..'), { recursive: true });
        writeFileSync(c.path, Buffer.alloc(200 * 1024, 1));
        growing.add(c.path);
        let held = 0;
        const reserve = d.outbox.room.reserve.bind(d.outbox.room);
        d.outbox.room.reserve = (bytes) => ((held = bytes), reserve(bytes));
        await assert.rejects(d.client.submitFile(c.path, { move: c.move }), (err: Error & { code?: string }) => err.code === 'FIELD_FILE_GROWING', `${c.path}: refused`);
        d.outbox.room.reserve = reserve;
        assert.ok(held > 0 && held < 300 * 1024, `room was held for the size first read (${held} bytes)`);
        const grown = readFileSync(c.path);
        assert.ok(grown.length > 200 * 1024 && grown.subarray(0, 200 * 1024).equals(Buffer.alloc(200 * 1024, 1)), `${c.path}: still where it was, whole, its growth with it`);
        assert.deepEqual(d.outgoing(), [], 'nothing left in the outbox, no note, no partial copy');
        assert.equal(d.outbox.bytes(), 0, 'the outbox holds nothing of it');
        assert.equal(d.outbox.room.bytes, 0, 'its room given back');
        assert.equal(d.queued().length, taken, 'not queued');
        // Once it holds still, it is taken whole.
        growing.delete(c.path);
        await d.client.submitFile(c.path, { move: c.move });
        const rec = d.queued()[taken++];
        assert.ok(rec);
        assert.equal(rec.size, grown.length, 'taken whole');
        assert.ok(readFileSync(join(d.dir, 'outgoing', rec.transferId)).equals(grown));
        assert.equal(existsSync(c.path), !c.move);
        d.outbox.remove(rec.transferId);
      }
    } finally {
      (fsp as { open: unknown }).open = opening;
      syncBuiltinESMExports();
      for (const f of folders.slice(1)) rmSync(f, { recursive: true, force: true });
      await d.close();
    }
  });

  /**
   * A file of 150 KiB moved in and sent, acked chunk by chunk by a stand-in gateway, while its
   * producer, still holding it open, appends 10 KiB to it once it is queued: a move keeps the inode,
   * so they land in the outbox's file, past the size its record says. `inPlace`: the producer
   * writes its 10 KiB over the file's first bytes instead (opened without O_APPEND), its size unchanged.
   */
  async function sendWhileAppended(d: Awaited<ReturnType<typeof device>>, inPlace = false) {
    const frames: string[] = [];
    d.connection.canSend = () => true;
    d.connection.send = (text: string) => void frames.push(text);
    const src = join(d.dir, 'scan.log');
    const first = Buffer.alloc(150 * 1024, 1);
    writeFileSync(src, first);
    const producer = await open(src, inPlace ? 'r+' : 'a');
    try {
      d.connection.emit('open');
      d.connection.emit('frame', { type: 'welcome', deviceId: 'd1', gatewayId: 'gw', serverTime: Date.now(), limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages } });
      await d.client.submitFile(src, { move: true });
      const [rec] = d.queued();
      assert.ok(rec);
      assert.equal(rec.size, first.length, 'taken at the size it had');
      const more = Buffer.alloc(10 * 1024, 2);
      // The first chunk is read (sent) before the producer writes: what it writes over it is never sent.
      await eventually(() => (frames.length > 0 ? true : undefined), 5_000, 'the first chunk sent');
      // into the outbox's file: the same inode
      if (inPlace) await producer.write(more, 0, more.length, 0);
      else await producer.appendFile(more);
      const gateway = chunkAcker(frames, (ack) => d.connection.emit('frame', ack));
      await eventually(() => {
        gateway.answerNew();
        return d.queue.depth === 0 ? true : undefined;
      }, 10_000, 'the file sent as its record says');
      if (!inPlace) assert.deepEqual(Buffer.concat(gateway.received), first, 'what its record says is sent');
      return { rec, whole: inPlace ? Buffer.concat([more, first.subarray(more.length)]) : Buffer.concat([first, more]) };
    } finally {
      await producer.close();
    }
  }

  it('sets a moved file aside, whole, when its producer wrote more to it after it was placed, rather than deleting those bytes with it once it is sent', async () => {
    // Those bytes are never sent; before, they were deleted with the file once its last chunk was
    // acknowledged, and nothing said so.
    const d = await device('appended', 64 * MiB);
    try {
      const { rec, whole } = await sendWhileAppended(d);
      assert.deepEqual(d.outgoing(), [], 'out of the outbox');
      const aside = readdirSync(join(d.dir, 'rejected'));
      assert.equal(aside.length, 1, 'set aside');
      const kept = readFileSync(join(d.dir, 'rejected', aside[0] as string));
      assert.ok(kept.equals(whole), 'whole: what was sent, and what was written after');
      assert.ok((aside[0] as string).startsWith(rec.transferId) && (aside[0] as string).endsWith('scan.log'), `named by its transfer and its name (${aside[0]})`);
      assert.equal(d.client.rejectedBytes, kept.length, 'counted against FIELD_QUEUE_MAX_BYTES at once');
      const warned = d.logs.lines.filter((l) => l.code === 'FIELD_FILE_APPENDED');
      assert.equal(warned.length, 1, 'logged with a code');
      assert.equal(warned[0]?.transferId, rec.transferId);
      assert.equal(warned[0]?.sentBytes, rec.size);
      assert.equal(warned[0]?.bytes, kept.length);
    } finally {
      await d.close();
    }
  });

  it('sets a moved file aside, whole, when its producer wrote over its bytes after it was placed (its size unchanged), rather than deleting what it wrote, never sent, with it', async () => {
    // Only a file grown past its record was kept; one written to in place (or cut shorter) was
    // deleted once its last chunk was done, and the bytes its producer wrote over those already sent
    // with it: sent by no chunk, and nowhere any more.
    const d = await device('changed', 64 * MiB);
    try {
      const { rec, whole } = await sendWhileAppended(d, true);
      assert.deepEqual(d.outgoing(), [], 'out of the outbox');
      const aside = existsSync(join(d.dir, 'rejected')) ? readdirSync(join(d.dir, 'rejected')) : [];
      assert.equal(aside.length, 1, 'set aside, not deleted');
      const kept = readFileSync(join(d.dir, 'rejected', aside[0] as string));
      assert.ok(kept.equals(whole), 'whole, as its producer left it');
      assert.ok((aside[0] as string).startsWith(`${rec.transferId}-changed-`) && (aside[0] as string).endsWith('scan.log'), `named by its transfer, why and its name (${aside[0]})`);
      assert.equal(d.client.rejectedBytes, kept.length, 'counted against FIELD_QUEUE_MAX_BYTES at once');
      const warned = d.logs.lines.filter((l) => l.code === 'FIELD_FILE_APPENDED');
      assert.equal(warned.length, 1, 'logged with a code');
      assert.equal(warned[0]?.transferId, rec.transferId);
    } finally {
      await d.close();
    }
  });

  it('under drop-oldest, a file (HTTP or the watched folder) takes the room of the oldest readings when the queue is full, as a reading does; under reject it is refused', async () => {
    for (const fullPolicy of ['drop-oldest', 'reject'] as const) {
      const d = await localDevice(join(tmp.dir, `full-${fullPolicy}`), 2 * MiB, { mode: 'always' }, fullPolicy);
      const http = httpInput(d.client, '127.0.0.1', 0, d.dir, d.logs.logger);
      await http.start();
      const watched = join(d.dir, 'watched');
      const folder = folderInput(d.client, watched, 20, d.logs.logger);
      try {
        // Readings until the queue is full: under drop-oldest the oldest go, under reject the next is refused.
        const reading = { note: 'x'.repeat(8 * 1024) };
        for (let i = 0; i < 400; i++) {
          const full = await d.client.submitMany([{ dataType: 'timeseries', payload: { ...reading, i } }]).then(() => false, () => true);
          if (full) break;
        }
        assert.ok(d.queue.bytesOnDisk > 1.5 * MiB, `the queue is full: ${d.queue.bytesOnDisk} bytes`);
        const dropped = d.queue.stats.dropped;
        const res = await fetch(`http://127.0.0.1:${http.port}/v1/files?filename=scan.bin`, { method: 'POST', body: Buffer.alloc(512 * 1024, 7) });
        const answer = (await res.json()) as { code?: string };
        await folder.start();
        writeFileSync(join(watched, 'photo.jpg'), Buffer.alloc(512 * 1024, 8));
        if (fullPolicy === 'drop-oldest') {
          assert.equal(res.status, 202, `refused: ${JSON.stringify(answer)}`);
          await eventually(() => (d.queue.find((m) => m.dataType === FILE_TRANSFER).length === 2 ? true : undefined), 10_000, 'the watched file queued');
          assert.ok(d.queue.stats.dropped > dropped, 'the oldest readings dropped for them');
          assert.ok(d.queue.bytesOnDisk + d.outbox.bytes() <= 2 * MiB, 'within the bound');
          assert.ok(!existsSync(join(watched, 'photo.jpg')), 'taken from the folder');
        } else {
          assert.equal(res.status, 507);
          assert.equal(answer.code, 'FIELD_QUEUE_FULL');
          await new Promise((r) => setTimeout(r, 300));
          assert.ok(existsSync(join(watched, 'photo.jpg')), 'left in the folder');
          assert.equal(d.queue.find((m) => m.dataType === FILE_TRANSFER).length, 0);
        }
      } finally {
        await folder.close();
        await http.close();
        await d.close();
      }
    }
  });

  it('says in its drop-oldest line how many bytes were written to a file after it was placed (the policy is unchanged: it goes whole)', async () => {
    const d = await device('dropped-appended', 64 * MiB);
    try {
      const src = join(d.dir, 'scan.log');
      writeFileSync(src, 'taken');
      const rec = await d.outbox.accept(src, { move: true });
      await d.queue.append([{ dataType: FILE_TRANSFER, payload: rec }]);
      d.outbox.accepted(rec.transferId);
      appendFileSync(join(d.dir, 'outgoing', rec.transferId), ' and written after');
      const transfers = new FileTransfers(d.outbox, { window: 1, receipts: false }, () => {}, d.logs.logger);
      const dropped = d.queue.find((m) => m.dataType === FILE_TRANSFER);
      dropFilesOf(dropped, transfers, d.outbox, d.logs.logger);
      assert.deepEqual(d.outgoing(), [], 'removed whole, as before');
      const line = d.logs.lines.find((l) => l.code === 'FIELD_QUEUE_DROPPED_OLDEST');
      assert.equal(line?.transferId, rec.transferId);
      assert.equal(line?.size, rec.size);
      assert.equal(line?.appendedBytes, ' and written after'.length, 'the bytes written after it was placed are said');
    } finally {
      await d.close();
    }
  });

  it('keeps a file written to after it was placed in the outbox when it cannot be set aside, counted whole, and sets it aside at the next start', async () => {
    // Its transfer is done and its record let go; the move into rejected/ fails (the disk: here a
    // file stands where the folder would be). Before, the file stayed in outgoing/ for good, named
    // by no record: never sent, never removed, counted against FIELD_QUEUE_MAX_BYTES unseen.
    const d = await device('appended-stuck', 64 * MiB);
    writeFileSync(join(d.dir, 'rejected'), 'not a folder');
    let rec: FileTransferRecord;
    let whole: Buffer;
    try {
      ({ rec, whole } = await sendWhileAppended(d));
      assert.ok(d.outgoing().includes(rec.transferId), 'kept where it was, not deleted');
      assert.equal(d.outbox.bytes(), whole.length, 'counted with what was written to it after it was placed');
      const failed = d.logs.lines.filter((l) => l.code === 'FIELD_FILE_APPENDED');
      assert.equal(failed.length, 1);
      assert.equal(failed[0]?.level, 50, 'logged as an error');
    } finally {
      await d.close();
    }
    rmSync(join(d.dir, 'rejected'));
    const queue = await DurableQueue.open({ dir: join(d.dir, 'queue'), maxBytes: 64 * MiB, segmentBytes: 256 * 1024, fullPolicy: 'reject', sync: { mode: 'always' }, log: new LogCapture().logger });
    try {
      const outbox = new FileOutbox(d.dir, 64 * 1024);
      const logs = new LogCapture();
      await recoverOutbox(outbox, queue, logs.logger);
      assert.deepEqual(readdirSync(join(d.dir, 'outgoing')), []);
      assert.equal(outbox.bytes(), 0);
      assert.ok(readFileSync(join(d.dir, 'rejected', `${rec.transferId}-unqueued`)).equals(whole), 'set aside whole at the start');
      assert.deepEqual(logs.codes(), ['FIELD_FILE_UNQUEUED']);
    } finally {
      await queue.close();
    }
  });

  it('keeps a file the gateway refused in the outbox when it cannot be set aside, rather than ending the client', async () => {
    // The move into rejected/ fails (the disk: here a file stands where the folder would be). Thrown
    // from the frame handler, it ended the client, and at every start the refusal came again.
    const d = await device('refused-stuck', 64 * MiB);
    writeFileSync(join(d.dir, 'rejected'), 'not a folder');
    const frames: string[] = [];
    d.connection.canSend = () => true;
    d.connection.send = (text: string) => void frames.push(text);
    try {
      const src = join(d.dir, 'bad.bin');
      writeFileSync(src, Buffer.alloc(1000, 3));
      d.connection.emit('open');
      d.connection.emit('frame', { type: 'welcome', deviceId: 'd1', gatewayId: 'gw', serverTime: Date.now(), limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages } });
      await d.client.submitFile(src, { move: true });
      const [rec] = d.queued();
      assert.ok(rec);
      await eventually(() => (frames.length > 0 ? true : undefined), 5_000, 'its chunk sent');
      const [chunk] = (JSON.parse(frames[0] as string) as { batch: Array<{ messageId: string }> }).batch;
      assert.ok(chunk);
      d.connection.emit('frame', { type: 'error', code: 'CONTRACT_INVALID_MESSAGE', message: 'bad', messageIds: [chunk.messageId] });
      assert.ok(d.outgoing().includes(rec.transferId), 'kept in the outbox, not deleted');
      const failed = d.logs.lines.filter((l) => l.code === 'FIELD_MESSAGE_REFUSED' && l.transferId === rec.transferId);
      assert.equal(failed.length, 1, 'logged');
      assert.equal(d.queue.depth, 0, 'its record let go: the next start sets the file aside');
    } finally {
      await d.close();
    }
  });

  it('logs a file all sent that cannot be removed from the outbox with a code saying so, not as one written to after it was taken', async () => {
    // Its removal failing (the disk) was logged as FIELD_FILE_APPENDED, "written to after it was
    // taken, and cannot be set aside": its operator looked for a producer that never wrote to it.
    const d = await device('unremoved', 64 * MiB);
    const frames: string[] = [];
    d.connection.canSend = () => true;
    d.connection.send = (text: string) => void frames.push(text);
    const removing = fs.rmSync;
    const outgoing = join(d.dir, 'outgoing');
    fs.rmSync = (path, options) => {
      if (typeof path === 'string' && path.startsWith(`${outgoing}/f`) && !path.includes('.')) throw Object.assign(new Error(`EIO: i/o error, unlink '${path}'`), { code: 'EIO' });
      return removing(path, options);
    };
    syncBuiltinESMExports();
    try {
      const src = join(d.dir, 'scan.bin');
      writeFileSync(src, Buffer.alloc(1000, 3));
      d.connection.emit('open');
      d.connection.emit('frame', { type: 'welcome', deviceId: 'd1', gatewayId: 'gw', serverTime: Date.now(), limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages } });
      await d.client.submitFile(src, { move: true });
      const [rec] = d.queued();
      assert.ok(rec);
      const gateway = chunkAcker(frames, (ack) => d.connection.emit('frame', ack));
      await eventually(() => {
        gateway.answerNew();
        return d.queue.depth === 0 ? true : undefined;
      }, 10_000, 'the file sent');
      assert.ok(d.outgoing().includes(rec.transferId), 'still in the outbox: its removal failed');
      assert.deepEqual(d.logs.lines.filter((l) => l.code === 'FIELD_FILE_APPENDED'), [], 'not said to be written to after it was taken');
      const failed = d.logs.lines.filter((l) => l.code === 'FIELD_FILE_NOT_REMOVED');
      assert.equal(failed.length, 1, 'logged with a code saying what happened');
      assert.equal(failed[0]?.transferId, rec.transferId);
      assert.equal(failed[0]?.level, 50, 'logged as an error');
    } finally {
      fs.rmSync = removing;
      syncBuiltinESMExports();
      await d.close();
    }
  });

  /** POST /v1/files: its status, and how many bytes the client had written when the answer came. */
  function upload(port: number, body: { length?: number; total: number; pieceBytes: number; wait?: Promise<unknown>; pace?: () => Promise<unknown> }) {
    return new Promise<{ status: number; code: string; sentWhenAnswered: number }>((resolve, reject) => {
      let sent = 0;
      let answered = false;
      const headers = body.length !== undefined ? { 'content-length': String(body.length) } : {};
      const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/v1/files?filename=up.bin', headers }, (res) => {
        answered = true;
        const at = sent;
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, code: (JSON.parse(text) as { code?: string }).code ?? '', sentWhenAnswered: at }));
      });
      req.on('error', (err) => (answered ? undefined : reject(err)));
      const piece = Buffer.alloc(body.pieceBytes, 1);
      const write = async () => {
        while (sent < body.total && !answered) {
          if (sent >= body.total / 2 && body.wait) await body.wait;
          sent += piece.length;
          if (!req.write(piece)) await new Promise((r) => req.once('drain', r));
          await (body.pace ? body.pace() : new Promise((r) => setImmediate(r)));
        }
        if (!answered) req.end();
        else req.destroy();
      };
      void write();
    });
  }

  it('refuses an upload by its Content-Length, or as it outgrows the room left, before it is on disk; uploads at once share the room', async () => {
    const d = await device('http', 4 * MiB);
    const input = httpInput(d.client, '127.0.0.1', 0, d.dir, d.logs.logger);
    await input.start();
    try {
      const port = input.port as number;
      // Announced larger than the room: refused before its body is read.
      const announced = await Promise.race([upload(port, { length: 64 * MiB, total: 64 * MiB, pieceBytes: 64 * 1024, wait: new Promise(() => {}) }), new Promise((r) => setTimeout(() => r('no answer'), 3000))]);
      assert.notEqual(announced, 'no answer', 'answered before its body was sent');
      assert.equal((announced as { status: number }).status, 507);
      assert.equal((announced as { code: string }).code, 'FIELD_QUEUE_FULL');
      // Not announced (chunked): cut off once it outgrows the room, long before its end.
      const streamed = await upload(port, { total: 32 * MiB, pieceBytes: 256 * 1024 });
      assert.equal(streamed.status, 507);
      assert.ok(streamed.sentWhenAnswered < 16 * MiB, `answered after ${streamed.sentWhenAnswered} bytes of 32 MiB`);
      // Two at once, each fitting alone: the first one's room is held while it arrives.
      let release!: () => void;
      const first = upload(port, { length: 2.5 * MiB, total: 2.5 * MiB, pieceBytes: 256 * 1024, wait: new Promise<void>((r) => (release = r)) });
      await eventually(() => (d.outbox.room.bytes > 0 ? true : undefined), 10_000, "the first upload's room held");
      const second = await upload(port, { length: 2.5 * MiB, total: 2.5 * MiB, pieceBytes: 256 * 1024 });
      release();
      assert.equal(second.status, 507, 'the second does not fit beside the first');
      assert.equal((await first).status, 202);
      assert.equal(d.queued().length, 1);
      assert.deepEqual(readdirSync(join(d.dir, 'incoming')), []);
      assert.equal(d.outbox.room.bytes, 0, 'no room left held');
    } finally {
      await input.close();
      await d.close();
    }
  });

  /** One POST /v1/files of `body`; its status, answer and the code in it. */
  function post(port: number, path: string, body: string): Promise<{ status: number; code: unknown }> {
    return new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method: 'POST', path, headers: { 'content-length': String(Buffer.byteLength(body)) } }, (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, code: (JSON.parse(text) as { code?: unknown }).code }));
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  it('refuses a contentType the contract refuses (the gateway would refuse every chunk of a file answered 202)', async () => {
    const d = await device('http-content-type', 4 * MiB);
    const input = httpInput(d.client, '127.0.0.1', 0, d.dir, d.logs.logger);
    await input.start();
    try {
      const port = input.port as number;
      assert.deepEqual(await post(port, '/v1/files?filename=report.txt&contentType=text', 'hello'), { status: 400, code: 'FIELD_INPUT_INVALID' });
      assert.deepEqual(await post(port, `/v1/files?filename=report.txt&contentType=text/${'x'.repeat(260)}`, 'hello'), { status: 400, code: 'FIELD_INPUT_INVALID' });
      assert.equal(d.queued().length, 0);
      assert.equal((await post(port, '/v1/files?filename=report.txt&contentType=text/plain;%20charset=utf-8', 'hello')).status, 202);
      assert.equal(d.queued()[0]?.contentType, 'text/plain; charset=utf-8');
    } finally {
      await input.close();
      await d.close();
    }
  });

  it("answers the device's storage failing under an upload as transient (503 FIELD_STORAGE_FAILED, logged), not 400 final", async () => {
    const d = await device('http-storage', 4 * MiB);
    const input = httpInput(d.client, '127.0.0.1', 0, d.dir, d.logs.logger);
    await input.start();
    try {
      // incoming/ gone (ENOSPC or EIO alike): not the producer's fault, who must send it again.
      rmSync(join(d.dir, 'incoming'), { recursive: true, force: true });
      assert.deepEqual(await post(input.port as number, '/v1/files?filename=scan.tif', 'hello'), { status: 503, code: 'FIELD_STORAGE_FAILED' });
      assert.ok(d.logs.lines.some((l) => l.code === 'FIELD_STORAGE_FAILED'), 'logged');
      assert.equal(d.queued().length, 0);
    } finally {
      await input.close();
      await d.close();
    }
  });

  it('takes an upload for as long as its bytes keep coming, and cuts off one that stalls, giving its room back', async () => {
    // Scaled down: a JSON body's deadline 1 s, a body's pause 700 ms (TIMINGS, read as the input is made).
    const timings = TIMINGS as unknown as Record<string, number>;
    const saved = { ...timings };
    Object.assign(timings, { localInputRequestTimeoutMs: 1000, localInputIdleTimeoutMs: 700, localInputConnectionsCheckMs: 100 });
    const d = await device('http-slow', 16 * MiB);
    const input = httpInput(d.client, '127.0.0.1', 0, d.dir, d.logs.logger);
    await input.start();
    try {
      const port = input.port as number;
      // A large file on a slow card arrives for minutes, steadily: taken, whatever the JSON deadline.
      let pieces = 0;
      const steady = upload(port, { length: 15 * 64 * 1024, total: 15 * 64 * 1024, pieceBytes: 64 * 1024, wait: undefined, pace: () => new Promise((r) => setTimeout(r, 200, ++pieces)) });
      const answer = await steady;
      assert.equal(answer.status, 202, `taken after ${pieces} pieces over ~${pieces * 200} ms`);
      // A producer gone mid-upload (frozen, or its power or link lost: no FIN): cut off, its room given back.
      const stalled = await Promise.race([
        upload(port, { length: 8 * MiB, total: 8 * MiB, pieceBytes: 64 * 1024, wait: new Promise(() => {}) }),
        new Promise((r) => setTimeout(() => r('no answer'), 5000)),
      ]);
      assert.deepEqual(stalled !== 'no answer' && { status: (stalled as { status: number }).status, code: (stalled as { code: string }).code }, { status: 408, code: 'HTTP_REQUEST_TIMEOUT' });
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(d.outbox.room.bytes, 0, 'no room left held');
      assert.deepEqual(readdirSync(join(d.dir, 'incoming')), [], 'the partial upload is gone');
      assert.equal(d.queued().length, 1, 'only the whole file queued');
      assert.ok(d.logs.lines.some((l) => l.code === 'HTTP_REQUEST_TIMEOUT'), 'logged');
      // A reading's body trickling in, never pausing long: cut off at its deadline all the same.
      const trickled = await new Promise<string>((resolve) => {
        const socket = connect(port, '127.0.0.1', () => socket.write('POST /v1/timeseries HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{'));
        const drip = setInterval(() => socket.write(' '), 200);
        let text = '';
        socket.on('data', (c) => (text += c));
        socket.on('close', () => {
          clearInterval(drip);
          resolve(text.split('\r\n')[0] ?? '');
        });
        socket.on('error', () => undefined);
      });
      assert.equal(trickled, 'HTTP/1.1 408 Request Timeout');
    } finally {
      Object.assign(timings, saved);
      await input.close();
      await d.close();
    }
  });

  it('does not leave a keep-alive connection silent after refusing a JSON body as too large while it arrived', async () => {
    const d = await device('http-json-too-large', 4 * MiB);
    const input = httpInput(d.client, '127.0.0.1', 0, d.dir, d.logs.logger);
    await input.start();
    try {
      // A batch of readings too large, chunked (no length to refuse it by), then, on the same
      // connection, the smaller batch a producer sends instead: a keep-alive client reuses it.
      const socket = connect(input.port as number, '127.0.0.1');
      socket.on('error', () => undefined);
      let text = '';
      socket.on('data', (c) => (text += c));
      const closed = new Promise<void>((r) => socket.once('close', () => r()));
      await new Promise((r) => socket.once('connect', r));
      socket.write('POST /v1/timeseries HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n');
      const piece = Buffer.alloc(256 * 1024, 0x20);
      for (let sent = 0; sent <= 9 * MiB && !socket.destroyed && text === ''; sent += piece.length) {
        socket.write(`${piece.length.toString(16)}\r\n`);
        socket.write(piece);
        if (!socket.write('\r\n')) await new Promise((r) => socket.once('drain', r));
      }
      if (!socket.destroyed) socket.write('0\r\n\r\n');
      await eventually(() => (/FIELD_INPUT_INVALID/.test(text) || socket.destroyed ? true : undefined), 10_000, 'the refusal');
      await new Promise((r) => setTimeout(r, 300));
      const first = text;
      assert.match(first, /^HTTP\/1\.1 400 /);
      assert.match(first, /FIELD_INPUT_INVALID/);
      text = '';
      if (!socket.destroyed) socket.write('POST /v1/timeseries HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 19\r\n\r\n{"temperature": 21}');
      const outcome = await Promise.race([closed.then(() => 'closed'), new Promise<string>((r) => setTimeout(() => r('open'), 3000))]);
      socket.destroy();
      // Either answered, or closed and said so (Connection: close), so that the client opens another.
      const answered = /^HTTP\/1\.1 202 /.test(text);
      assert.ok(answered || (outcome === 'closed' && /connection: close/i.test(first)), `the next request was ${answered ? 'answered' : `left unanswered on a connection ${outcome}`}; the refusal said: ${first.split('\r\n\r\n')[0]}`);
    } finally {
      await input.close();
      await d.close();
    }
  });

  it('empties incoming/ of uploads a stop cut off when the HTTP input starts', async () => {
    const d = await device('http-restart', 4 * MiB);
    mkdirSync(join(d.dir, 'incoming'), { recursive: true });
    writeFileSync(join(d.dir, 'incoming', '0b7e2d4c-cut-off'), Buffer.alloc(64 * 1024));
    const input = httpInput(d.client, '127.0.0.1', 0, d.dir, d.logs.logger);
    await input.start();
    assert.deepEqual(readdirSync(join(d.dir, 'incoming')), []);
    await input.close();
    await d.close();
  });
});

/**
 * The watched folder is looked at every interval on the field client's one event loop, which every
 * input, the queue and the link share: a look at a large folder must not hold it, and a look that
 * outlasts the interval must not be joined by the next.
 */
describe('looks at a large watched folder', () => {
  const tmp = tempDir('folder-looks');
  after(() => tmp.cleanup());
  const FILES = 20_000;

  it('does not hold the event loop while it reads the folder and looks at each entry, and runs one look at a time', async () => {
    const watched = join(tmp.dir, 'watched');
    mkdirSync(watched);
    for (let i = 0; i < FILES; i++) writeFileSync(join(watched, `r${i}.csv`), '');
    // Nothing is taken: the files are about the looks, not the queue.
    const client = { submitFile: () => new Promise(() => undefined) } as unknown as Client;
    // The input's reads (fs/promises' opendir, each from its start to its last entry) and lstats,
    // watched as they run.
    const [opening, looking] = [fsp.opendir, fsp.lstat];
    let listing = 0;
    let statting = 0;
    let lists = 0;
    let overlapping = 0;
    (fsp as { opendir: unknown }).opendir = async (...args: Parameters<typeof opening>) => {
      // A look starts while another's read or lstats are under way: two looks at once.
      if (listing > 0 || statting > 0) overlapping++;
      listing++;
      lists++;
      const dir = await opening(...args).catch((err: unknown) => {
        listing--;
        throw err;
      });
      const entries = dir[Symbol.asyncIterator].bind(dir);
      dir[Symbol.asyncIterator] = async function* () {
        try {
          yield* entries();
        } finally {
          listing--;
        }
      };
      return dir;
    };
    (fsp as { lstat: unknown }).lstat = async (...args: Parameters<typeof looking>) => {
      statting++;
      try {
        return await looking(...args);
      } finally {
        statting--;
      }
    };
    syncBuiltinESMExports();
    const input = folderInput(client, watched, 5, createLogger('test', 'silent'));
    // A timer's turns while a look is under way: none if the look held the event loop throughout.
    let turnsDuringLooks = 0;
    const tick = setInterval(() => void (listing + statting > 0 && turnsDuringLooks++), 2);
    const started = performance.now();
    try {
      await input.start();
      // Three looks (a look at 20,000 entries outlasts the 5 ms interval many times over), or 3 s of none.
      await eventually(() => (lists >= 3 || (lists === 0 && performance.now() - started > 3_000) ? true : undefined), 60_000, 'three looks');
    } finally {
      clearInterval(tick);
      await input.close();
      (fsp as { opendir: unknown; lstat: unknown }).opendir = opening;
      (fsp as { opendir: unknown; lstat: unknown }).lstat = looking;
      syncBuiltinESMExports();
    }
    assert.ok(lists >= 3, `the folder was read (${lists} times) with fs/promises' opendir`);
    assert.equal(overlapping, 0, 'one look at a time, though a look outlasts the interval');
    assert.ok(turnsDuringLooks >= 10, `a timer turned ${turnsDuringLooks} times while the folder was read and its entries looked at`);
  });
});
