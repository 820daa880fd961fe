import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FieldClientConfigSchema } from '../../field-client/src/config.ts';
import { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { chunkBytesFor } from '../../field-client/src/files/transfer-record.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { FileTransferSchema } from '../../shared/contract/payloads.ts';
import { LIMITS } from '../../shared/limits.ts';
import { inTempDir, tempDir } from '../helpers/pki.ts';

/**
 * A file transfer is an epoch of its own whose sequence numbers are its chunk indexes, and the
 * distributor receipts an authentic message below its replay window without storing it ("too-old",
 * internal-network/distributor/security/verifier.ts). That is safe only while no transfer has more
 * chunks than the window: otherwise a compromised DMZ holds chunk 0 back, forwards the rest, then
 * lets chunk 0 through, which gets a receipt; the device deletes a file the distributor never has.
 */
describe('file transfers stay within the replay window', () => {
  it('a transfer has at most as many chunks as the replay window, by the limits and by the contract', () => {
    assert.ok(LIMITS.fileMaxChunks <= LIMITS.replayWindowSeqs, `${LIMITS.fileMaxChunks} chunks > a window of ${LIMITS.replayWindowSeqs}`);
    const transfer = (count: number) => ({ id: 't1', index: count - 1, count, size: count, sha256: '0'.repeat(64) });
    assert.equal(FileTransferSchema.safeParse(transfer(LIMITS.fileMaxChunks)).success, true);
    assert.equal(FileTransferSchema.safeParse(transfer(LIMITS.replayWindowSeqs + 1)).success, false, 'one more chunk than the window is refused');
  });

  it('every chunk index of the largest transfer is inside the window of its highest index: never receipted unstored', () => {
    inTempDir('transfer-window', (dir) => {
      const w = new ReplayWindows(dir);
      const count = LIMITS.fileMaxChunks;
      // The attack: chunk 0 held back, every other chunk accepted first.
      for (let i = 1; i < count; i++) w.record('cam-1', 'tr', i);
      assert.equal(w.check('cam-1', 'tr', 0), 'new', 'chunk 0 is still told apart: stored, not receipted unseen');
      for (let i = 0; i < count; i++) assert.notEqual(w.check('cam-1', 'tr', i), 'too-old', `chunk ${i}`);
      w.close();
    });
  });

  it('the field client splits the largest file it accepts, at any chunk size it may be configured with, into few enough chunks', () => {
    const config = (chunk: number) => FieldClientConfigSchema.shape.FIELD_FILE_CHUNK_BYTES.safeParse(chunk).success;
    let smallest = 1;
    while (!config(smallest)) smallest *= 2; // the smallest configurable chunk size, as a power of two
    for (const configured of [smallest, 64 * 1024, 1024 * 1024, 4 * 1024 * 1024]) {
      for (const size of [0, 1, configured, LIMITS.fileTransferMaxBytes - 1, LIMITS.fileTransferMaxBytes]) {
        const chunk = chunkBytesFor(size, configured);
        const count = Math.max(1, Math.ceil(size / chunk));
        assert.ok(count <= LIMITS.fileMaxChunks && count <= LIMITS.replayWindowSeqs, `${size} bytes at ${configured}: ${count} chunks`);
        assert.ok(chunk >= configured, 'never smaller than configured');
        // one chunk is one message's file data (the contract's limit on it)
        assert.ok(chunk <= Math.max(configured, LIMITS.fileMaxBytes), `${size} bytes at ${configured}: chunks of ${chunk} bytes`);
      }
    }
  });

  it('a file needing more chunks than the window at its configured size is sent in larger chunks, whole', async () => {
    const work = tempDir('transfer-window-outbox');
    try {
      const file = Buffer.from(Array.from({ length: LIMITS.replayWindowSeqs + 1000 }, (_, i) => (i * 7) % 251));
      writeFileSync(join(work.dir, 'big.bin'), file);
      const outbox = new FileOutbox(work.dir, 1); // one-byte chunks: 66,536 of them as configured
      const rec = await outbox.accept(join(work.dir, 'big.bin'), {});
      assert.ok(rec.count <= LIMITS.replayWindowSeqs, `${rec.count} chunks`);
      assert.equal(rec.size, file.length);
      const parts = Array.from({ length: rec.count }, (_, i) => outbox.readChunk(rec, i));
      assert.ok(parts.every((p) => p.length > 0));
      const joined = Buffer.concat(parts);
      assert.ok(joined.equals(file), 'the chunks join into the file');
      assert.equal(createHash('sha256').update(joined).digest('hex'), rec.sha256);
      const last = { id: rec.transferId, index: rec.count - 1, count: rec.count, size: rec.size, sha256: rec.sha256 };
      assert.equal(FileTransferSchema.safeParse(last).success, true, 'the contract takes its chunks');
    } finally {
      work.cleanup();
    }
  });
});
