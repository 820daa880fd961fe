import { LIMITS } from '../limits.ts';

/**
 * A file name given by a device is data, never a path. It is accepted only if it names a single
 * entry of one folder on every platform we store to: no separators (`/`, `\`), no `.`/`..`, no
 * leading dot (hidden files), no control characters (C0, DEL or C1), no `:` (NTFS streams, drive letters), no
 * trailing dot or space (which Windows strips, making two names collide), nothing but well-formed
 * Unicode in normal form C.
 *
 * Returns the reason it is refused, or undefined when it is safe.
 */
/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

export function unsafeFilenameReason(name: string): string | undefined {
  if (name.length === 0) return 'is empty';
  if (Buffer.byteLength(name, 'utf8') > LIMITS.filenameMaxBytes) return `is longer than ${LIMITS.filenameMaxBytes} bytes`;
  if (name === '.' || name === '..') return 'is a relative path';
  if (name.startsWith('.')) return 'starts with "."';
  if (/[/\\]/.test(name)) return 'contains a path separator';
  // C1 as well as C0 and DEL (Unicode's control characters, \p{Cc}): U+009B is CSI to a terminal
  // that takes 8-bit controls (xterm, in UTF-8 too), so a name printed by `ls`, a log reader or
  // `fieldstream-admin` could move the cursor, rewrite lines or set the window title.
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return 'contains a control character';
  if (name.includes(':')) return 'contains ":"';
  if (/[. ]$/.test(name)) return 'ends with "." or a space';
  // A lone surrogate (JSON's "\ud800" escapes one) is no character: written to disk as U+FFFD, the
  // name on disk is not the name recorded, and PostgreSQL refuses the record's text.
  if (LONE_SURROGATE.test(name)) return 'is not well-formed Unicode (a lone surrogate)';
  if (name.normalize('NFC') !== name) return 'is not in Unicode normal form C';
  return undefined;
}
