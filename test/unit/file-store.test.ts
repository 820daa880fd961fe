import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { tempDir } from '../helpers/pki.ts';

const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('file storage', () => {
  const tmp = tempDir('files');
  const root = join(tmp.dir, 'files');
  const store = new FileStore(root);
  after(() => tmp.cleanup());

  it('refuses every name that could leave the folder, whatever the DMZ forwarded', async () => {
    for (const filename of ['../escape.txt', '../../etc/passwd', '/abs.txt', 'sub/dir.txt', '..', '.', 'a\\b', '.bashrc', 'x\u0000y']) {
      await assert.rejects(store.store('cam-1', { filename, data: b64('x') }), (e: unknown) => e instanceof FieldStreamError && e.code === 'DISTRIBUTOR_UNSAFE_FILENAME');
    }
    await assert.rejects(store.store('../cam', { filename: 'a.txt', data: b64('x') }), (e: unknown) => e instanceof FieldStreamError && e.code === 'DISTRIBUTOR_UNSAFE_FILENAME');
    assert.ok(readdirSync(tmp.dir).every((f) => f === 'files'), 'nothing written beside the storage folder');
  });

  it('stores once when the same file arrives again (a redelivery)', async () => {
    const a = await store.store('cam-1', { filename: 'img.jpg', data: b64('first') });
    const again = await store.store('cam-1', { filename: 'img.jpg', data: b64('first') });
    assert.deepEqual(again, a);
    assert.equal(a.path, join('cam-1', 'img.jpg'));
    assert.equal(readFileSync(join(root, 'cam-1', 'img.jpg'), 'utf8'), 'first');
  });

  it('never overwrites: other content under a taken name gets a name of its own', async () => {
    const b = await store.store('cam-1', { filename: 'img.jpg', data: b64('second') });
    assert.match(b.path, /^cam-1\/img\.[0-9a-f]{8}\.jpg$/);
    assert.equal(readFileSync(join(root, 'cam-1', 'img.jpg'), 'utf8'), 'first');
    assert.equal(readFileSync(join(root, b.path), 'utf8'), 'second');
  });

  describe('files in chunks', () => {
    const file = Buffer.from(Array.from({ length: 2500 }, (_, i) => (i * 31) % 256));
    const sha = createHash('sha256').update(file).digest('hex');
    const chunk = (i: number, over: Partial<{ sha256: string; size: number; id: string }> = {}) => ({
      filename: 'big.bin',
      data: file.subarray(i * 1000, (i + 1) * 1000).toString('base64'),
      transfer: { id: over.id ?? 't1', index: i, count: 3, size: over.size ?? file.length, sha256: over.sha256 ?? sha },
    });

    it('joins chunks arriving in any order, once, and checks the SHA-256 of the whole', async () => {
      assert.equal(await store.storeChunk('cam-3', chunk(2)), undefined);
      assert.equal(await store.storeChunk('cam-3', chunk(0)), undefined);
      assert.equal(await store.storeChunk('cam-3', chunk(0)), undefined, 'a chunk delivered twice is harmless');
      const info = await store.storeChunk('cam-3', chunk(1));
      assert.equal(info?.sha256, sha);
      assert.equal(info?.size, 2500);
      assert.ok(readFileSync(join(root, 'cam-3', 'big.bin')).equals(file));
      assert.equal((await store.storeChunk('cam-3', chunk(1)))?.path, info?.path, 'a chunk after completion finds the record');
      assert.deepEqual(readdirSync(join(root, '.partial', 'cam-3')), ['t1.done.json']);
    });

    it('refuses a file whose checksum fails, and stores nothing', async () => {
      const wrong = { sha256: 'a'.repeat(64), id: 't2' };
      await store.storeChunk('cam-4', chunk(0, wrong));
      await store.storeChunk('cam-4', chunk(1, wrong));
      await assert.rejects(store.storeChunk('cam-4', chunk(2, wrong)), (e: unknown) => e instanceof FieldStreamError && e.code === 'DISTRIBUTOR_FILE_CHECKSUM');
      assert.deepEqual(readdirSync(join(root, 'cam-4')), []);
    });
  });

  it('keeps devices apart and leaves no temporary files behind', async () => {
    await store.store('cam-2', { filename: 'img.jpg', data: b64('other device') });
    assert.equal(readFileSync(join(root, 'cam-1', 'img.jpg'), 'utf8'), 'first');
    for (const dev of ['cam-1', 'cam-2']) assert.ok(readdirSync(join(root, dev)).every((f) => !f.startsWith('.incoming-')));
  });
});
