import { LIMITS } from '../limits.ts';

/**
 * A file name given by a device is data, never a path. It is accepted only if it names a single
 * entry of one folder on every platform we store to: no separators (`/`, `\`), no `.`/`..`, no
 * leading dot (hidden files), no control characters (C0, DEL or C1), no `:` (NTFS streams, drive letters), no
 * trailing dot or space (which Windows strips, making two names collide), no invisible format
 * characters (bidi controls, zero-width and tag characters), nothing but well-formed Unicode in
 * normal form C.
 *
 * Returns the reason it is refused, or undefined when it is safe.
 */
/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
/**
 * Unicode's format characters (\p{Cf}) but ZWNJ and ZWJ (U+200C, U+200D). They show nothing, or
 * rearrange what is around them: a bidi override or isolate (U+202A–U+202E, U+2066–U+2069, U+200E,
 * U+200F, U+061C) makes `ls`, a file manager or a log reader show "report\u202efdp.exe" as
 * "reportexe.pdf", and a zero-width space, a byte order mark, a soft hyphen or a tag character
 * makes a name look like another one in the folder. ZWNJ and ZWJ are kept: Persian and Indic
 * words are spelled with them, and emoji sequences joined by them.
 */
const FORMAT_CHARACTER = /(?![\u200c\u200d])\p{Cf}/u;

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
  const format = FORMAT_CHARACTER.exec(name);
  if (format) return `contains an invisible format character (U+${format[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}: a bidi control, a zero-width or tag character)`;
  if (name.normalize('NFC') !== name) return 'is not in Unicode normal form C';
  return undefined;
}
