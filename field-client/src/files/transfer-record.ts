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
