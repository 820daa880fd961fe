/**
 * What JSON.parse would build of a text, bounded before it builds it. JSON.parse makes every value
 * of a text at once, and only then can a schema refuse them: 16 MiB of `{"a":[{},{},…]}` is 5.6
 * million objects (360 MB of heap, 64 bytes each against the 3 bytes of text, measured on Node 20),
 * of `{"a":[0,0,…]}` 8 million values, where no legal envelope holds more than some 300,000
 * (LIMITS.envelopeMaxValues). One pass over the bytes counts them first.
 *
 * Nesting needs no bound of its own here: V8's JSON.parse does not recurse (100,000 levels parse),
 * the count bounds the containers, and what walks a value of free form bounds its depth first
 * (LIMITS.jsonMaxDepth, payloads.ts JsonValueSchema).
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
/** Bytes of a string looked at one by one before the rest of it is searched (Buffer.indexOf). */
const SHORT_STRING_BYTES = 32;
/** What each byte is outside strings: 0 nothing counted (most: digits, letters), 1 a quote, 2 counted. */
const KIND = new Uint8Array(256);
KIND[QUOTE] = 1;
KIND[COMMA] = 2;
KIND[OPEN_BRACE] = 2;
KIND[OPEN_BRACKET] = 2;

/**
 * Whether the JSON text in `bytes` holds more than `max` values and containers, counted as each
 * `{`, `[` and `,` outside strings: each value after the first of an array or object follows a
 * comma, so this is at least the values less one, and at most the values and containers together.
 * A text that is no JSON at all is counted as well as it can be (JSON.parse refuses it after).
 *
 * Each counted character is a byte: a text of at most `max` bytes is not looked at (a legal
 * envelope of 100 KB costs one comparison). A longer one is counted up to the first count past
 * `max`, so a hostile text costs no more than one of that size. Strings are skipped byte by byte
 * while they are short (keys, ids), then by Buffer.indexOf (native): base64 of files, long texts.
 */
export function holdsMoreValuesThan(bytes: Buffer, max: number): boolean {
  return countsPast(bytes, max, KIND);
}

/** What each byte is outside strings for holdsMoreContainersThan: a quote, or `{` and `[` counted. */
const CONTAINER_KIND = new Uint8Array(256);
CONTAINER_KIND[QUOTE] = 1;
CONTAINER_KIND[OPEN_BRACE] = 2;
CONTAINER_KIND[OPEN_BRACKET] = 2;

/**
 * Whether the JSON text in `bytes` holds more than `max` objects and arrays (each `{` and `[`
 * outside strings), counted as holdsMoreValuesThan counts. For texts whose every legal form holds
 * few containers (a local input's readings: an array of flat objects): JSON.parse makes containers
 * at some 300 ns each, nested ones slower still, so 8 MiB of `[[[[…` held the event loop 2 s where
 * 8 MiB of legal readings take a tenth of that.
 */
export function holdsMoreContainersThan(bytes: Buffer, max: number): boolean {
  return countsPast(bytes, max, CONTAINER_KIND);
}

/** Whether more than `max` bytes of the kind 2 in `kinds` are outside the strings of `bytes` (1: a quote). */
function countsPast(bytes: Buffer, max: number, kinds: Uint8Array): boolean {
  const n = bytes.length;
  if (n <= max) return false;
  let values = 0;
  for (let i = 0; i < n; i++) {
    const kind = kinds[bytes[i] as number];
    if (kind === 0) continue;
    if (kind === 1) {
      const stop = Math.min(n, i + 1 + SHORT_STRING_BYTES);
      let j = i + 1;
      for (; j < stop; j++) {
        const d = bytes[j] as number;
        if (d === QUOTE) break;
        if (d === BACKSLASH) j++;
      }
      if (j < stop) {
        i = j;
        continue;
      }
      // A long string: its end is the next quote after an even run of backslashes (none escaping
      // it). The run cannot reach past the string's opening quote.
      for (let from = j; ; ) {
        const at = bytes.indexOf(QUOTE, from);
        if (at < 0) return false; // unterminated: no JSON, JSON.parse refuses it
        let backslashes = 0;
        while (bytes[at - 1 - backslashes] === BACKSLASH) backslashes++;
        if (backslashes % 2 === 0) {
          i = at;
          break;
        }
        from = at + 1;
      }
    } else if (++values > max) return true;
  }
  return false;
}
