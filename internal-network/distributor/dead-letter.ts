import { createHash } from 'node:crypto';

import { readdirSync, statSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { LineFile } from '../../shared/line-file.ts';
import { parseTopic } from '../../shared/contract/topics.ts';
import { makeDirDurablySync } from '../../shared/durable-fs.ts';

/**
 * One line of a dead-letter file, as written below and read back (dead-letter-replay.ts). A letter
 * with data holds its payload whole (`payloadBase64`); of an invalid payload, a small one is whole
 * too and a larger one only its head (`truncated`, `payloadHeadBase64`), with its size and SHA-256.
 */
export const DeadLetterSchema = z.object({
  /** ISO 8601: when it was kept */
  at: z.string(),
  code: z.string(),
  message: z.string(),
  topic: z.string(),
  payloadBase64: z.string().optional(),
  payloadBytes: z.number().int().nonnegative().optional(),
  sha256: z.string().optional(),
  truncated: z.literal(true).optional(),
  payloadHeadBase64: z.string().optional(),
});
export type DeadLetter = z.infer<typeof DeadLetterSchema>;

/** The length of the base64 text of `bytes` bytes (padded). */
const base64Length = (bytes: number) => 4 * Math.ceil(bytes / 3);

/** The files letters are written to: DIR/YYYY-MM-DD.jsonl, DIR/YYYY-MM-DD.slot-N.jsonl. */
export const LETTER_FILE = /^\d{4}-\d{2}-\d{2}(\.slot-\d+)?\.jsonl$/;

/** What became of a letter: kept whole, kept as an excerpt, or not kept (why). */
export type DeadLetterOutcome = 'whole' | 'excerpt' | 'over-bound' | 'write-failed';

export interface DeadLetterBounds {
  /** bytes the folder may hold on disk, all its files (DEAD_LETTER_MAX_BYTES) */
  maxBytes: number;
  /** fraction of maxBytes letters of invalid payloads may be written within */
  unparsableShare?: number;
  /** bytes of an invalid payload kept */
  excerptBytes?: number;
}

/**
 * A letter whose error is a CONTRACT_* code holds a payload that is not a valid FieldStream message
 * for its topic (not JSON, not an envelope, an envelope that disagrees with its topic): nothing in
 * it can be written or replayed, and no device was sent a receipt for it (MessageHandler
 * deadLetterReceipts answers none), so its device, if any, still holds its copy. The other letters
 * (the database refused valid data for good, DISTRIBUTOR_WRITE_REJECTED; a refused file) hold data
 * whose device may have been told it is durable: they are kept whole or not acknowledged at all.
 */
export function isUnparsable(err: { code: string }): boolean {
  return err.code.startsWith('CONTRACT_');
}

/**
 * Whether a message on `topic` carries only the DMZ's word: a device's or a gateway's presence, a
 * gateway's security report. None is signed by a device, none is named by a commit receipt, so
 * nothing a device holds depends on it being kept, and a compromised DMZ can publish them without
 * end. One the database refuses (a date older than its retention policy, its series limit reached)
 * is kept as an invalid payload is, within that share of the bound: kept as data, a flood of them
 * filled the folder and the consumer that met the next one stalled, for every gateway.
 */
export function carriesOnlyTheDmzWord(topic: string): boolean {
  try {
    const kind = parseTopic(topic).kind;
    return kind === 'status' || kind === 'gatewayPresence' || kind === 'gatewaySecurity';
  } catch {
    return false;
  }
}

/**
 * Messages that can never be written (an invalid envelope, a refused file name, data the database
 * rejects permanently) are kept here before the broker is acknowledged: nothing that was
 * acknowledged with data in it is thrown away, and a retry loop cannot block the pipeline forever.
 * One JSON line per message in DIR/YYYY-MM-DD.jsonl, one letter at a time (the consumers share
 * this object, and a file's envelope is several MB: line-file.ts).
 *
 * The folder is bounded (`maxBytes`, all its files on disk). The choice made at the bound, so that
 * a flood cannot fill the disk and nothing acknowledged is lost:
 * - an invalid payload (isUnparsable), or one that carries only the DMZ's word whatever became of
 *   it (carriesOnlyTheDmzWord), is kept as its first `excerptBytes`, its size and SHA-256,
 *   and only while the folder holds less than `unparsableShare` of the bound; past that it is not
 *   kept (the caller counts it, logs it now and then, and acknowledges it: see isUnparsable).
 * - a letter with data is kept whole anywhere within the bound; past it, put throws
 *   DISTRIBUTOR_DEAD_LETTERS_FULL and the caller does not acknowledge the message: it stays in the
 *   broker, the device keeps its copy, and that connection waits until an operator makes room.
 *   Availability of one consumer connection is given up rather than acknowledged data. A letter
 *   larger than the whole bound is DISTRIBUTOR_DEAD_LETTER_TOO_LARGE, handled the same way but
 *   until the bound is raised (the configuration refuses a bound that small).
 *
 * Replicas sharing the folder (`--scale distributor=N`) write files of their own, named after their
 * slot of the state folder (state-lease.ts): DIR/YYYY-MM-DD.slot-N.jsonl for slot N > 1. In one
 * file, a replica killed mid-letter would leave a torn line that another, which last saw the file
 * end whole, would glue its next letter to; and appends from several hosts are not atomic on NFS.
 * Each measures the whole folder (the others' files too), again at most once a second when a letter
 * would pass a bound (TIMINGS.deadLetterRescanMs), so what an operator removed is seen.
 */
export class DeadLetters {
  private readonly file = new LineFile(0o640);
  private readonly suffix: string;
  private readonly bounds: Required<DeadLetterBounds>;
  /** bytes on disk in the folder, as last measured plus what this process appended since */
  private bytes: number;
  private measuredAt = -Infinity;
  /** bytes of letters let in and still being written: the consumers put letters at once */
  private pending = 0;
  /** bytes of letters this process wrote, all told (measure adds those written while it reads the folder) */
  private appended = 0;

  constructor(
    private readonly dir: string,
    slot = 1,
    bounds: DeadLetterBounds = { maxBytes: LIMITS.deadLetterMaxBytes },
  ) {
    makeDirDurablySync(dir);
    this.suffix = slot === 1 ? '.jsonl' : `.slot-${slot}.jsonl`;
    this.bounds = { unparsableShare: LIMITS.deadLetterUnparsableShare, excerptBytes: LIMITS.deadLetterExcerptBytes, ...bounds };
    // Measured at once, not at the first letter: the folder may hold an earlier run's letters, and
    // distributor_dead_letter_bytes read 0 for a folder close to its bound until a letter came.
    this.measuredAt = Date.now();
    let total = 0;
    for (const name of readdirSync(dir)) {
      try {
        const s = statSync(join(dir, name));
        if (s.isFile()) total += s.size;
      } catch {
        /* gone meanwhile */
      }
    }
    this.bytes = total;
  }

  /** The folder's bound (DEAD_LETTER_MAX_BYTES): distributor_dead_letter_limit_bytes, for the alerts on its filling. */
  get maxBytes(): number {
    return this.bounds.maxBytes;
  }

  /** Bytes the folder holds (as last measured, at the start and when a letter would pass a bound, plus this process's letters since). */
  get heldBytes(): number {
    return this.bytes;
  }

  /**
   * Bytes the folder holds, measured again when last measured TIMINGS.deadLetterRescanMs ago or
   * more (what distributor_dead_letter_bytes reads at a scrape). Measured only at the start and when
   * a letter would pass a bound, the gauge kept what a folder an operator cleared held before, and
   * the alerts on it (FieldStreamDeadLetterFolderFilling, ...NearlyFull) firing, until the next letter.
   */
  async measuredBytes(): Promise<number> {
    if (Date.now() - this.measuredAt >= TIMINGS.deadLetterRescanMs) await this.measure();
    return this.bytes;
  }

  /**
   * Keeps a letter. Resolves with what became of it; throws DISTRIBUTOR_DEAD_LETTERS_FULL for a
   * letter with data past the bound, DISTRIBUTOR_DEAD_LETTER_TOO_LARGE for one larger than the
   * whole bound, and an I/O error for a letter with data that could not be written (all three: do
   * not acknowledge). An invalid payload that could not be written resolves
   * 'write-failed': it holds nothing to lose, and a full disk must not stop ingestion.
   */
  async put(topic: string, payload: Buffer, err: FieldStreamError): Promise<DeadLetterOutcome> {
    const unparsable = isUnparsable(err) || carriesOnlyTheDmzWord(topic);
    const message = err.message.slice(0, LIMITS.deadLetterMessageMaxChars);
    const letter: DeadLetter = { at: new Date().toISOString(), code: err.code, message, topic, ...(unparsable ? this.excerpt(payload) : { payloadBase64: '' }) };
    // A whole payload's base64 text (4/3 of a payload of up to 16 MiB) is made only when its turn to
    // be written comes (LineFile.append): made here, every consumer's letter held its text while
    // waiting for the others' writes. Base64 needs no escaping in JSON, so its line's size is known
    // without it, exactly.
    const size = Buffer.byteLength(`${JSON.stringify(letter)}\n`) + (unparsable ? 0 : base64Length(payload.length));
    const line = unparsable ? `${JSON.stringify(letter)}\n` : () => `${JSON.stringify({ ...letter, payloadBase64: payload.toString('base64') })}\n`;
    if (!unparsable && size > this.bounds.maxBytes) {
      // No room an operator makes can ever hold it: not "full", which would have them free room in
      // vain. It holds data, so it is never dropped either: its message stays unacknowledged, in
      // the broker, until the bound is raised (the configuration takes no bound under
      // LIMITS.deadLetterLetterMaxBytes, the largest letter, so this is a defence in depth).
      throw new FieldStreamError('DISTRIBUTOR_DEAD_LETTER_TOO_LARGE', `A dead letter of ${size} bytes can never fit the dead-letter folder's bound of ${this.bounds.maxBytes} bytes (DEAD_LETTER_MAX_BYTES); raise it to at least ${Math.max(size, LIMITS.deadLetterLetterMaxBytes)}`, {
        maxBytes: this.bounds.maxBytes,
        letterBytes: size,
      });
    }
    const room = unparsable ? this.bounds.maxBytes * this.bounds.unparsableShare : this.bounds.maxBytes;
    if (!(await this.fits(size, room))) {
      if (unparsable) return 'over-bound';
      throw new FieldStreamError('DISTRIBUTOR_DEAD_LETTERS_FULL', `The dead-letter folder ${this.dir} holds ${this.bytes} of its ${this.bounds.maxBytes} bytes; a letter of ${size} bytes waits for room`, {
        heldBytes: this.bytes,
        maxBytes: this.bounds.maxBytes,
        letterBytes: size,
      });
    }
    this.pending += size;
    try {
      await this.file.append(join(this.dir, `${new Date().toISOString().slice(0, 10)}${this.suffix}`), line);
    } catch (ioErr) {
      // Some of it may be on disk (a torn line): measured again before the next letter is let in.
      this.measuredAt = -Infinity;
      if (unparsable) return 'write-failed';
      throw ioErr;
    } finally {
      this.pending -= size;
    }
    this.appended += size;
    this.bytes += size;
    return unparsable ? 'excerpt' : 'whole';
  }

  /** Waits for the letters being written and closes the day's file. */
  close(): Promise<void> {
    return this.file.end();
  }

  /** An invalid payload's letter: whole if small, else its first bytes; its size and SHA-256 always. */
  private excerpt(payload: Buffer): Pick<DeadLetter, 'payloadBytes' | 'sha256' | 'truncated' | 'payloadBase64' | 'payloadHeadBase64'> {
    const sha256 = createHash('sha256').update(payload).digest('hex');
    if (payload.length <= this.bounds.excerptBytes) return { payloadBytes: payload.length, sha256, payloadBase64: payload.toString('base64') };
    return { payloadBytes: payload.length, sha256, truncated: true, payloadHeadBase64: payload.subarray(0, this.bounds.excerptBytes).toString('base64') };
  }

  /** Whether `size` more bytes keep the folder within `room`, measuring it again if due. */
  private async fits(size: number, room: number): Promise<boolean> {
    if (this.bytes + this.pending + size > room && Date.now() - this.measuredAt >= TIMINGS.deadLetterRescanMs) await this.measure();
    return this.bytes + this.pending + size <= room;
  }

  private async measure(): Promise<void> {
    this.measuredAt = Date.now();
    const appendedBefore = this.appended;
    let total = 0;
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      const s = await stat(join(this.dir, name)).catch(() => undefined);
      if (s?.isFile()) total += s.size;
    }
    // Letters other consumers wrote while the folder was read: a file looked at before one went in
    // misses it, and the count would be short of it (the folder then taking that much past its
    // bound). Added: one the reading saw is counted twice until the next measure, never missed.
    this.bytes = total + (this.appended - appendedBefore);
  }
}
