import { TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';

/**
 * A log line that a flood would repeat per message (a compromised DMZ publishes tens of thousands a
 * second): written at most once per `intervalMs`, saying how many were left out since the last one.
 * Metrics count every occurrence; the log only tells that it is happening.
 */
export class FloodLog {
  private lastAt = -Infinity;
  private skipped = 0;

  constructor(
    private readonly log: Logger,
    private readonly level: 'warn' | 'error' | 'info',
    private readonly intervalMs: number = TIMINGS.floodLogIntervalMs,
  ) {}

  write(fields: Record<string, unknown>, message: string, now = Date.now()): void {
    if (now - this.lastAt < this.intervalMs) {
      this.skipped++;
      return;
    }
    const omitted = this.skipped;
    this.lastAt = now;
    this.skipped = 0;
    this.log[this.level](omitted > 0 ? { ...fields, omitted } : fields, omitted > 0 ? `${message} (and ${omitted} more since the last such line)` : message);
  }
}
