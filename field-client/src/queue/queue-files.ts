import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { readRegularFileSync, removeLeftAsideSync, replaceFileDurablySync } from '../../../shared/durable-fs.ts';
import type { Logger } from '../../../shared/logger.ts';

/**
 * The queue's watermark file beside its segments, ack.json (at or below it everything is gone for
 * good; meta.json, the epochs, is queue-epochs.ts's), and the names of its segments. What is read
 * back from disk is checked before it is believed.
 */
const AckFile = z.object({ watermark: z.number().int().nonnegative() });

export const SEGMENT_RE = /^seg-(\d{16})\.log$/;
export const segName = (firstSeq: number) => `seg-${String(firstSeq).padStart(16, '0')}.log`;

/** The persisted watermark; 0 (send everything again) when ack.json is missing or damaged. */
export function readWatermark(dir: string, log: Logger): number {
  const path = join(dir, 'ack.json');
  removeLeftAsideSync(path);
  if (!existsSync(path)) return 0;
  try {
    const ack = AckFile.safeParse(JSON.parse(readRegularFileSync(path, 'utf8')));
    if (ack.success) return ack.data.watermark;
  } catch {
    /* not JSON: as damaged as a wrong shape */
  }
  log.warn({ code: 'FIELD_QUEUE_CORRUPT' }, 'ack.json unreadable; unacknowledged data will be sent again from the oldest segment');
  return 0;
}

/**
 * writeWatermark that survives a power cut (the usual one does not fsync: losing a recent watermark
 * only sends again). Needed before anything is let go of for good on the watermark's word.
 */
export function writeWatermarkDurably(dir: string, watermark: number): void {
  replaceFileDurablySync(join(dir, 'ack.json'), JSON.stringify({ watermark }));
}

/** Written aside and renamed, so a crash leaves the old watermark or the new one, never half of one. */
export function writeWatermark(dir: string, watermark: number): void {
  const path = join(dir, 'ack.json');
  writeFileSync(`${path}.tmp`, JSON.stringify({ watermark }));
  renameSync(`${path}.tmp`, path);
}
