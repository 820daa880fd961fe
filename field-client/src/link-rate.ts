import { existsSync } from 'node:fs';
import { z } from 'zod';
import { readRegularFileSync, removeLeftAsideSync, replaceFileDurablySync } from '../../shared/durable-fs.ts';
import { TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';

/** link-rate.json: the link's rate as last measured (bytes per second) and when (epoch ms). */
const LinkRateSchema = z.strictObject({
  v: z.literal(1),
  bytesPerSecond: z.number().int().min(1).max(10_000_000_000),
  measuredAt: z.number().int().min(0),
});

/**
 * The rate of the device's link the field client measured (send-pacing.ts), kept in FIELD_DATA_DIR
 * across restarts. A file taken before the link is measured is cut at FIELD_FILE_CHUNK_BYTES: on a
 * link of tens of kbit/s, a chunk of 1 MiB holds the readings behind it for minutes, and below about
 * 12 kbit/s it never reaches the gateway within DISTRIBUTOR_TRANSIT_MAX_S. A device on such a link
 * restarts often (power, watchdogs), and its first file after each start was cut so. Only a note:
 * one older than TIMINGS.fieldLinkRateMaxAgeMs (the device may have moved to another link), damaged
 * (FIELD_STATE_INVALID) or unwritten (FIELD_STATE_WRITE_FAILED) is measured again.
 */
export class LinkRateNote {
  private saved: { bytesPerSecond: number; at: number } | undefined;
  private failing = false;

  constructor(
    private readonly path: string,
    private readonly log: Logger,
  ) {
    removeLeftAsideSync(path);
  }

  /** The rate kept, in bytes per second, if it is recent enough to go by. */
  load(now: number): number | undefined {
    if (!existsSync(this.path)) return undefined;
    let note: z.infer<typeof LinkRateSchema>;
    try {
      note = LinkRateSchema.parse(JSON.parse(readRegularFileSync(this.path, 'utf8')));
    } catch (err) {
      this.log.warn({ code: 'FIELD_STATE_INVALID', path: this.path, err: (err as Error).message }, "the note of the link's measured rate is damaged: it is measured again");
      return undefined;
    }
    this.saved = { bytesPerSecond: note.bytesPerSecond, at: note.measuredAt };
    return now - note.measuredAt <= TIMINGS.fieldLinkRateMaxAgeMs && note.measuredAt <= now ? note.bytesPerSecond : undefined;
  }

  /**
   * The rate measured now (undefined: not known yet): written when it moved by a quarter or more
   * from the one kept, or the one kept is half its age limit old, at most once every
   * TIMINGS.fieldLinkRateSaveIntervalMs.
   */
  note(bytesPerSecond: number | undefined, now: number): void {
    if (bytesPerSecond === undefined) return;
    const s = this.saved;
    if (s && now - s.at < TIMINGS.fieldLinkRateSaveIntervalMs) return;
    if (s && Math.abs(bytesPerSecond - s.bytesPerSecond) < s.bytesPerSecond / 4 && now - s.at < TIMINGS.fieldLinkRateMaxAgeMs / 2) return;
    this.saved = { bytesPerSecond, at: now };
    try {
      replaceFileDurablySync(this.path, JSON.stringify({ v: 1, bytesPerSecond, measuredAt: now }) + '\n', 0o600);
      this.failing = false;
    } catch (err) {
      if (!this.failing) this.log.warn({ code: 'FIELD_STATE_WRITE_FAILED', path: this.path, err: (err as Error).message }, "the link's measured rate could not be kept; it is measured again after a restart");
      this.failing = true;
    }
  }
}
