import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BenchContext } from '../lib/context.ts';
import { sleep } from '../lib/context.ts';
import type { FilesResult } from '../lib/results.ts';

const FILE_BYTES = 10 * 1024 * 1024;

/** Files of 10 MB from one device, sent in chunks, each compared byte for byte once stored. */
export async function fileTransfer(ctx: BenchContext, count: number): Promise<FilesResult> {
  const device = await ctx.fieldClient('files-0', 500);
  const sources = Array.from({ length: count }, (_, i) => {
    const path = join(ctx.work, `file-${i}.bin`);
    writeFileSync(path, randomBytes(FILE_BYTES));
    return path;
  });
  await sleep(300);
  const started = Date.now();
  for (const f of sources) await device.client.submitFile(f, { contentType: 'application/octet-stream' });
  const stored = join(ctx.stack.dataDir.files, 'files-0');
  const deadline = Date.now() + 300_000;
  const storedCount = () => {
    try {
      return readdirSync(stored).filter((n) => n.startsWith('file-')).length;
    } catch {
      return 0; // the device's folder is made with its first file
    }
  };
  while (storedCount() < count && Date.now() < deadline) await sleep(50);
  const seconds = (Date.now() - started) / 1000;
  await device.close();
  for (const [i, f] of sources.entries()) {
    if (!readFileSync(f).equals(readFileSync(join(stored, `file-${i}.bin`)))) throw new Error(`file ${i} differs`);
  }
  return { scenario: 'files of 10 MB', clients: 1, readings: count, seconds, mbPerSecond: Math.round(((count * 10) / seconds) * 10) / 10, lost: 0, duplicated: 0 };
}
