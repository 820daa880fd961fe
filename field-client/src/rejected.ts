import { lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { LIMITS } from '../../shared/limits.ts';
import { appendLinesSync } from '../../shared/line-file.ts';
import type { Logger } from '../../shared/logger.ts';
import type { QueuedMessage } from './queue/durable-queue.ts';

/** The gateway's refusal of messages it named, as kept beside each of them. */
export interface Refusal {
  code: string;
  message: string;
  messageIds: readonly string[];
}

/**
 * Messages the gateway refused for good (they break the contract), set aside whole in
 * FIELD_DATA_DIR/rejected.jsonl: one JSON line each, with the gateway's code and the message as
 * queued, fsync'ed before the queue lets it go. So one bad message never blocks the queue, and a
 * refusal, even a forged one from a compromised DMZ, loses nothing: the message is on the
 * device's disk for its operator to look at (the field client's twin of the distributor's
 * dead-letter folder). Each refusal is appended whole, on lines of its own (line-file.ts).
 *
 * What is set aside here and in FIELD_DATA_DIR/rejected/ (whole files refused, files/file-outbox.ts)
 * counts against FIELD_QUEUE_MAX_BYTES with the queue and the outbox: otherwise a DMZ forging
 * refusals of everything would move all the device takes in here and free the queue for more, until
 * the disk is full. Whether there is room is the caller's to decide (field-client.ts); this keeps
 * the size, measured again from the disk on request, as the operator moves the files away.
 */
export class RejectedMessages {
  readonly path: string;
  private readonly named = new Set<string>();
  private size: number;

  constructor(
    private readonly dataDir: string,
    private readonly log?: Logger,
  ) {
    this.path = join(dataDir, 'rejected.jsonl');
    // What earlier runs set aside counts from the start.
    this.size = rejectedBytes(dataDir);
  }

  /** bytes set aside, as last measured or written */
  get bytes(): number {
    return this.size;
  }

  /** Measures again from the disk (what the operator moved or deleted is room again); returns the bytes. */
  measure(): number {
    this.size = rejectedBytes(this.dataDir);
    return this.size;
  }

  /**
   * The line that sets one message aside. The gateway's reason is cut to
   * LIMITS.rejectedReasonMaxChars: it is the DMZ's text, repeated on every line of its refusal.
   */
  line(m: QueuedMessage, refusal: Refusal, at: string): string {
    return JSON.stringify({ at, code: refusal.code, reason: refusal.message.slice(0, LIMITS.rejectedReasonMaxChars), message: m }) + '\n';
  }

  /** Appends lines (each from `line`) whole and synced; throws when the disk refuses them (then none counts as written). */
  write(lines: string): void {
    const closeFailed = appendLinesSync(this.path, lines, 0o600, this.named);
    // Synced, then the close failed (NFS): the lines are on the disk, so the messages count as set aside.
    if (closeFailed) this.log?.warn({ code: 'FILE_CLOSE_FAILED', err: closeFailed.message, path: this.path }, 'rejected.jsonl synced, its close failed; the messages count as set aside');
    this.size += Buffer.byteLength(lines, 'utf8');
  }

  put(messages: readonly QueuedMessage[], refusal: Refusal): void {
    const at = new Date().toISOString();
    let text = '';
    for (const m of messages) text += this.line(m, refusal, at);
    // Chunks of a file have no queue record of their own: the refusal names them by id.
    if (messages.length === 0) text = JSON.stringify({ at, code: refusal.code, reason: refusal.message.slice(0, LIMITS.rejectedReasonMaxChars), messageIds: refusal.messageIds }) + '\n';
    this.write(text);
  }
}

/**
 * bytes. What is set aside in `dataDir`: rejected.jsonl and every file under rejected/ (also in
 * folders the operator made there). Links are not followed: only what is in the data folder counts.
 * A file removed while this looks is not counted.
 */
export function rejectedBytes(dataDir: string): number {
  const sizeOf = (path: string) => {
    try {
      const st = lstatSync(path);
      return st.isFile() ? st.size : 0;
    } catch {
      return 0;
    }
  };
  let n = sizeOf(join(dataDir, 'rejected.jsonl'));
  let entries;
  try {
    entries = readdirSync(join(dataDir, 'rejected'), { withFileTypes: true, recursive: true });
  } catch {
    return n; // no folder: nothing refused whole yet
  }
  for (const e of entries) if (e.isFile()) n += sizeOf(join(e.parentPath, e.name));
  return n;
}
