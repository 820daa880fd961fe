import { join } from 'node:path';
import { appendLinesSync } from '../../shared/line-file.ts';
import type { QueuedMessage } from './queue/durable-queue.ts';

/**
 * Messages the gateway refused for good (they break the contract), set aside whole in
 * FIELD_DATA_DIR/rejected.jsonl: one JSON line each, with the gateway's code and the message as
 * queued, fsync'ed before the queue lets it go. So one bad message never blocks the queue, and a
 * refusal, even a forged one from a compromised DMZ, loses nothing: the message is on the
 * device's disk for its operator to look at (the field client's twin of the distributor's
 * dead-letter folder). Each refusal is appended whole, on lines of its own (line-file.ts).
 */
export class RejectedMessages {
  readonly path: string;
  private readonly named = new Set<string>();

  constructor(dataDir: string) {
    this.path = join(dataDir, 'rejected.jsonl');
  }

  put(messages: readonly QueuedMessage[], refusal: { code: string; message: string; messageIds: readonly string[] }): void {
    const at = new Date().toISOString();
    let text = '';
    for (const m of messages) text += JSON.stringify({ at, code: refusal.code, reason: refusal.message, message: m }) + '\n';
    // Chunks of a file have no queue record of their own: the refusal names them by id.
    if (messages.length === 0) text = JSON.stringify({ at, code: refusal.code, reason: refusal.message, messageIds: refusal.messageIds }) + '\n';
    appendLinesSync(this.path, text, 0o600, this.named);
  }
}
