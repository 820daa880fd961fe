/**
 * Text a command line tool writes to the operator's terminal, made unable to drive that terminal.
 *
 * What the tools print holds text others chose: a gateway's welcome, error frame or close reason
 * (`fieldstream doctor`, `fieldstream status`: a compromised DMZ server writes them), a database's
 * answer or a stored file's name (`fieldstream-admin dead-letters replay`). A control character in
 * it reaches the terminal as a command: ESC or C1's CSI (U+009B, taken by xterm in UTF-8 too)
 * starts a sequence that moves the cursor over lines already printed (a failed check rewritten
 * as ✔), sets the window title or, through OSC 52, the clipboard. Bidirectional overrides and
 * isolates reorder what follows them on a terminal that applies the bidi algorithm.
 *
 * Each such character is written as the six characters `\uXXXX`: visible, and inside a JSON
 * string (the only place one can be in JSON.stringify's output) the same value when parsed.
 * A line feed is kept where the text is lines (`lines`), a tab too; elsewhere both are escaped,
 * so that one value cannot start a line of its own.
 */

// eslint-disable-next-line no-control-regex
const IN_LINES = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
// eslint-disable-next-line no-control-regex
const IN_A_LINE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

const escaped = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/** `text` with every character that could drive a terminal escaped (see above); `lines`: line feeds and tabs kept. */
export function terminalText(text: string, lines = false): string {
  return text.replace(lines ? IN_LINES : IN_A_LINE, escaped);
}
