import { extname } from 'node:path';

/** bytes. Longest name of one folder entry on the file systems we store to (ext4, XFS, btrfs: NAME_MAX). */
const FS_NAME_MAX_BYTES = 255;
/** bytes. A longer "extension" (`a.` + 190 characters) is kept as part of the stem, which may be shortened. */
const EXT_MAX_BYTES = 32;
/** Names tried after NAME.SHA256.EXT, with a counter, before a file is refused as DISTRIBUTOR_FILE_NAME_TAKEN. */
const COUNTED_NAMES = 4;

/**
 * The names a file may be stored under, in order: NAME, NAME.SHA8.EXT, NAME.SHA256.EXT, then
 * NAME.SHA256-2.EXT … NAME.SHA256-5.EXT. Each is at most FS_NAME_MAX_BYTES bytes of UTF-8: NAME is
 * at most LIMITS.filenameMaxBytes (200, the contract's), and a fallback shortens the stem, by whole
 * characters, as far as its suffix needs. Deterministic, so the same content arriving again is found.
 */
export function candidateNames(filename: string, sha256: string): string[] {
  let ext = extname(filename);
  if (Buffer.byteLength(ext, 'utf8') > EXT_MAX_BYTES) ext = '';
  const stem = filename.slice(0, filename.length - ext.length);
  const suffixes = [`.${sha256.slice(0, 8)}`, `.${sha256}`];
  for (let n = 2; n < 2 + COUNTED_NAMES; n++) suffixes.push(`.${sha256}-${n}`);
  return [filename, ...suffixes.map((suffix) => `${truncateUtf8(stem, FS_NAME_MAX_BYTES - Buffer.byteLength(suffix + ext, 'utf8'))}${suffix}${ext}`)];
}

/** The longest start of `s`, in whole characters (code points), of at most `max` bytes of UTF-8. */
function truncateUtf8(s: string, max: number): string {
  if (Buffer.byteLength(s, 'utf8') <= max) return s;
  let out = '';
  let used = 0;
  for (const ch of s) {
    const n = Buffer.byteLength(ch, 'utf8');
    if (used + n > max) break;
    out += ch;
    used += n;
  }
  return out;
}
