/**
 * Values as fields of COPY's text format (PostgreSQL docs, COPY, "Text Format"): fields separated
 * by a tab, rows ended by a newline, `\N` for NULL, and a backslash escaping the delimiter, the
 * newline, the carriage return and itself. Nothing else needs escaping: a `\.` line cannot occur,
 * since every backslash of the data is doubled.
 *
 * Two things PostgreSQL's text cannot hold, U+0000 and a lone UTF-16 surrogate, are not refused
 * here but handed to the server in a form it refuses (SQLSTATE 22021, class 22): U+0000 as the
 * octal escape `\000` (three digits, so that a digit after it is not read into it), a lone
 * surrogate as the octal escapes of its three bytes, which are not UTF-8 (RFC 3629 §3 excludes
 * U+D800–U+DFFF). The server stays the one judge of what it cannot store, so
 * the batch is DISTRIBUTOR_WRITE_REJECTED exactly as with any other value it refuses, and a
 * surrogate is never silently turned into U+FFFD (which encoding the string as UTF-8 would do).
 * Inside JSON (the jsonb columns) JSON.stringify already writes both as `\u` escapes, which jsonb
 * refuses (SQLSTATE 22P05).
 */

const ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r', '\0': '\\000' };
/** With the u flag, `\p{Cs}` matches only a surrogate that is not half of a pair. */
const SPECIAL = /[\\\t\n\r\0]|\p{Cs}/u;
const SPECIALS = /[\\\t\n\r\0]|\p{Cs}/gu;

function escapeOne(c: string): string {
  const e = ESCAPES[c];
  if (e !== undefined) return e;
  // A lone surrogate: the three bytes UTF-8's scheme would give its code point, as octal escapes.
  const cp = c.charCodeAt(0);
  const bytes = [0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)];
  return bytes.map((b) => `\\${b.toString(8)}`).join('');
}

/** A string as one field of COPY's text format. */
export function copyText(s: string): string {
  return SPECIAL.test(s) ? s.replace(SPECIALS, escapeOne) : s;
}

/**
 * A value as one field: null and undefined as NULL (as JSON would leave them out), a string
 * escaped, a number in JavaScript's shortest round-trip form (NULL when not finite, as
 * JSON.stringify writes it), an object or array as its JSON text, escaped.
 */
export function copyField(v: unknown): string {
  if (v === null || v === undefined) return '\\N';
  switch (typeof v) {
    case 'string':
      return copyText(v);
    case 'number':
      return Number.isFinite(v) ? String(v) : '\\N';
    case 'boolean':
      return v ? 't' : 'f';
    case 'bigint':
      return v.toString();
    default:
      return copyText(JSON.stringify(v));
  }
}

/** Rows as the text COPY … FROM STDIN reads: one line per row, each ended by a newline. */
export function copyRows(rows: readonly (readonly unknown[])[]): string {
  let out = '';
  for (const row of rows) {
    for (let i = 0; i < row.length; i++) out += (i === 0 ? '' : '\t') + copyField(row[i]);
    out += '\n';
  }
  return out;
}
