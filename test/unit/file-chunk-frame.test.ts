import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { chunkBytesForFrame } from '../../field-client/src/files/transfer-record.ts';
import { FileTransfers } from '../../field-client/src/files/transfers.ts';
import { unsafeFilenameReason } from '../../shared/contract/filename.ts';
import { FilePayloadSchema } from '../../shared/contract/payloads.ts';
import { parseUplinkFrame } from '../../shared/contract/uplink.ts';
import { signedBatchFrame } from '../../shared/contract/uplink-frame.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * A file taken once a gateway said its frame limit is cut in chunks whose frames that gateway takes
 * (field-client.ts, transfer-record.ts chunkBytesForFrame), whatever the file's name and type: the
 * frames of its chunks are built here as the client sends them (FileTransfers, signedBatchFrame),
 * with the longest name and type the contract lets through, each character escaped as far as JSON
 * escapes it.
 */
describe("a file's chunks fit the frames of the gateway that said its limit", () => {
  // 200 bytes of `"` (two each in JSON); 255 characters of type, a control character escaped as six.
  const filename = '"'.repeat(LIMITS.filenameMaxBytes);
  const contentType = `a/b;${'\u0001'.repeat(251)}`;
  const deviceId = 'd'.repeat(LIMITS.deviceIdMaxChars);

  it('takes the longest name and type as the contract does', () => {
    assert.equal(unsafeFilenameReason(filename), undefined);
    assert.equal(FilePayloadSchema.shape.contentType.safeParse(contentType).success, true);
  });

  for (const frameMax of [24 * 1024, 256 * 1024, 1024 * 1024, 3 * 1024 * 1024]) {
    it(`a frame limit of ${frameMax} bytes: every chunk's frame is within it, and the gateway's parse takes it`, async () => {
      const work = tempDir('chunk-frame');
      try {
        const chunkBytes = chunkBytesForFrame(frameMax);
        assert.ok(chunkBytes !== undefined && chunkBytes > 0);
        const outbox = new FileOutbox(work.dir, 4 * 1024 * 1024);
        outbox.sizeChunksBy(() => chunkBytes);
        const src = join(work.dir, 'src.bin');
        writeFileSync(src, randomBytes(2 * chunkBytes + 17));
        const rec = await outbox.accept(src, { filename, contentType });
        assert.equal(rec.chunkBytes, chunkBytes);
        assert.equal(rec.count, 3);
        const transfers = new FileTransfers(outbox, { window: 4, receipts: true }, () => {}, createLogger('test', 'silent'));
        transfers.start(1, rec);
        const key = randomBytes(32);
        let frames = 0;
        for (const { epoch, item } of transfers.chunks()) {
          const frame = signedBatchFrame(key, { deviceId, epoch, ts: Date.now() }, [item]);
          const bytes = Buffer.byteLength(frame);
          assert.ok(bytes <= frameMax, `chunk ${item.seq}: a frame of ${bytes} bytes, past ${frameMax}`);
          assert.equal(parseUplinkFrame(frame, { frameMaxBytes: frameMax, batchMaxMessages: 1 }).length, 1);
          frames++;
        }
        assert.equal(frames, 3);
      } finally {
        work.cleanup();
      }
    });
  }

  it('a limit no chunk fits (below its frame without data) leaves the size to the rest', () => {
    assert.equal(chunkBytesForFrame(LIMITS.welcomeFrameMaxBytesMin), undefined);
    assert.equal(chunkBytesForFrame(LIMITS.fieldFileChunkFrameOverheadBytes), undefined);
  });
});
