import assert from 'node:assert/strict';
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

  it('keeps devices apart and leaves no temporary files behind', async () => {
    await store.store('cam-2', { filename: 'img.jpg', data: b64('other device') });
    assert.equal(readFileSync(join(root, 'cam-1', 'img.jpg'), 'utf8'), 'first');
    for (const dev of ['cam-1', 'cam-2']) assert.ok(readdirSync(join(root, dev)).every((f) => !f.startsWith('.incoming-')));
  });
});
