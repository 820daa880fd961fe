import { z } from 'zod';
import { LIMITS } from '../../../shared/limits.ts';

/** What the queue holds for a file: a reference to the outbox's copy, not its bytes. */
export const FileTransferRecordSchema = z.object({
  transferId: z.string(),
  filename: z.string(),
  contentType: z.string(),
  /** bytes */
  size: z.number().int().min(0),
  sha256: z.string(),
  /** bytes */
  chunkBytes: z.number().int().min(1),
  count: z.number().int().min(1),
  /** ISO time the file was accepted */
  timestamp: z.string(),
  /**
   * ms: the file's modification time when it was placed in the outbox (absent in records queued
   * before it was kept). A file moved in keeps its inode, and its producer may write to it after:
   * a file whose time moved since is set aside when its transfer is done, never deleted (FileOutbox.finish).
   */
  mtimeMs: z.number().optional(),
});
export type FileTransferRecord = z.infer<typeof FileTransferRecordSchema>;

/**
 * bytes. The chunk size of a file of `size` bytes: the configured one (FIELD_FILE_CHUNK_BYTES), or
 * larger when the file would need more than LIMITS.fileMaxChunks chunks at that size. A transfer's
 * chunks are sequence numbers of its own epoch, and the distributor receipts an authentic chunk below
 * its replay window unstored (internal-network/distributor/security/verifier.ts): so a transfer never
 * has more chunks than the window (LIMITS.fileMaxChunks <= LIMITS.replayWindowSeqs), which the
 * contract enforces too. At most 160 KiB for the largest file (LIMITS.fileTransferMaxBytes), far
 * below the largest file data of one message (LIMITS.fileMaxBytes).
 */
export function chunkBytesFor(size: number, configured: number): number {
  return Math.max(configured, Math.ceil(size / LIMITS.fileMaxChunks));
}

/**
 * bytes. The largest chunk whose frame fits a gateway's frame limit (`frameMaxBytes`, its welcome's):
 * the chunk in base64 (4 characters for each 3 bytes) and LIMITS.fieldFileChunkFrameOverheadBytes
 * besides. undefined when no chunk fits (a limit below that overhead): the file is cut as it would
 * be without it, and its chunks, too large, set aside (frame-sender.ts). A gateway may take frames
 * far smaller than a chunk of FIELD_FILE_CHUNK_BYTES (GATEWAY_MAX_FRAME_BYTES, from 1 KiB): a chunk
 * of 1 MiB is a frame of about 1.4 MB, and cut so, every file sent through a gateway taking 1 MiB
 * was set aside whole, none delivered.
 */
export function chunkBytesForFrame(frameMaxBytes: number): number | undefined {
  const bytes = Math.floor((frameMaxBytes - LIMITS.fieldFileChunkFrameOverheadBytes) / 4) * 3;
  return bytes > 0 ? bytes : undefined;
}
