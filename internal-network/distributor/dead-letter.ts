import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { FieldStreamError } from '../../shared/errors.ts';
import { LineFile } from '../../shared/line-file.ts';

/**
 * Messages that can never be written (an invalid envelope, a refused file name, data the database
 * rejects permanently) are kept here, whole, before the broker is acknowledged: nothing that was
 * acknowledged is thrown away, and a retry loop cannot block the pipeline forever.
 * One JSON line per message in DIR/YYYY-MM-DD.jsonl, one letter at a time (the consumers share
 * this object, and a file's envelope is several MB: line-file.ts).
 *
 * Replicas sharing the folder (`--scale distributor=N`) write files of their own, named after their
 * slot of the state folder (state-lease.ts): DIR/YYYY-MM-DD.slot-N.jsonl for slot N > 1. In one
 * file, a replica killed mid-letter would leave a torn line that another, which last saw the file
 * end whole, would glue its next letter to; and appends from several hosts are not atomic on NFS.
 */
export class DeadLetters {
  private readonly file = new LineFile(0o640);
  private readonly suffix: string;

  constructor(
    private readonly dir: string,
    slot = 1,
  ) {
    mkdirSync(dir, { recursive: true });
    this.suffix = slot === 1 ? '.jsonl' : `.slot-${slot}.jsonl`;
  }

  put(topic: string, payload: Buffer, err: FieldStreamError): Promise<void> {
    const line = JSON.stringify({
      at: new Date().toISOString(),
      code: err.code,
      message: err.message,
      topic,
      payloadBase64: payload.toString('base64'),
    });
    return this.file.append(join(this.dir, `${new Date().toISOString().slice(0, 10)}${this.suffix}`), `${line}\n`);
  }

  /** Waits for the letters being written and closes the day's file. */
  close(): Promise<void> {
    return this.file.end();
  }
}
