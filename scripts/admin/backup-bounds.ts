import { LIMITS } from '../../shared/limits.ts';

/**
 * The bounds of one backup archive, checked by the backup as it writes one and by the restore as
 * it reads one: the same object, so that an archive the backup writes is one the restore takes.
 * A backup that finds its archive past one refuses (BACKUP_TOO_LARGE) rather than write an archive
 * that would be refused on the day it is needed.
 */
export interface BackupBounds {
  /** bytes. The archive file itself (its manifest's gzip member and its files'), and any one file in it. */
  archiveMaxBytes: number;
  /** bytes. The files in the archive, together (their content only). */
  filesMaxBytes: number;
  /** files. Files in the manifest (the manifest itself not counted), and folder entries of an earlier version's archive. */
  maxFiles: number;
  /** bytes. The manifest (manifest.json) as it is in the archive. */
  manifestMaxBytes: number;
  /** bytes. Everything the archive decompresses to: the files, every tar header and padding, the manifest's entry, the end. */
  unpackedMaxBytes: number;
}

/**
 * The bounds of shared/limits.ts. What an archive decompresses to is bounded by what the others
 * allow: the files and the manifest, and four tar blocks per file (its header, a pax header and its
 * record for a long name, the padding of its last block).
 */
export const BACKUP_BOUNDS: Readonly<BackupBounds> = Object.freeze({
  archiveMaxBytes: LIMITS.backupArchiveMaxBytes,
  filesMaxBytes: LIMITS.backupMaxBytes,
  maxFiles: LIMITS.backupMaxFiles,
  manifestMaxBytes: LIMITS.backupManifestMaxBytes,
  unpackedMaxBytes: LIMITS.backupMaxBytes + LIMITS.backupMaxFiles * 4 * 512 + LIMITS.backupManifestMaxBytes,
});
