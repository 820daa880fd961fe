import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { StorageReadiness } from '../../internal-network/distributor/storage-readiness.ts';
import { FieldStreamError, isFieldStreamError } from '../../shared/errors.ts';
import { SEED_MESSAGES } from '../fixtures/seed-messages.ts';
import { chattr, chattrReason } from '../helpers/chattr.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';
import { readiness, untilReadiness } from '../helpers/readiness.ts';
import { eventually, RawDevice } from '../helpers/ws-device.ts';

const DEVICE = 'camera-001';
const FILE = 'image_20240101_120000.jpg';

/**
 * The distributor's /readyz covers file storage (check `files`), as it covers the broker and the
 * database: a folder it cannot write in, and a write the disk refused, each make it not ready. The
 * immutable attribute (chattr +i) refuses root too, as a read-only mount would.
 */
describe('the distributor /readyz: file storage', { skip: chattrReason('i') }, () => {
  let fx: EmbeddedFixture;
  let base: string;
  before(async () => {
    fx = await startEmbeddedFixture([DEVICE]);
    const served = await fx.pipeline.distributor.metricsServer;
    assert.ok(served);
    base = served.url;
  });
  after(async () => {
    for (const dir of [fx.data.files, join(fx.data.files, DEVICE)]) {
      try {
        chattr(dir, '-i');
      } catch {
        // not made, or not set
      }
    }
    await fx.stop();
  });

  it('is not ready while the storage folder cannot be written in, and ready again once it can', async () => {
    await untilReadiness(base, 200, [], 'ready at start');
    mkdirSync(fx.data.files, { recursive: true });
    chattr(fx.data.files, '+i');
    try {
      await untilReadiness(base, 503, ['files'], 'not ready: the storage folder is immutable');
    } finally {
      chattr(fx.data.files, '-i');
    }
    await untilReadiness(base, 200, [], 'ready again');
  });

  it('is not ready after a file write the disk refused, keeps the file unacknowledged, and stores it once when the disk takes it', async () => {
    const deviceDir = join(fx.data.files, DEVICE);
    mkdirSync(deviceDir, { recursive: true });
    chattr(deviceDir, '+i');
    let released = false;
    try {
      // The storage folder itself can be written in: only the write finds the fault.
      assert.deepEqual(await readiness(base), { status: 200, failing: [] });
      const d = await RawDevice.connect(fx.pipeline.gatewayUrl, RawDevice.tlsFor(fx.pki.paths, DEVICE));
      d.send(SEED_MESSAGES.file);
      assert.equal((await d.next()).type, 'ack');
      d.close();
      await untilReadiness(base, 503, ['files'], 'not ready: the write was refused');
      assert.ok(fx.logs.codes().includes('DISTRIBUTOR_WRITE_FAILED'), 'the refused write is logged with its code');
      assert.deepEqual(fx.points({ measurement: 'files', device: DEVICE }), [], 'no record of a file not stored');
      chattr(deviceDir, '-i');
      released = true;
      await untilReadiness(base, 200, [], 'ready once a write succeeded');
      await eventually(() => (fx.points({ measurement: 'files', device: DEVICE }).length === 1 ? true : undefined), 10_000, 'the file recorded');
      assert.deepEqual(readdirSync(deviceDir), [FILE], 'stored once, no temporary file left');
      assert.deepEqual(readFileSync(join(deviceDir, FILE)), Buffer.from('base64-encoded-content', 'base64'));
    } finally {
      if (!released) chattr(deviceDir, '-i');
    }
  });
});

/**
 * FileStore.ready() on its own: what counts as a fault of the storage. A race with another consumer
 * sharing the storage is none, however the file system reports it.
 */
