import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { FieldStreamError } from '../../../shared/errors.ts';
import type { Logger } from '../../../shared/logger.ts';

/**
 * The queue's small state files beside its segments: meta.json (the epoch that makes message ids
 * stable across restarts) and ack.json (the watermark below which everything is gone for good).
 * Both are read back from disk, so both are checked before they are believed.
 */
const MetaFile = z.object({ epoch: z.string().min(1).max(64) });
const AckFile = z.object({ watermark: z.number().int().nonnegative() });

export const SEGMENT_RE = /^seg-(\d{16})\.log$/;
export const segName = (firstSeq: number) => `seg-${String(firstSeq).padStart(16, '0')}.log`;

/** The queue's epoch, made on first use. A damaged meta.json stops the queue: a new epoch would give
 * the messages still queued new ids, and the receiving side could no longer recognise them as sent. */
export function readOrCreateEpoch(dir: string): string {
  const path = join(dir, 'meta.json');
  if (!existsSync(path)) writeFileSync(path, JSON.stringify({ epoch: Date.now().toString(36) + randomBytes(2).toString('hex') }));
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new FieldStreamError('FIELD_QUEUE_CORRUPT', `${path} is not JSON: ${(err as Error).message}`);
  }
  const meta = MetaFile.safeParse(raw);
  if (!meta.success) throw new FieldStreamError('FIELD_QUEUE_CORRUPT', `${path} does not hold a queue epoch: ${meta.error.message}`);
  return meta.data.epoch;
}

/** The persisted watermark; 0 (send everything again) when ack.json is missing or damaged. */
export function readWatermark(dir: string, log: Logger): number {
  const path = join(dir, 'ack.json');
  if (!existsSync(path)) return 0;
  try {
    const ack = AckFile.safeParse(JSON.parse(readFileSync(path, 'utf8')));
    if (ack.success) return ack.data.watermark;
  } catch {
    /* not JSON: as damaged as a wrong shape */
  }
  log.warn({ code: 'FIELD_QUEUE_CORRUPT' }, 'ack.json unreadable; unacknowledged data will be sent again from the oldest segment');
  return 0;
}

/** Written aside and renamed, so a crash leaves the old watermark or the new one, never half of one. */
export function writeWatermark(dir: string, watermark: number): void {
  const path = join(dir, 'ack.json');
  writeFileSync(`${path}.tmp`, JSON.stringify({ watermark }));
  renameSync(`${path}.tmp`, path);
}
