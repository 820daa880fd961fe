import type { ErrorCode } from './errors.ts';
import type { Logger } from './logger.ts';

export interface LimitedLogOptions {
  /** pino level of the lines (the line that counts those left out too) */
  level?: 'info' | 'warn' | 'error';
  /** log lines written per window at most */
  maxPerWindow: number;
  /** milliseconds: the window */
  windowMs: number;
  /** what the lines are, said in the line that counts those left out ("Sparkplug refusals") */
  what: string;
}

/**
 * A log line that something outside the process decides how often to cause: a refusal per message
 * of a flood (a compromised DMZ, a hostile gateway, a broken publisher), which would otherwise be a
 * line each, and a write to a device's storage. At most `maxPerWindow` lines per `windowMs`; the
 * lines left out are counted by their `code` (else their `err`'s errno, else as `none`), and the first line of a later window is preceded by
 * one that says how many and of which codes. Metrics count every occurrence; the log only tells
 * that it is happening, and what it looks like.
 */
export class LimitedLog {
  private windowStart = -Infinity;
  private logged = 0;
  private leftOut = 0;
  private leftOutByCode: Record<string, number> = {};
  private readonly level: 'info' | 'warn' | 'error';

  constructor(
    private readonly log: Logger,
    private readonly o: LimitedLogOptions,
  ) {
    this.level = o.level ?? 'warn';
  }

  write(fields: { code?: ErrorCode } & Record<string, unknown>, message: string, now = Date.now()): void {
    if (now - this.windowStart >= this.o.windowMs) {
      if (this.leftOut > 0) {
        this.log[this.level](
          { leftOut: this.leftOut, leftOutByCode: this.leftOutByCode, windowMs: this.o.windowMs },
          `${this.o.what}: ${this.leftOut} left out of the log since the last such line`,
        );
      }
      this.windowStart = now;
      this.logged = 0;
      this.leftOut = 0;
      this.leftOutByCode = {};
    }
    if (this.logged >= this.o.maxPerWindow) {
      this.leftOut++;
      // A failure without a code of ours but from a system call is counted by its errno (ENOSPC, EIO):
      // `none` alone would not say whether the disk or a defect is failing.
      const errno = (fields.err as NodeJS.ErrnoException | undefined)?.code;
      const code = fields.code ?? (typeof errno === 'string' ? errno : 'none');
      this.leftOutByCode[code] = (this.leftOutByCode[code] ?? 0) + 1;
      return;
    }
    this.logged++;
    this.log[this.level](fields, message);
  }
}