describe('file storage readiness: what is a fault of the storage', () => {
  const tmp = tempDir('files-readiness');
  after(() => tmp.cleanup());
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

  it("a chunk whose transfer another consumer failed meanwhile (its folder moved aside) answers with the verdict and leaves storage ready", async () => {
    const root = join(tmp.dir, 'race-failed');
    const ours = new FileStore(root);
    const other = new FileStore(root);
    const file = Buffer.from('the whole file');
    const chunk = (sha256: string) => ({ filename: 'f.bin', data: file.toString('base64'), transfer: { id: 't1', index: 0, count: 1, size: file.length, sha256 } });
    // The other consumer fails the transfer (a checksum that does not match) right after this one
    // made the chunks' folder, before its chunk is written there: the folder is moved aside.
    const internals = ours as unknown as { makeDir(dir: string): Promise<void> };
    const makeDir = internals.makeDir.bind(ours);
    let raced = false;
    internals.makeDir = async (dir: string) => {
      await makeDir(dir);
      if (!raced && dir.includes(`${sep}.partial${sep}`)) {
        raced = true;
        await assert.rejects(other.storeChunk('cam-1', chunk('0'.repeat(64))), (e: unknown) => isFieldStreamError(e, 'DISTRIBUTOR_FILE_CHECKSUM'));
      }
    };
    await assert.rejects(ours.storeChunk('cam-1', chunk(sha(file))), (e: unknown) => isFieldStreamError(e, 'DISTRIBUTOR_FILE_CHECKSUM'), "the transfer's verdict");
    assert.ok(raced, 'the race happened');
    assert.equal(await ours.ready(), true, 'a folder another consumer moved is no fault of the disk');
  });

  it("chunks of a failed transfer another consumer moves aside at the same time: the transfer's verdict, storage still ready", async () => {
    const root = join(tmp.dir, 'race-aside');
    const store = new FileStore(root);
    const file = Buffer.from('two chunks of a file');
    const chunk = (index: number) => ({ filename: 'f.bin', data: file.subarray(index * 10, (index + 1) * 10).toString('base64'), transfer: { id: 't2', index, count: 2, size: file.length, sha256: '0'.repeat(64) } });
    const checksum = (e: unknown) => isFieldStreamError(e, 'DISTRIBUTOR_FILE_CHECKSUM');
    assert.equal(await store.storeChunk('cam-1', chunk(0)), undefined);
    await assert.rejects(store.storeChunk('cam-1', chunk(1)), checksum, 'the checksum fails: set aside');
    // A chunk that came after the verdict, in a folder of its own again (what addChunk leaves when
    // the verdict is found after the chunk is in, or a kill before the move).
    const partial = join(root, '.partial', 'cam-1', 't2');
    mkdirSync(partial, { recursive: true });
    writeFileSync(join(partial, '0.chunk'), file.subarray(0, 10));
    // Another consumer, answering another chunk of it, moves that folder aside just before this one does.
    const internals = store as unknown as { present: { forget(partial: string): void } };
    const forget = internals.present.forget.bind(internals.present);
    let raced = false;
    internals.present.forget = (dir: string) => {
      forget(dir);
      if (!raced && dir === partial) {
        raced = true;
        renameSync(partial, join(root, '.failed', 'cam-1', 't2-by-another'));
      }
    };
    await assert.rejects(store.storeChunk('cam-1', chunk(0)), checksum, "the transfer's verdict");
    assert.ok(raced, 'the race happened');
    assert.equal(await store.ready(), true, 'a folder another consumer moved is no fault of the disk');
  });

  it('a storage folder not made yet is judged by where it would be made: a dangling symbolic link is not ready, a writable parent is', async () => {
    const base = join(tmp.dir, 'not-made');
    mkdirSync(base, { recursive: true });
    assert.equal(await new FileStore(join(base, 'files', 'deeper')).ready(), true, 'made by the first file');
    // The folder's name a symbolic link to nowhere: mkdir cannot make it (ENOENT, ENOTDIR), every write fails.
    symlinkSync(join(base, 'nowhere', 'files'), join(base, 'dangling'));
    assert.equal(await new FileStore(join(base, 'dangling')).ready(), false, 'a link to nowhere');
    assert.equal(await new FileStore(join(base, 'dangling', 'files')).ready(), false, 'under a link to nowhere');
  });

  it('answers within its bound while the file system does not answer (the console waits 1.5 s for /readyz)', async () => {
    const root = join(tmp.dir, 'stuck');
    mkdirSync(root, { recursive: true });
    const store = new FileStore(root);
    assert.equal(await store.ready(), true);
    // A file system that does not answer, as a hung network mount: every thread of libuv's pool
    // that runs file-system calls waits in the open of a FIFO nobody writes to.
    const fifo = join(tmp.dir, 'stuck.fifo');
    execFileSync('mkfifo', [fifo]);
    const threads = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
    const readers = Array.from({ length: threads }, () => open(fifo, 'r'));
    try {
      await new Promise((r) => setTimeout(r, 100)); // the opens taken by the pool
      const started = performance.now();
      const answers = await Promise.race([
        Promise.all([store.ready(), store.ready(), store.ready()]),
        new Promise<'hung'>((r) => setTimeout(() => r('hung'), 5_000).unref()),
      ]);
      assert.deepEqual(answers, [false, false, false], 'not ready, answered');
      assert.ok(performance.now() - started < 5_000);
    } finally {
      // A writer opening the FIFO lets every reader's open return, and the pool runs on.
      execFileSync('sh', ['-c', `: > '${fifo}'`]);
      for (const fh of await Promise.all(readers)) await fh.close();
    }
    await eventually(async () => ((await store.ready()) ? true : undefined), 10_000, 'ready once the file system answers');
  });
});

