import { mkdirSync } from 'node:fs';
import { appendFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import type { FieldStreamError } from '../../shared/errors.ts';

/**
 * Messages that can never be written (an invalid envelope, a refused file name, data the database
 * rejects permanently) are kept here, whole, before the broker is acknowledged: nothing that was
 * acknowledged is thrown away, and a retry loop cannot block the pipeline forever.
 * One JSON line per message in DIR/YYYY-MM-DD.jsonl.
 */
export class DeadLetters {
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  async put(topic: string, payload: Buffer, err: FieldStreamError): Promise<void> {
    const file = join(this.dir, `${new Date().toISOString().slice(0, 10)}.jsonl`);
    const line = JSON.stringify({
      at: new Date().toISOString(),
      code: err.code,
      message: err.message,
      topic,
      payloadBase64: payload.toString('base64'),
    });
    await appendFile(file, line + '\n', { mode: 0o640 });
    const fh = await open(file, 'r');
    try {
      await fh.datasync();
    } finally {
      await fh.close();
    }
  }
}
