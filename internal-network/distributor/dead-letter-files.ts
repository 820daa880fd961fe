import { createHash } from 'node:crypto';
import { closeSync, constants, existsSync, fstatSync, openSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { appendLinesSync, closeFailedOnStderr, readLinesSync } from '../../shared/line-file.ts';
import { carriesOnlyTheDmzWord, DeadLetterSchema, isUnparsable, LETTER_FILE, type DeadLetter } from './dead-letter.ts';

/**
 * The dead-letter folder as `fieldstream-admin dead-letters` reads it: its files of letters, line
 * by line, and its record of the letters replayed (dead-letter-replay.ts).
 *
 * The letter files are never changed here: the distributor may be appending to them. Which letters
 * were written is recorded in DIR/replayed.jsonl (the file's name and the SHA-256 of the letter's
 * line), appended and fsynced after each letter's write.
 */

export const REPLAYED_FILE = 'replayed.jsonl';

/** One line of DIR/replayed.jsonl. */
const ReplayedSchema = z.object({ at: z.string(), file: z.string(), sha256: z.string().regex(/^[0-9a-f]{64}$/) });

/**
 * The longest line of a letter: the largest the distributor writes (LIMITS.deadLetterLetterMaxBytes:
 * a payload of the largest MQTT packet, or a gateway's section written out larger than it came, in
 * base64, and the rest of its line). A bound of the packet alone read such a letter, kept and
 * receipted, as a damaged line that no replay would ever write.
 */
const LETTER_LINE_MAX_BYTES = LIMITS.deadLetterLetterMaxBytes;

/** A letter as read from its file: where it is, and what it is (undefined: the line is not a letter). */
export interface ReadLetter {
  file: string;
  /** 1-based */
  line: number;
  sha256: string;
  letter: DeadLetter | undefined;
}

const cannotRead = (path: string, why: string, cause?: unknown) =>
  new FieldStreamError('DEAD_LETTERS_UNREADABLE', `Cannot read ${path} (${why}): the distributor writes only regular files there; move it away and run again.`, undefined, cause === undefined ? undefined : { cause });

/**
 * The lines of a file of the folder, or DEAD_LETTERS_UNREADABLE naming it: a folder, a FIFO or a
 * link in the place of a letter file (or of replayed.jsonl) crashed the command with a bare EISDIR,
 * or blocked it for good in open(2), and an I/O error while reading came out without a code.
 * Opened without following a link and without blocking, and checked to be a regular file first.
 */
function* linesOf(path: string, maxLineBytes: number): Generator<string | undefined> {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    throw cannotRead(path, (err as NodeJS.ErrnoException).code === 'ELOOP' ? 'a symbolic link' : ((err as NodeJS.ErrnoException).code ?? (err as Error).message), err);
  }
  try {
    if (!fstatSync(fd).isFile()) throw cannotRead(path, 'not a regular file');
  } finally {
    closeSync(fd);
  }
  const lines = readLinesSync(path, maxLineBytes);
  for (;;) {
    let next: IteratorResult<string | undefined>;
    try {
      next = lines.next();
    } catch (err) {
      throw cannotRead(path, (err as NodeJS.ErrnoException).code ?? (err as Error).message, err);
    }
    if (next.done) return;
    yield next.value;
  }
}

/** The letters of the folder, file by file (by name: by day), line by line. */
export function* readLetters(dir: string): Generator<ReadLetter> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new FieldStreamError('DEAD_LETTERS_NOT_FOUND', `No dead-letter folder at ${dir} (DEAD_LETTER_PATH, or --dead-letters).`);
  for (const file of readdirSync(dir).filter((f) => LETTER_FILE.test(f)).sort()) {
    let line = 0;
    for (const text of linesOf(join(dir, file), LETTER_LINE_MAX_BYTES)) {
      line++;
      if (text === '') continue;
      const sha256 = text === undefined ? '' : createHash('sha256').update(text).digest('hex');
      yield { file, line, sha256, letter: text === undefined ? undefined : parseLetter(text) };
    }
  }
}

