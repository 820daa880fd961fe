import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs, { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { basename, join, relative } from 'node:path';
import { after, describe, it } from 'node:test';
import { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { parseUplinkFrame } from '../../shared/contract/uplink.ts';
import { FieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import { tempDir } from '../helpers/pki.ts';
import { cannotRunAsNobody } from '../helpers/as-nobody.ts';

/**
 * Chunked files in the distributor's file storage: what a hostile or unlucky sequence of chunks
 * must not do to chunks already receipted (their devices deleted them), and what a failing disk or
 * a second consumer must not turn into an uncoded error.
 */
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const strace = spawnSync('strace', ['-o', '/dev/null', 'true']).status === 0;
/** Processes can be run as pid 1 of a namespace of their own, as each distributor's container runs it. */
const pidNamespaces = spawnSync('unshare', ['-Urpf', '--mount-proc', 'true']).status === 0;
const coded = (code: ErrorCode) => (e: unknown) => e instanceof FieldStreamError && e.code === code;

/** The chunks of `file`, `size` bytes each, as a device sends them. */
function chunksOf(file: Buffer, size: number, id: string, over: { sha256?: string } = {}) {
  const count = Math.max(1, Math.ceil(file.length / size));
  return Array.from({ length: count }, (_, i) => ({
    filename: 'file.bin',
    data: file.subarray(i * size, (i + 1) * size).toString('base64'),
    transfer: { id, index: i, count, size: file.length, sha256: over.sha256 ?? sha(file) },
  }));
}

describe('file storage: chunked files', () => {
  const tmp = tempDir('file-chunks');
  const root = join(tmp.dir, 'files');
  const store = new FileStore(root);
  after(() => tmp.cleanup());

  it('the contract refuses transfer ids that are path tricks, and takes those the field client makes', async () => {
    const frame = (id: string) =>
      JSON.stringify({ deviceId: 'cam-1', dataType: 'file', payload: { filename: 'a.bin', data: 'aGk=', transfer: { id, index: 0, count: 1, size: 2, sha256: sha(Buffer.from('hi')) } } });
    for (const id of ['.', '..', '.hidden', '-x', 'other.done.json', 'x.done.json.tmp-1']) {
      assert.throws(() => parseUplinkFrame(frame(id)), coded('CONTRACT_INVALID_MESSAGE'), id);
    }
    const work = tempDir('file-chunks-outbox');
    try {
      writeFileSync(join(work.dir, 'photo.jpg'), 'x');
      const rec = await new FileOutbox(work.dir, 1024).accept(join(work.dir, 'photo.jpg'), {});
      assert.equal(parseUplinkFrame(frame(rec.transferId)).length, 1, `the field client's id ${rec.transferId}`);
    } finally {
      work.cleanup();
    }
    for (const id of ['t1', 'a.b_c-d', '9'.repeat(64)]) assert.equal(parseUplinkFrame(frame(id)).length, 1, id);
  });

  it("refuses a transfer id that names the chunks folder itself, and another device's chunks stay", async () => {
    // What a compromised DMZ could forward: the distributor does not rely on the gateway's check.
    const file = Buffer.from('a file of two chunks');
    const [first] = chunksOf(file, 10, 'kept');
    assert.equal(await store.storeChunk('cam-2', first!), undefined);
    const one = Buffer.from('x');
    for (const id of ['..', '.', 'kept.done.json', 'x/..']) {
      await assert.rejects(store.storeChunk('cam-1', chunksOf(one, 10, id)[0]!), coded('DISTRIBUTOR_UNSAFE_FILENAME'), id);
      await assert.rejects(store.storeChunk('cam-2', chunksOf(one, 10, id)[0]!), coded('DISTRIBUTOR_UNSAFE_FILENAME'), id);
    }
    assert.deepEqual(readdirSync(join(root, '.partial', 'cam-2', 'kept')), ['0.chunk'], 'the receipted chunk is still there');
    assert.equal((await store.storeChunk('cam-2', chunksOf(file, 10, 'kept')[1]!))?.sha256, sha(file));
  });

  it('completes only when every index is there, whatever count the chunks declared', async () => {
    const file = Buffer.from('0123456789abcdefghij');
    const three = chunksOf(file, 7, 'mixed'); // 3 chunks
    const two = chunksOf(file, 10, 'mixed'); // the same id, 2 chunks
    assert.equal(await store.storeChunk('cam-3', three[2]!), undefined);
    // Two .chunk files now, and this one says count 2: 1.chunk is still missing.
    assert.equal(await store.storeChunk('cam-3', two[0]!), undefined);
    // With it, the chunks held (the other cut's 2.chunk too) are more than the file: refused for good, kept.
    await assert.rejects(store.storeChunk('cam-3', two[1]!), coded('DISTRIBUTOR_FILE_CHECKSUM'));
    const again = chunksOf(file, 10, 'mixed-not');
    assert.equal(await store.storeChunk('cam-3', again[0]!), undefined);
    const info = await store.storeChunk('cam-3', again[1]!);
    assert.equal(info?.sha256, sha(file));
    assert.ok(readFileSync(join(root, info!.path)).equals(file));
  });

  it('tells whether a transfer is complete without listing its folder at each chunk: linear in its chunks, across distributors, a restart and redeliveries', async () => {
    // Every look at the folder counted: each entry a listing reads, each chunk looked at on its own.
    // A listing at each arrival read n²/2 entries: 500,000 for these 1,000 chunks, some two billion
    // for the 65,536 a transfer may have.
    let looks = 0;
    const fsp = fs.promises as unknown as Record<'readdir' | 'lstat' | 'stat' | 'access', (...a: unknown[]) => Promise<unknown>>;
    const originals = { readdir: fsp.readdir, lstat: fsp.lstat, stat: fsp.stat, access: fsp.access };
    fsp.readdir = async (...a) => {
      const r = (await originals.readdir(...a)) as unknown[];
      if (String(a[0]).includes(`${join('.partial', 'cam-9')}`)) looks += r.length;
      return r;
    };
    for (const m of ['lstat', 'stat', 'access'] as const) {
      fsp[m] = (...a) => {
        if (String(a[0]).endsWith('.chunk')) looks++;
        return originals[m](...a);
      };
    }
    syncBuiltinESMExports();
    try {
      const n = 1000;
      const file = randomBytes(n);
      const chunks = chunksOf(file, 1, 'many');
      // Shuffled, a tenth delivered twice; two distributors sharing the storage take turns, and
      // the first is restarted (a new process, knowing nothing) halfway.
      const order = [...chunks.keys()].sort(() => Math.random() - 0.5);
      const last = order.pop()!;
      order.push(...order.slice(0, n / 10));
      order.sort(() => Math.random() - 0.5);
      const distributors = [new FileStore(root), new FileStore(root)];
      for (const [k, i] of order.entries()) {
        if (k === Math.floor(order.length / 2)) distributors[0] = new FileStore(root);
        assert.equal(await distributors[k % 2]!.storeChunk('cam-9', chunks[i]!), undefined, `chunk ${i}: not complete yet`);
      }
      const info = await distributors[1]!.storeChunk('cam-9', chunks[last]!);
      assert.ok(readFileSync(join(root, info!.path)).equals(file), 'stored whole');
      assert.ok(looks <= 10 * n, `${looks} entries and chunks looked at for ${n} chunks`);
      assert.equal((await distributors[0]!.storeChunk('cam-9', chunks[0]!))?.path, info!.path, 'a chunk again: the record');
    } finally {
      Object.assign(fsp, originals);
      syncBuiltinESMExports();
    }
  });

  it('a chunk known present that is gone when the chunks are joined (its folder moved away by hand) is no endless retry: the folder is listed again', async () => {
    const file = Buffer.from('abcdef');
    const chunks = chunksOf(file, 2, 'moved');
    assert.equal(await store.storeChunk('cam-10', chunks[0]!), undefined);
    assert.equal(await store.storeChunk('cam-10', chunks[1]!), undefined);
    // An operator moves the folder of a transfer given up on; the device sends it again, later.
    renameSync(join(root, '.partial', 'cam-10', 'moved'), join(tmp.dir, 'moved-away'));
    // The join may miss what was moved (DISTRIBUTOR_WRITE_FAILED: the consumer retries); the retry
    // finds the transfer not complete, and the chunk is receipted.
    const first = await store.storeChunk('cam-10', chunks[2]!).catch((e: unknown) => (coded('DISTRIBUTOR_WRITE_FAILED')(e) ? 'retried' : Promise.reject(e)));
    if (first === 'retried') assert.equal(await store.storeChunk('cam-10', chunks[2]!), undefined, 'the retry lists the folder: not complete');
    else assert.equal(first, undefined);
    assert.equal(await store.storeChunk('cam-10', chunks[0]!), undefined);
    assert.equal((await store.storeChunk('cam-10', chunks[1]!))?.sha256, sha(file));
  });

  it('consumers completing the same transfer at once all get the stored file', async () => {
    const file = Buffer.from(Array.from({ length: 6000 }, (_, i) => (i * 7) % 251));
    for (let round = 0; round < 8; round++) {
      const chunks = chunksOf(file, 100, `race${round}`); // 60 chunks: joining them takes a while
      for (const r of await Promise.all(chunks.slice(0, -2).map((c) => store.storeChunk('cam-4', c)))) assert.equal(r, undefined);
      // The last two together, and earlier ones again (redeliveries) while the set is joined and
      // removed: each finds the chunks, or the done marker, never a folder half gone.
      const again = chunks.slice(0, 20).map((c, i) => new Promise((r) => setTimeout(r, i * (round % 4 + 1) * 0.5)).then(() => store.storeChunk('cam-4', c)));
      const results = await Promise.all([...chunks.slice(-2).map((c) => store.storeChunk('cam-4', c)), ...again]);
      assert.ok(results.slice(0, 2).some((r) => r?.sha256 === sha(file)), `round ${round}: stored`);
      for (const r of results) if (r !== undefined) assert.equal(r.sha256, sha(file), `round ${round}`);
    }
  });

  it('chunks completing a transfer at once give its file one record, the first stored: one row, not one per completing chunk', async () => {
    // A file without `metadata.timestamp` is recorded at the arrival of the chunk that completed it
    // (storeChunk). The last two chunks handled by two consumers at once both saw the set complete,
    // and each stored the file with its own arrival, the second marker replacing the first: two
    // records of the one file at two times, two rows in PostgreSQL and two points in InfluxDB.
    const file = Buffer.from(Array.from({ length: 6000 }, (_, i) => (i * 7) % 251));
    for (let round = 0; round < 8; round++) {
      const [first, second] = chunksOf(file, 3000, `once${round}`);
      const results = await Promise.all([store.storeChunk('cam-12', first!, 1_000), store.storeChunk('cam-12', second!, 2_000)]);
      const records = results.filter((r) => r !== undefined);
      assert.ok(records.length > 0, `round ${round}: stored`);
      const marker = JSON.parse(readFileSync(join(root, '.partial', 'cam-12', `once${round}.done.json`), 'utf8'));
      for (const r of records) assert.deepEqual(JSON.parse(JSON.stringify(r)), marker, `round ${round}: every completing chunk answers with the record that stands`);
    }
  });

  it("the first chunks of a new transfer arriving at once are each returned (receipted) only once their folder's whole chain of parents is synced", async () => {
    // A folder made is an entry of its parent, on disk only once that parent is synced. The chunk
    // that made ROOT/.partial/DEVICE/ID remembered ID as synced once ID's own entry was, before it
    // synced DEVICE's entry in .partial: a chunk handled at once by another consumer took the folder
    // as durable, and was returned (and receipted) while a power cut could still take the folder,
    // and the chunk, away.
    const file = Buffer.from('three chunks of a transfer just begun');
    const chunks = chunksOf(file, 13, 'fresh');
    const parentOfDevice = join(root, '.partial');
    const fsp = fs.promises as unknown as { open: (...a: unknown[]) => Promise<unknown> };
    const original = fsp.open;
    let gateReached!: () => void;
    const reached = new Promise<void>((r) => (gateReached = r));
    let openGate!: () => void;
    const gate = new Promise<void>((r) => (openGate = r));
    fsp.open = async (...a) => {
      if (a[0] === parentOfDevice) {
        gateReached();
        await gate; // the sync of DEVICE's entry in .partial, held
      }
      return original(...a);
    };
    syncBuiltinESMExports();
    try {
      let returned = 0;
      const first = store.storeChunk('cam-13', chunks[0]!).finally(() => returned++);
      await reached; // the first chunk syncs its folder's parents
      const second = store.storeChunk('cam-13', chunks[1]!).finally(() => returned++);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(returned, 0, 'no chunk returned while its folder may still be lost');
      openGate();
      assert.deepEqual(await Promise.all([first, second]), [undefined, undefined]);
    } finally {
      openGate();
      fsp.open = original;
      syncBuiltinESMExports();
    }
    assert.equal((await store.storeChunk('cam-13', chunks[2]!))?.sha256, sha(file));
  });

  it('keeps the chunks of a file whose checksum fails, as received, and says where', async () => {
    const file = Buffer.from('three chunks, one of them altered');
    const chunks = chunksOf(file, 12, 'bad', { sha256: 'a'.repeat(64) });
    assert.equal(await store.storeChunk('cam-5', chunks[0]!), undefined);
    assert.equal(await store.storeChunk('cam-5', chunks[1]!), undefined);
    let err: FieldStreamError | undefined;
    await assert.rejects(store.storeChunk('cam-5', chunks[2]!), (e: unknown) => {
      err = e as FieldStreamError;
      return coded('DISTRIBUTOR_FILE_CHECKSUM')(e);
    });
    const kept = err?.details?.chunksKeptIn as string;
    assert.ok(kept && err?.message.includes(kept), 'the message says where the chunks are');
    assert.match(relative(root, kept), /^\.failed\/cam-5\/bad-[0-9T.Z]+$/);
    assert.deepEqual(readdirSync(kept).sort(), ['0.chunk', '1.chunk', '2.chunk']);
    assert.ok(Buffer.concat([0, 1, 2].map((i) => readFileSync(join(kept, `${i}.chunk`)))).equals(file));
    assert.ok(!existsSync(join(root, '.partial', 'cam-5', 'bad')));
    assert.deepEqual(readdirSync(join(root, 'cam-5')), [], 'no file stored');
  });

  it('a chunk of a transfer whose checksum failed, coming again, fails the same way (a dead letter), never starts a new transfer', async () => {
    // The consumer writes the dead letter after storeChunk threw: a distributor killed in between
    // leaves the last chunk unacknowledged, and the broker delivers it again.
    const file = Buffer.from('two chunks, and a checksum that does not match');
    const chunks = chunksOf(file, 30, 'failed-once', { sha256: 'b'.repeat(64) });
    assert.equal(await store.storeChunk('cam-7', chunks[0]!), undefined);
    const first = await store.storeChunk('cam-7', chunks[1]!).then(() => assert.fail('stored'), (e: unknown) => e as FieldStreamError);
    assert.ok(coded('DISTRIBUTOR_FILE_CHECKSUM')(first), String(first));
    for (const again of [chunks[1]!, chunks[0]!]) {
      const err = await store.storeChunk('cam-7', again).then(() => assert.fail(`chunk ${again.transfer.index} receipted as a chunk of a new transfer`), (e: unknown) => e as FieldStreamError);
      assert.ok(coded('DISTRIBUTOR_FILE_CHECKSUM')(err), String(err));
      assert.equal(err.message, first.message);
      assert.deepEqual(err.details, first.details);
    }
    assert.deepEqual(readdirSync(join(root, '.partial', 'cam-7')), [], 'no new folder of chunks');
    const kept = first.details?.chunksKeptIn as string;
    assert.deepEqual(readdirSync(kept).sort(), ['0.chunk', '1.chunk']);
    assert.deepEqual(readdirSync(join(root, '.failed', 'cam-7')).sort(), [basename(kept), 'failed-once.json'].sort(), 'the verdict kept beside the chunks');
  });

  it("a transfer id used again for other content (a faulty or restored device) is refused, DISTRIBUTOR_FILE_TRANSFER_REUSED (a dead letter, kept whole), never answered with the earlier file's record", async () => {
    // Answered from the done marker, which the transfer id alone found, each chunk of the new file
    // was receipted as stored, and its device deleted a file the storage never held.
    const earlier = Buffer.from('the file first sent under this transfer id');
    const info = await Promise.all(chunksOf(earlier, 20, 'reused').map((c) => store.storeChunk('cam-21', c))).then((r) => r.find((i) => i));
    assert.equal(info?.sha256, sha(earlier));
    const stored = readdirSync(join(root, 'cam-21'));
    for (const other of [Buffer.from('other content, sent later under the same id'), Buffer.concat([earlier, Buffer.from('!')])]) {
      for (const c of chunksOf(other, 20, 'reused')) {
        const err = await store.storeChunk('cam-21', c).then(
          (r) => assert.fail(`chunk ${c.transfer.index} of other content answered with the record of ${r?.path} (${r?.sha256})`),
          (e: unknown) => e as FieldStreamError,
        );
        assert.ok(coded('DISTRIBUTOR_FILE_TRANSFER_REUSED')(err), String(err));
        assert.equal(err.details?.transferId, 'reused');
        assert.equal(err.details?.sha256, sha(other), 'the content refused named');
        assert.equal(err.details?.storedSha256, sha(earlier), 'and the file the id stored');
        await assert.rejects(store.recordOf('cam-21', 'reused', c.transfer), coded('DISTRIBUTOR_FILE_TRANSFER_REUSED'), 'the dry run of a replay');
      }
    }
    assert.deepEqual(readdirSync(join(root, 'cam-21')), stored, 'the earlier file untouched, nothing else stored');
    assert.deepEqual(readdirSync(join(root, '.partial', 'cam-21')), ['reused.done.json'], 'no chunks receipted into a folder of the id');
    // The earlier file's chunks, delivered again, are still answered with its record (as the done
    // marker holds it: read back, a field without a value is absent, not undefined).
    const asStored = (r: unknown) => JSON.parse(JSON.stringify(r)) as unknown;
    for (const c of chunksOf(earlier, 20, 'reused')) assert.deepEqual(asStored(await store.storeChunk('cam-21', c)), asStored(info));
    assert.deepEqual(asStored(await store.recordOf('cam-21', 'reused', chunksOf(earlier, 20, 'reused')[0]!.transfer)), asStored(info));
  });

  it("a damaged marker (a torn or hand-edited file) is a final verdict on the transfer's chunks, DISTRIBUTOR_FILE_MARKER_DAMAGED (a dead letter, receipted), not a retry for ever", async () => {
    // Read back as DISTRIBUTOR_WRITE_FAILED, every chunk of the transfer was retried unacknowledged
    // for good: its consumer connection stalled on it, and the broker handed it on at each restart.
    const file = Buffer.from('two chunks, and a done marker damaged after');
    const chunks = chunksOf(file, 25, 'marked');
    assert.equal(await store.storeChunk('cam-14', chunks[0]!), undefined);
    const info = await store.storeChunk('cam-14', chunks[1]!);
    const done = join(root, '.partial', 'cam-14', 'marked.done.json');
    const record = readFileSync(done, 'utf8');
    for (const damaged of [record.slice(0, 30), JSON.stringify({ ...JSON.parse(record), size: 'many' })]) {
      writeFileSync(done, damaged);
      for (const c of chunks) {
        const err = await store.storeChunk('cam-14', c).then(() => assert.fail('answered'), (e: unknown) => e as FieldStreamError);
        assert.ok(coded('DISTRIBUTOR_FILE_MARKER_DAMAGED')(err), String(err));
        assert.equal(err.details?.path, done, 'the marker named');
      }
      await assert.rejects(store.recordOf('cam-14', 'marked'), coded('DISTRIBUTOR_FILE_MARKER_DAMAGED'), 'the dry run of a replay');
    }
    assert.deepEqual(readdirSync(join(root, '.partial', 'cam-14')), ['marked.done.json'], 'no new transfer begun');
    writeFileSync(done, record); // put right by hand
    assert.equal((await store.storeChunk('cam-14', chunks[0]!))?.path, info?.path, 'answered from the marker again');

    const bad = chunksOf(file, 25, 'judged', { sha256: 'c'.repeat(64) });
    assert.equal(await store.storeChunk('cam-14', bad[0]!), undefined);
    await assert.rejects(store.storeChunk('cam-14', bad[1]!), coded('DISTRIBUTOR_FILE_CHECKSUM'));
    const verdict = join(root, '.failed', 'cam-14', 'judged.json');
    writeFileSync(verdict, '{"code":"DISTRIBUTOR_FILE_CHE');
    for (const c of bad) await assert.rejects(store.storeChunk('cam-14', c), coded('DISTRIBUTOR_FILE_MARKER_DAMAGED'));
    assert.deepEqual(readdirSync(join(root, '.partial', 'cam-14')), ['marked.done.json'], 'no new transfer begun');
  });

  it('a chunk larger than the whole file it declares fails the transfer for good: its chunks set aside with the verdict, the chunks after it refused the same way, never receipted into a transfer that cannot complete', async () => {
    const file = Buffer.from('three chunks, the first larger than the size they declare');
    const cuts = [0, 40, 50, file.length];
    const chunks = [0, 1, 2].map((i) => ({ filename: 'file.bin', data: file.subarray(cuts[i], cuts[i + 1]).toString('base64'), transfer: { id: 'oversize', index: i, count: 3, size: 30, sha256: sha(file) } }));
    assert.equal(await store.storeChunk('cam-20', chunks[1]!), undefined);
    const first = await store.storeChunk('cam-20', chunks[0]!).then(() => assert.fail('receipted'), (e: unknown) => e as FieldStreamError);
    assert.ok(coded('DISTRIBUTOR_FILE_CHECKSUM')(first), String(first));
    const later = await store.storeChunk('cam-20', chunks[2]!).then(() => assert.fail('a chunk after the verdict receipted into a transfer that can never complete'), (e: unknown) => e as FieldStreamError);
    assert.ok(coded('DISTRIBUTOR_FILE_CHECKSUM')(later), String(later));
    assert.ok(existsSync(join(root, '.failed', 'cam-20', 'oversize.json')), 'the verdict kept');
    const kept = first.details?.chunksKeptIn as string;
    assert.deepEqual(readdirSync(kept).sort(), ['0.chunk', '1.chunk'], 'the chunks as received, the larger one too');
    assert.ok(readFileSync(join(kept, '0.chunk')).equals(file.subarray(0, 40)));
    assert.deepEqual(readdirSync(join(root, '.partial', 'cam-20')), [], 'nothing left in .partial');
  });

  it('chunks held for a transfer never add up to more than the file it declares: a device that never sends chunk 0 cannot fill the storage with receipted chunks that are never joined', async () => {
    // Each chunk no larger than the file, but up to 65,536 of them: checked only at the join, which
    // waits for every index, a device declaring 5 MiB kept 320 GiB in .partial/, receipted, for good.
    const declared = 1000;
    const file = randomBytes(declared * 40);
    const chunks = chunksOf(file, declared, 'never-joined').map((c) => ({ ...c, transfer: { ...c.transfer, size: declared } }));
    const partial = join(root, '.partial', 'cam-22', 'never-joined');
    const held = () => (existsSync(partial) ? readdirSync(partial).reduce((n, f) => n + statSync(join(partial, f)).size, 0) : 0);
    let err: FieldStreamError | undefined;
    for (const c of chunks.slice(1)) {
      err = await store.storeChunk('cam-22', c).then(() => undefined, (e: unknown) => e as FieldStreamError);
      if (err) break;
      assert.ok(held() <= declared, `${held()} bytes held in .partial for a file declared as ${declared}`);
    }
    assert.ok(err && coded('DISTRIBUTOR_FILE_CHECKSUM')(err), `refused once its chunks pass the size: ${String(err)}`);
    assert.equal(err.details?.transferId, 'never-joined');
    assert.equal(readdirSync(err.details?.chunksKeptIn as string).length, 2, 'the chunks as received, kept');
    await assert.rejects(store.storeChunk('cam-22', chunks[5]!), coded('DISTRIBUTOR_FILE_CHECKSUM'), 'a chunk after: the verdict');
    assert.equal(held(), 0, 'nothing left in .partial');
  });

  it('chunks written by other distributors count towards the declared size once a distributor meets the transfer (a restart lists them)', async () => {
    const file = randomBytes(1800);
    const chunks = chunksOf(file, 600, 'spread').map((c) => ({ ...c, transfer: { ...c.transfer, count: 10, size: 1000 } }));
    const [a, b] = [new FileStore(root), new FileStore(root)];
    assert.equal(await a.storeChunk('cam-23', chunks[1]!), undefined);
    await assert.rejects(b.storeChunk('cam-23', chunks[2]!), coded('DISTRIBUTOR_FILE_CHECKSUM'), "the other's chunk listed: 1,200 bytes of 1,000");
    await assert.rejects(new FileStore(root).storeChunk('cam-23', chunks[0]!), coded('DISTRIBUTOR_FILE_CHECKSUM'));
  });

  it('a chunk delivered again with another length is refused for good, never put in place of the one receipted: the bytes counted stay the bytes held', async () => {
    const declared = 1000;
    const one = (id: string, index: number, bytes: number) => ({ filename: 'file.bin', data: randomBytes(bytes).toString('base64'), transfer: { id, index, count: 40, size: declared, sha256: 'a'.repeat(64) } });
    const partial = join(root, '.partial', 'cam-24', 'regrown');
    for (let i = 1; i < 40; i++) assert.equal(await store.storeChunk('cam-24', one('regrown', i, 10)), undefined);
    const err = await store.storeChunk('cam-24', one('regrown', 3, declared)).then(() => undefined, (e: unknown) => e as FieldStreamError);
    assert.ok(err && coded('DISTRIBUTOR_FILE_CHECKSUM')(err), `a longer copy of chunk 3 refused: ${String(err)}`);
    assert.equal(statSync(join(err.details?.chunksKeptIn as string, '3.chunk')).size, 10, 'the chunk received first kept');
    assert.ok(!existsSync(partial), 'nothing left in .partial');
    // The same chunk again, same length: a redelivery, as before.
    const same = one('again', 1, 10);
    assert.equal(await store.storeChunk('cam-24', same), undefined);
    assert.equal(await store.storeChunk('cam-24', same), undefined);
  });

  it('chunks adding up to more than the file they declare fail the transfer for good as soon as they do, never joined', async () => {
    // Each chunk no larger than the file (refused at once otherwise), but many of them: joined whole
    // before the size was compared, a device declaring 1 KiB could have 65,536 chunks of 1 KiB (or
    // of 10 GiB, declaring that) copied into one temporary file first.
    const declared = 1000;
    const file = randomBytes(declared * 40);
    const chunks = chunksOf(file, declared, 'overflow').map((c) => ({ ...c, transfer: { ...c.transfer, size: declared } }));
    // The join's writes counted (FileHandle.writeFile is the join's alone).
    const fh = await fs.promises.open(process.execPath, 'r');
    const proto = Object.getPrototypeOf(fh) as { writeFile: (data: Buffer, ...rest: unknown[]) => Promise<void> };
    await fh.close();
    const original = proto.writeFile;
    let joined = 0;
    proto.writeFile = function (data, ...rest) {
      joined += data.length;
      return original.call(this, data, ...rest);
    };
    let err: FieldStreamError;
    try {
      assert.equal(await store.storeChunk('cam-21', chunks.at(-1)!), undefined);
      err = await store.storeChunk('cam-21', chunks[0]!).then(() => assert.fail('receipted'), (e: unknown) => e as FieldStreamError);
    } finally {
      proto.writeFile = original;
    }
    assert.ok(coded('DISTRIBUTOR_FILE_CHECKSUM')(err), String(err));
    assert.equal(joined, 0, 'nothing joined');
    const kept = err.details?.chunksKeptIn as string;
    assert.equal(readdirSync(kept).length, 2, 'every chunk kept as received');
    assert.ok(existsSync(join(root, '.failed', 'cam-21', 'overflow.json')), 'the verdict kept');
    await assert.rejects(store.storeChunk('cam-21', chunks[1]!), coded('DISTRIBUTOR_FILE_CHECKSUM'), 'a chunk after: the verdict');
  });

  it('a distributor SIGKILLed between the verdict and the move of the chunks: the chunk delivered again moves them, with the same error', { skip: !strace && 'strace is not available' }, async () => {
    const file = Buffer.from('two chunks, killed while they are set aside');
    const chunks = chunksOf(file, 30, 'killed', { sha256: 'c'.repeat(64) });
    assert.equal(await store.storeChunk('cam-8', chunks[0]!), undefined);
    const partial = join(root, '.partial', 'cam-8', 'killed');
    // The last chunk in a process killed at the rename of the chunks' folder (strace injects the signal there).
    const script = `
      import { FileStore } from ${JSON.stringify(new URL('../../internal-network/distributor/file-store.ts', import.meta.url).href)};
      await new FileStore(process.env.ROOT).storeChunk('cam-8', JSON.parse(process.env.CHUNK)).catch((e) => console.log(e.code));
      console.log('not killed');
    `;
    const r = spawnSync('strace', ['-f', '-o', '/dev/null', '-P', partial, '-e', 'trace=rename,renameat,renameat2', '-e', 'inject=rename,renameat,renameat2:signal=SIGKILL', process.execPath, '--import', 'tsx', '--input-type=module', '-e', script], {
      env: { ...process.env, ROOT: root, CHUNK: JSON.stringify(chunks[1]) },
      encoding: 'utf8',
    });
    assert.ok(r.signal === 'SIGKILL' || r.status === 128 + 9, `killed (${r.status} ${r.signal} ${r.stdout} ${r.stderr})`);
    assert.deepEqual(readdirSync(partial).sort(), ['0.chunk', '1.chunk'], 'the chunks still in their folder');
    assert.ok(existsSync(join(root, '.failed', 'cam-8', 'killed.json')), 'the verdict written first');
    const err = await store.storeChunk('cam-8', chunks[1]!).then(() => assert.fail('stored'), (e: unknown) => e as FieldStreamError);
    assert.ok(coded('DISTRIBUTOR_FILE_CHECKSUM')(err), String(err));
    const kept = err.details?.chunksKeptIn as string;
    assert.ok(err.message.includes(kept));
    assert.ok(Buffer.concat([0, 1].map((i) => readFileSync(join(kept, `${i}.chunk`)))).equals(file));
    assert.ok(!existsSync(partial));
  });

  it('two distributors, each pid 1 in its container, completing a transfer at once: one killed as it links its done marker leaves the other\'s whole', { skip: !(strace && pidNamespaces) && 'strace or unshare is not available' }, async () => {
    // Replicas share the file storage, and node is pid 1 in each container: a name aside made of the
    // pid (NAME.tmp-PID) was the same file for both. The second one's open (O_TRUNC) emptied the
    // first one's marker before it was put in place, and, killed before it wrote its own, left an
    // empty marker in place for good: every chunk of the transfer delivered again failed on it, never
    // receipted. Here both have written their markers aside when the first puts its in place.
    const file = Buffer.from('a file of two chunks, completed by two replicas at once');
    const chunks = chunksOf(file, 30, 'pid1');
    assert.equal(await store.storeChunk('cam-11', chunks[0]!), undefined);
    const partialDir = join(root, '.partial', 'cam-11');
    const marker = join(partialDir, 'pid1.done.json');
    const script = `
      import { FileStore } from ${JSON.stringify(new URL('../../internal-network/distributor/file-store.ts', import.meta.url).href)};
      const store = new FileStore(process.env.ROOT);
      console.log('ready');
      if (process.env.WAIT) await new Promise((r) => process.stdin.once('data', r)).then(() => process.stdin.destroy());
      const r = await store.storeChunk('cam-11', JSON.parse(process.env.CHUNK));
      console.log(process.pid + ' ' + (r ? 'stored' : 'not stored'));
    `;
    const replica = (straceArgs: string[], wait: boolean) => {
      const child = spawn('strace', ['-f', '-o', '/dev/null', ...straceArgs, 'unshare', '-Urpf', '--mount-proc', process.execPath, '--import', 'tsx', '--input-type=module', '-e', script], {
        env: { ...process.env, ROOT: root, CHUNK: JSON.stringify(chunks[1]), ...(wait ? { WAIT: '1' } : {}) },
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (c, sig) => resolve([c, sig])));
      return { child, out: () => out, exited };
    };
    const until = async (what: string, done: () => boolean) => {
      for (const started = Date.now(); !done(); await new Promise((r) => setTimeout(r, 20))) if (Date.now() - started > 60_000) assert.fail(`waited for ${what}`);
    };
    // The second replica, killed as it puts its marker in place (its link to the marker's name).
    const second = replica(['-P', marker, '-e', 'trace=link,linkat', '-e', 'inject=link,linkat:signal=SIGKILL'], true);
    await until('the second replica to start', () => second.out().includes('ready'));
    // The first one held for 5 s with its marker written aside, before it puts it in place.
    const first = replica(['-P', marker, '-e', 'trace=link,linkat', '-e', 'inject=link,linkat:delay_enter=5000000'], false);
    let firstExited = false;
    void first.exited.then(() => (firstExited = true));
    await until('the first replica to write its marker aside', () => firstExited || (existsSync(partialDir) && readdirSync(partialDir).some((n) => n.startsWith('pid1.done.json.tmp'))));
    await new Promise((r) => setTimeout(r, 300));
    second.child.stdin.end('go\n');
    const [code] = await first.exited;
    assert.equal(code, 0);
    assert.match(first.out(), /^1 stored$/m, 'the first replica, pid 1, stored the file');
    await second.exited;
    // The chunk of the second one, delivered again, is answered from the marker.
    assert.equal((await store.storeChunk('cam-11', chunks[1]!))?.sha256, sha(file));
    assert.equal((await store.storeChunk('cam-11', chunks[0]!))?.sha256, sha(file));
  });

  it('a failing file system is DISTRIBUTOR_WRITE_FAILED naming the path (retried), not an uncoded error', async () => {
    const failed = (path: string) => (e: unknown) => coded('DISTRIBUTOR_WRITE_FAILED')(e) && (e as Error).message.includes(path);
    // A folder where the chunk should go: its rename fails (EISDIR), as on a disk gone wrong.
    const chunkPath = join(root, '.partial', 'cam-6', 't', '0.chunk');
    mkdirSync(chunkPath, { recursive: true });
    await assert.rejects(store.storeChunk('cam-6', chunksOf(Buffer.from('x'), 10, 't')[0]!), failed(chunkPath));
    // A file where the chunks' folders should be: nothing under it can be read or made (ENOTDIR).
    const broken = join(tmp.dir, 'broken');
    mkdirSync(broken);
    writeFileSync(join(broken, '.partial'), 'not a folder');
    await assert.rejects(new FileStore(broken).storeChunk('cam-6', chunksOf(Buffer.from('x'), 10, 't')[0]!), failed(join(broken, '.partial')));
  });
});

/**
 * What a distributor SIGKILLed at the wrong instant leaves in file storage, which nothing else
 * would ever remove: the join of a transfer's chunks (as large as the file, up to 10 GiB), the
 * folder of chunks of a file already stored. The sweep (at start, then hourly) removes them; never
 * what a live writer may still hold, nor a receipted chunk of a file not stored yet. The kills are
 * real: the child process SIGKILLs itself at the instant named, from inside the call it is in.
 */
describe('file storage: the sweep of what killed distributors leave', () => {
  const tmp = tempDir('file-sweep');
  after(() => tmp.cleanup());
  const storeUrl = JSON.stringify(new URL('../../internal-network/distributor/file-store.ts', import.meta.url).href);

  /** Stores `chunk` in a child process that SIGKILLs itself at `killAt` (a snippet that patches node:fs/promises). */
  function storeKilled(root: string, chunk: unknown, killAt: string): void {
    const script = `
      import fsp from 'node:fs/promises';
      import { syncBuiltinESMExports } from 'node:module';
      const kill = () => process.kill(process.pid, 'SIGKILL');
      ${killAt}
      syncBuiltinESMExports();
      const { FileStore } = await import(${storeUrl});
      await new FileStore(process.env.ROOT).storeChunk('cam-1', JSON.parse(process.env.CHUNK));
      console.log('not killed');
    `;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...process.env, ROOT: root, CHUNK: JSON.stringify(chunk) }, encoding: 'utf8' });
    assert.equal(r.signal, 'SIGKILL', `killed (${r.status} ${r.stdout} ${r.stderr})`);
  }
  const hoursAgo = (path: string, hours: number) => {
    const t = new Date(Date.now() - hours * 3_600_000);
    utimesSync(path, t, t);
  };
  const incoming = (dir: string) => readdirSync(dir).filter((f) => f.startsWith('.incoming-'));

  /** The FileHandle prototype patched: `method` SIGKILLs the process once it has run `times` times. */
  const killAfter = (method: 'write' | 'writeFile', times: number) => `
    const fh = await fsp.open(process.execPath, 'r');
    const proto = Object.getPrototypeOf(fh);
    await fh.close();
    const original = proto.${method};
    let n = 0;
    proto.${method} = async function (...args) { const r = await original.apply(this, args); if (++n === ${times}) kill(); return r; };`;

  it('a kill while the chunks are joined: the chunk delivered again stores the file, and nothing of the cut-off join is left', async () => {
    const root = join(tmp.dir, 'join');
    const store = new FileStore(root);
    const file = Buffer.from(Array.from({ length: 4 * 64 * 1024 }, (_, i) => (i * 13) % 256));
    const chunks = chunksOf(file, 64 * 1024, 'joined');
    for (const c of chunks.slice(0, -1)) assert.equal(await store.storeChunk('cam-1', c), undefined);
    // Killed once two chunks are written into the join (FileHandle.writeFile is the join's alone).
    storeKilled(root, chunks.at(-1), killAfter('writeFile', 2));
    const partial = join(root, '.partial', 'cam-1', 'joined');
    const [left] = incoming(partial);
    assert.ok(left && statSync(join(partial, left)).size === 2 * 64 * 1024, `the join cut off, left behind (${readdirSync(partial)})`);
    const info = await store.storeChunk('cam-1', chunks.at(-1)!); // the broker delivers it again
    assert.ok(readFileSync(join(root, info!.path)).equals(file));
    assert.ok(!existsSync(partial), 'the folder of chunks gone, with the join left in it');
    assert.deepEqual(incoming(join(root, 'cam-1')), []);

    // The same kill in a transfer whose checksum then fails: its chunks are set aside, not the join.
    const bad = chunksOf(file, 64 * 1024, 'joined-bad', { sha256: 'e'.repeat(64) });
    for (const c of bad.slice(0, -1)) assert.equal(await store.storeChunk('cam-1', c), undefined);
    storeKilled(root, bad.at(-1), killAfter('writeFile', 2));
    assert.equal(incoming(join(root, '.partial', 'cam-1', 'joined-bad')).length, 1);
    const err = await store.storeChunk('cam-1', bad.at(-1)!).then(() => assert.fail('stored'), (e: unknown) => e as FieldStreamError);
    assert.ok(coded('DISTRIBUTOR_FILE_CHECKSUM')(err), String(err));
    assert.deepEqual(readdirSync(err.details?.chunksKeptIn as string).sort(), ['0.chunk', '1.chunk', '2.chunk', '3.chunk']);
  });

  it('a kill while a file is written: the sweep removes the copy left behind once it is stale, never a fresh one', async () => {
    const root = join(tmp.dir, 'whole');
    const store = new FileStore(root);
    const file = randomBytes(256 * 1024);
    const message = { filename: 'photo.jpg', data: file.toString('base64') };
    const messageFile = join(tmp.dir, 'message.json'); // too large for the environment
    writeFileSync(messageFile, JSON.stringify(message));
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `
      import fsp from 'node:fs/promises';
      const kill = () => process.kill(process.pid, 'SIGKILL');
      ${killAfter('write', 1)}
      const { FileStore } = await import(${storeUrl});
      await new FileStore(process.env.ROOT).store('cam-1', JSON.parse(await fsp.readFile(process.env.MESSAGE, 'utf8')));
      console.log('not killed');
    `], { env: { ...process.env, ROOT: root, MESSAGE: messageFile }, encoding: 'utf8' });
    assert.equal(r.signal, 'SIGKILL', `killed (${r.status} ${r.stdout} ${r.stderr} ${r.error})`);
    const dev = join(root, 'cam-1');
    const [left] = incoming(dev);
    assert.ok(left, `the copy left behind (${readdirSync(dev)})`);
    const info = await store.store('cam-1', message); // the broker delivers it again
    assert.ok(readFileSync(join(root, info.path)).equals(file));
    // Fresh, it may be a live writer's (on this machine or another sharing the storage): kept.
    assert.deepEqual(await store.sweep(), { tempFiles: 0, tempBytes: 0, doneFolders: 0, skipped: 0 });
    assert.deepEqual(incoming(dev), [left]);
    hoursAgo(join(dev, left), TIMINGS.fileTempStaleMs / 3_600_000 + 1);
    writeFileSync(join(dev, '.incoming-live'), 'a live writer'); // fresh: stays
    // A chunk's copy in a folder of chunks, and a verdict's, stale too.
    const [first] = chunksOf(file, 100_000, 'waiting');
    await store.storeChunk('cam-1', first!);
    const partial = join(root, '.partial', 'cam-1', 'waiting');
    writeFileSync(join(partial, '.incoming-killed-chunk'), 'x'.repeat(10));
    hoursAgo(join(partial, '.incoming-killed-chunk'), 100);
    mkdirSync(join(root, '.failed', 'cam-1'), { recursive: true });
    writeFileSync(join(root, '.failed', 'cam-1', '.incoming-killed-verdict'), 'x'.repeat(5));
    hoursAgo(join(root, '.failed', 'cam-1', '.incoming-killed-verdict'), 100);
    assert.deepEqual(await store.sweep(), { tempFiles: 3, tempBytes: file.length + 15, doneFolders: 0, skipped: 0 });
    assert.deepEqual(incoming(dev), ['.incoming-live']);
    assert.deepEqual(readdirSync(partial), ['0.chunk'], 'the receipted chunk kept');
    assert.deepEqual(readdirSync(join(root, '.failed', 'cam-1')), []);
    assert.ok(readFileSync(join(root, info.path)).equals(file), 'the stored file untouched');
  });

  it('a kill after the done marker, before the chunks are removed: the sweep removes them, the marker still answers', async () => {
    const root = join(tmp.dir, 'done');
    const store = new FileStore(root);
    const file = Buffer.from('a file of three chunks, stored just before the kill');
    const chunks = chunksOf(file, 20, 'stored');
    for (const c of chunks.slice(0, -1)) assert.equal(await store.storeChunk('cam-1', c), undefined);
    storeKilled(root, chunks.at(-1), `const rm = fsp.rm; fsp.rm = async (path, ...rest) => { if (String(path).includes('.partial')) kill(); return rm(path, ...rest); };`);
    const partial = join(root, '.partial', 'cam-1', 'stored');
    assert.deepEqual(readdirSync(partial).sort(), ['0.chunk', '1.chunk', '2.chunk'], 'the chunks left behind');
    assert.ok(existsSync(`${partial}.done.json`));
    assert.deepEqual(await store.sweep(), { tempFiles: 0, tempBytes: 0, doneFolders: 1, skipped: 0 });
    assert.ok(!existsSync(partial));
    const info = await store.storeChunk('cam-1', chunks[0]!); // a chunk again: answered by the marker
    assert.ok(readFileSync(join(root, info!.path)).equals(file));
    assert.ok(!existsSync(partial), 'no folder made again');
  });

  it("a folder it may not list (the root-owned lost+found of a disk mounted as the storage) is left alone, and the rest is swept", async (t) => {
    const cannot = cannotRunAsNobody('the sweep');
    if (cannot) return t.skip(cannot);
    const repo = join(import.meta.dirname, '..', '..');
    // The distributor runs as a user of its own (the image's `node`); mkfs makes lost+found, 0700 root's.
    const top = fs.mkdtempSync('/tmp/fieldstream-sweep-unreadable-');
    try {
      fs.chmodSync(top, 0o755);
      const root = join(top, 'files');
      const store = new FileStore(root);
      const chunks = chunksOf(Buffer.from('a file of three chunks, stored just before the kill'), 20, 'stored');
      for (const c of chunks) await store.storeChunk('cam-1', c);
      const partial = join(root, '.partial', 'cam-1', 'stored');
      mkdirSync(partial); // as a kill between the done marker and the folder's removal leaves it
      writeFileSync(join(partial, '0.chunk'), 'a chunk');
      writeFileSync(join(root, 'cam-1', '.incoming-killed'), 'x'.repeat(10));
      hoursAgo(join(root, 'cam-1', '.incoming-killed'), 100);
      spawnSync('chown', ['-R', '65534:65534', root]);
      mkdirSync(join(root, 'lost+found'), { mode: 0o700 });
      const code = `
        const { FileStore } = await import(${storeUrl});
        try { console.log(JSON.stringify(await new FileStore(process.env.ROOT).sweep())); }
        catch (err) { console.log(JSON.stringify({ failed: err.code })); }`;
      const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { uid: 65534, gid: 65534, cwd: repo, env: { ...process.env, ROOT: root, TSX_DISABLE_CACHE: '1', HOME: top }, encoding: 'utf8' });
      const swept = JSON.parse(out.trim().split('\n').at(-1)!) as Record<string, unknown>;
      assert.deepEqual({ ...swept, firstSkipped: undefined }, { tempFiles: 1, tempBytes: 10, doneFolders: 1, skipped: 1, firstSkipped: undefined });
      assert.equal((swept.firstSkipped as { path?: string } | undefined)?.path, join(root, 'lost+found'), 'named, for the log');
      assert.ok(!existsSync(partial) && !existsSync(join(root, 'cam-1', '.incoming-killed')), 'what it may sweep, swept');
      assert.ok(existsSync(join(root, 'lost+found')));
    } finally {
      rmSync(top, { recursive: true, force: true });
    }
  });

  it("never removes receipted chunks of a file not stored yet, stored files, what is set aside, or what a link points at, however old", async () => {
    const root = join(tmp.dir, 'kept');
    const store = new FileStore(root);
    const file = Buffer.from('two chunks, only the first one here');
    const [first] = chunksOf(file, 20, 'waiting');
    assert.equal(await store.storeChunk('cam-2', first!), undefined);
    await store.store('cam-2', { filename: 'img.jpg', data: Buffer.from('stored').toString('base64') });
    const bad = chunksOf(Buffer.from('x'), 10, 'bad', { sha256: 'd'.repeat(64) });
    await assert.rejects(store.storeChunk('cam-2', bad[0]!), coded('DISTRIBUTOR_FILE_CHECKSUM'));
    const outside = join(tmp.dir, 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, '.incoming-not-ours'), 'not in the storage');
    hoursAgo(join(outside, '.incoming-not-ours'), 100);
    symlinkSync(outside, join(root, 'cam-link'));
    const everything = (dir: string): string[] => readdirSync(dir, { recursive: true }).map(String).sort();
    const before = everything(root);
    for (const f of before) hoursAgo(join(root, f), 100);
    assert.deepEqual(await store.sweep(), { tempFiles: 0, tempBytes: 0, doneFolders: 0, skipped: 0 });
    assert.deepEqual(everything(root), before);
    assert.ok(existsSync(join(outside, '.incoming-not-ours')));
    assert.equal(await store.storeChunk('cam-2', chunksOf(file, 20, 'waiting')[1]!).then((i) => i?.sha256), sha(file));
  });
});
