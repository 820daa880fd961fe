import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { ERRORS, FieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * The names the distributor gives a file when its own is taken by other content. A device chooses
 * its file names and its content, so it can take the fallback names in advance; whatever it does,
 * each name fits the file system's 255-byte limit, and running out of names is a final, coded
 * verdict (a dead letter, kept whole), never a transient failure retried for ever without a PUBACK.
 */
const FS_NAME_MAX_BYTES = 255;
const bytes = (s: string) => Buffer.byteLength(s, 'utf8');
const coded = (code: ErrorCode) => (e: unknown) => e instanceof FieldStreamError && e.code === code;

describe('file storage: names when the name is taken', () => {
  const tmp = tempDir('file-names');
  const root = join(tmp.dir, 'files');
  const store = new FileStore(root);
  after(() => tmp.cleanup());

  /**
   * Stores `content` under `filename` again and again, each time putting other content under the
   * name it got (what a device that took the name first would have done), until no name is left.
   * Returns the names it got, in order.
   */
  async function exhaust(deviceId: string, filename: string, content: string): Promise<string[]> {
    const data = Buffer.from(content).toString('base64');
    const names: string[] = [];
    for (let i = 0; ; i++) {
      assert.ok(i < 50, 'the names run out after a few');
      let info;
      try {
        info = await store.store(deviceId, { filename, data });
      } catch (err) {
        assert.ok(coded('DISTRIBUTOR_FILE_NAME_TAKEN')(err), `a final coded error, got ${String(err)}`);
        return names;
      }
      const again = await store.store(deviceId, { filename, data });
      assert.equal(again.path, info.path, 'the same content again is found where it was stored');
      assert.equal(readFileSync(join(root, info.path), 'utf8'), content);
      names.push(basename(info.path));
      writeFileSync(join(root, info.path), `other content ${i}`); // taken by other content
    }
  }

  it('keeps every fallback name within 255 bytes of UTF-8, whatever the name and extension', async () => {
    const longest = LIMITS.filenameMaxBytes;
    const cases = [
      `${'n'.repeat(187)}.jpeg`, // 192 bytes: NAME.SHA256.EXT would be 257
      `${'é'.repeat(97)}.txt`, // 198 bytes in 101 characters
      `${'😀'.repeat(48)}.jpg`, // four bytes each
      `${'x'.repeat(longest - 4)}.bin`,
      `a.${'y'.repeat(longest - 2)}`, // an "extension" of 198 bytes
      `${'z'.repeat(longest)}`, // no extension
    ];
    for (const [i, filename] of cases.entries()) {
      assert.ok(bytes(filename) <= longest, filename);
      const names = await exhaust(`cam-${i}`, filename, `content of case ${i}`);
      assert.ok(names.length >= 3, `${filename}: NAME, NAME.SHA8.EXT and NAME.SHA256.EXT at least (${names.length})`);
      assert.equal(names[0], filename);
      assert.equal(new Set(names).size, names.length, 'each a name of its own');
      for (const name of names) {
        assert.ok(bytes(name) <= FS_NAME_MAX_BYTES, `${name.slice(0, 40)}…: ${bytes(name)} bytes`);
        assert.equal(name, name.normalize('NFC'), 'no character cut in half');
        assert.ok(!name.includes('\ufffd'), 'no character cut in half');
      }
      assert.deepEqual(readdirSync(join(root, `cam-${i}`)).filter((f) => f.startsWith('.')), [], 'no temporary file left');
    }
  });

  it('a name taken under every fallback is a final error (a dead letter), not retried for ever', async () => {
    const names = await exhaust('cam-taken', 'img.jpg', 'the real picture');
    const sha = createHash('sha256').update('the real picture').digest('hex');
    assert.equal(names[0], 'img.jpg');
    assert.equal(names[1], `img.${sha.slice(0, 8)}.jpg`);
    assert.equal(names[2], `img.${sha}.jpg`);
    assert.ok(names.length > 3, 'a further name is tried before giving up');
    assert.equal(ERRORS.DISTRIBUTOR_FILE_NAME_TAKEN.transient, false);
    // Every name now holds other content: the file is refused the same way each time it comes.
    await assert.rejects(store.store('cam-taken', { filename: 'img.jpg', data: Buffer.from('the real picture').toString('base64') }), coded('DISTRIBUTOR_FILE_NAME_TAKEN'));
    assert.deepEqual(readdirSync(join(root, 'cam-taken')).filter((f) => f.startsWith('.')), [], 'no temporary file left');
  });

  it('a file in chunks whose names are all taken keeps its receipted chunks, and says where', async () => {
    const content = 'a file sent in two chunks';
    await exhaust('cam-chunks', 'clip.mp4', content);
    const file = Buffer.from(content);
    const sha256 = createHash('sha256').update(file).digest('hex');
    const chunk = (index: number) => ({
      filename: 'clip.mp4',
      data: file.subarray(index * 13, (index + 1) * 13).toString('base64'),
      transfer: { id: 'tr1', index, count: 2, size: file.length, sha256 },
    });
    assert.equal(await store.storeChunk('cam-chunks', chunk(0)), undefined);
    const err = await store.storeChunk('cam-chunks', chunk(1)).then(
      () => assert.fail('stored'),
      (e: unknown) => e,
    );
    assert.ok(coded('DISTRIBUTOR_FILE_NAME_TAKEN')(err), String(err));
    const kept = String((err as FieldStreamError).details?.chunksKeptIn);
    assert.equal(Buffer.concat([readFileSync(join(kept, '0.chunk')), readFileSync(join(kept, '1.chunk'))]).toString(), content);
    // The last chunk delivered again (the distributor killed before its dead letter was written):
    // the same verdict, so it becomes the dead letter, not the first chunk of a new transfer.
    const again = await store.storeChunk('cam-chunks', chunk(1)).then(
      () => assert.fail('receipted as a chunk of a new transfer'),
      (e: unknown) => e as FieldStreamError,
    );
    assert.ok(coded('DISTRIBUTOR_FILE_NAME_TAKEN')(again), String(again));
    assert.equal(again.message, (err as FieldStreamError).message);
    assert.deepEqual(readdirSync(join(root, '.partial', 'cam-chunks')), [], 'no new folder of chunks');
  });
});