describe('file storage readiness: what clears a fault', { skip: chattrReason('i') }, () => {
  const tmp = tempDir('files-readiness-clear');
  after(() => tmp.cleanup());
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

  it('a storage folder not made yet, in a folder that cannot be written in, is not ready', async () => {
    const parent = join(tmp.dir, 'immutable-parent');
    mkdirSync(parent, { recursive: true });
    const store = new FileStore(join(parent, 'files'));
    chattr(parent, '+i');
    try {
      assert.equal(await store.ready(), false, 'mkdir would be refused');
    } finally {
      chattr(parent, '-i');
    }
    assert.equal(await store.ready(), true);
  });

  it('a chunk answered from its done marker, nothing written, does not make storage that refused a write ready', async () => {
    const root = join(tmp.dir, 'files');
    const store = new FileStore(root);
    const file = Buffer.from('a file sent in one chunk');
    const chunk = { filename: 'f.bin', data: file.toString('base64'), transfer: { id: 't1', index: 0, count: 1, size: file.length, sha256: sha(file) } };
    assert.ok(await store.storeChunk('cam-1', chunk), 'stored');
    const deviceDir = join(root, 'cam-1');
    chattr(deviceDir, '+i');
    try {
      await assert.rejects(store.store('cam-1', { filename: 'g.bin', data: file.toString('base64') }), (e: unknown) => isFieldStreamError(e, 'DISTRIBUTOR_WRITE_FAILED'));
      assert.equal(await store.ready(), false, 'the refused write');
      // The chunk delivered again is answered from the transfer's record: no write proves the disk.
      assert.ok(await store.storeChunk('cam-1', chunk), 'answered from the done marker');
      assert.equal(await store.ready(), false, 'still not ready: nothing was written');
    } finally {
      chattr(deviceDir, '-i');
    }
    assert.ok(await store.store('cam-1', { filename: 'g.bin', data: file.toString('base64') }));
    assert.equal(await store.ready(), true, 'ready once a write succeeded');
  });
});

/**
 * Writes overlap (several consumers): the write begun last among those that decided decides. Before,
 * a write begun while the disk was full and failing after a later one had succeeded left the storage
 * not ready until the next write. The writes here are given to StorageReadiness.track as the file
 * store gives its own, each settled when the test says.
 */
describe('the distributor /readyz: file storage with writes that overlap', () => {
  const diskFull = () => new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', 'no space', undefined, { cause: Object.assign(new Error('ENOSPC'), { code: 'ENOSPC' }) });
  function pending() {
    let settle!: (failed: boolean) => void;
    const write = () =>
      new Promise<{ result: string; wrote: boolean }>((resolve, reject) => {
        settle = (failed) => (failed ? reject(diskFull()) : resolve({ result: 'stored', wrote: true }));
      });
    return { write, settle: (failed: boolean) => settle(failed) };
  }

  const dirs: Array<{ cleanup(): void }> = [];
  after(() => dirs.forEach((d) => d.cleanup()));
  const fresh = () => {
    const d = tempDir('storage-overlap-');
    dirs.push(d);
    return new StorageReadiness(d.dir);
  };

  it('a write begun before the disk recovered, failing after one begun since succeeded, leaves it ready', async () => {
    const r = fresh();
    const early = pending();
    const late = pending();
    const a = r.track(early.write).catch((err: unknown) => err);
    const b = r.track(late.write);
    late.settle(false);
    assert.equal(await b, 'stored');
    early.settle(true);
    assert.ok(isFieldStreamError(await a, 'DISTRIBUTOR_WRITE_FAILED'));
    assert.equal(await r.ready(), true);
  });

  it('a success begun before a failure does not clear it, whatever order they end in', async () => {
    const r = fresh();
    const early = pending();
    const late = pending();
    const a = r.track(early.write);
    const b = r.track(late.write).catch((err: unknown) => err);
    late.settle(true);
    await b;
    early.settle(false);
    await a;
    assert.equal(await r.ready(), false, 'the failure begun last stands');
    // the next write that succeeds clears it
    const next = pending();
    const c = r.track(next.write);
    next.settle(false);
    await c;
    assert.equal(await r.ready(), true);
  });

  it('a failure that is the message\'s (no system call\'s cause), or an answer that wrote nothing, decides nothing', async () => {
    const r = fresh();
    await r.track(async () => { throw diskFull(); }).catch(() => undefined);
    assert.equal(await r.ready(), false);
    await r.track(async () => { throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', 'another consumer completed it'); }).catch(() => undefined);
    await r.track(async () => ({ result: 'from the done marker', wrote: false }));
    assert.equal(await r.ready(), false, 'still the disk-full verdict');
  });
});