function parseLetter(text: string): DeadLetter | undefined {
  try {
    const parsed = DeadLetterSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Why a replay cannot write from a letter, or undefined when it holds data a replay writes (a
 * device's data, a file included, whole, that passed the contract; its signatures are checked
 * then, and a file's storage answers for it). A presence or a gateway's security report of up to 4 KiB is kept whole but is the DMZ's
 * unsigned word, not replayed; counted as data, `list` showed letters no replay would ever write,
 * and a file whose letters with data must all be replayed before it may be removed never could be.
 */
export function notReplayableWhy(l: DeadLetter): string | undefined {
  if (l.payloadBase64 === undefined) return 'only an excerpt of an invalid payload is kept';
  if (isUnparsable(l)) return `its payload is not a valid message (${l.code}): nothing in it can be written`;
  if (carriesOnlyTheDmzWord(l.topic)) return "a presence or a gateway's security report, the DMZ's unsigned word: kept whole to look at, not replayed";
  return undefined;
}

/** Whether a letter keeps data a replay writes (see {@link notReplayableWhy}). */
export const holdsData = (l: DeadLetter) => notReplayableWhy(l) === undefined;

/**
 * Whether the distributor may still be appending to the file: today's (its name begins with the
 * UTC date, by this machine's clock) or changed within LIMITS.deadLetterFileInUseMs (around
 * midnight, or with the distributor's clock apart from this one's).
 */
export function inUse(file: string, modifiedMs: number, now = Date.now()): boolean {
  return file.startsWith(new Date(now).toISOString().slice(0, 10)) || now - modifiedMs < LIMITS.deadLetterFileInUseMs;
}

/** DIR/replayed.jsonl: the letters replayed before, and a letter's record once it is written. */
export class ReplayLedger {
  private readonly path: string;
  private readonly done = new Set<string>();
  /** the record file's name synced by this process (appendLinesSync) */
  private readonly named = new Set<string>();

  /** A torn last line (a kill while appending) is no record: its letter is replayed again, the same points. */
  constructor(dir: string) {
    this.path = join(dir, REPLAYED_FILE);
    if (!existsSync(this.path)) return;
    for (const text of linesOf(this.path, 4096)) {
      if (!text) continue;
      try {
        const r = ReplayedSchema.safeParse(JSON.parse(text));
        if (r.success) this.done.add(key(r.data.file, r.data.sha256));
      } catch {
        // not a record: skipped
      }
    }
  }

  has(r: Pick<ReadLetter, 'file' | 'sha256'>): boolean {
    return this.done.has(key(r.file, r.sha256));
  }

  /**
   * Appends the letter's record and fsyncs it (and, for a new file, its name), on a line of its own
   * (line-file.ts appendLinesSync): glued to a line a killed run left torn, the record was unreadable
   * too, and its letter counted as not replayed.
   */
  record(r: Pick<ReadLetter, 'file' | 'sha256'>): void {
    closeFailedOnStderr(this.path, appendLinesSync(this.path, `${JSON.stringify({ at: new Date().toISOString(), file: r.file, sha256: r.sha256 } satisfies z.infer<typeof ReplayedSchema>)}\n`, 0o640, this.named));
    this.done.add(key(r.file, r.sha256));
  }
}

const key = (file: string, sha256: string) => `${file}\u0000${sha256}`;

/** Per file: its letters by code, how many hold their payload whole, how many were replayed. */
export interface LetterFileSummary {
  file: string;
  bytes: number;
  /** the distributor may still be appending to it (inUse): never to be removed */
  inUse: boolean;
  letters: number;
  byCode: Record<string, number>;
  /** letters whose payload is whole and holds data (what a replay can write) */
  withData: number;
  /** letters written whole by a replay */
  replayed: number;
  /** lines that are not letters (a torn last line after a crash, a damaged file, a line being appended) */
  unreadable: number;
}

export function summarizeLetters(dir: string): LetterFileSummary[] {
  const ledger = new ReplayLedger(dir);
  const files = new Map<string, LetterFileSummary>();
  for (const r of readLetters(dir)) {
    let s = files.get(r.file);
    if (!s) {
      const st = statSync(join(dir, r.file));
      files.set(r.file, (s = { file: r.file, bytes: st.size, inUse: inUse(r.file, st.mtimeMs), letters: 0, byCode: {}, withData: 0, replayed: 0, unreadable: 0 }));
    }
    if (!r.letter) {
      s.unreadable++;
      continue;
    }
    s.letters++;
    s.byCode[r.letter.code] = (s.byCode[r.letter.code] ?? 0) + 1;
    if (holdsData(r.letter)) s.withData++;
    if (ledger.has(r)) s.replayed++;
  }
  return [...files.values()];
}
