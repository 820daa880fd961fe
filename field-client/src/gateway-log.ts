import type { ErrorCode } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';

/** Text from the gateway, cut for a log line: a downlink frame may hold 512 KiB of it. */
export function gatewayText(text: string): string {
  return text.length > LIMITS.fieldGatewayLogMaxChars ? `${text.slice(0, LIMITS.fieldGatewayLogMaxChars)}…` : text;
}

/**
 * Warnings about what the gateway sent (error frames, invalid or out-of-place frames): at most
 * LIMITS.fieldGatewayLogMaxPerWindow lines per TIMINGS.fieldGatewayLogWindowMs. A compromised
 * gateway can send such frames as fast as the link carries them; each would otherwise be a log line
 * (and a write to the device's storage). The lines left out are counted by code, and their number
 * logged with the first line of the next window.
 */
export class GatewayLog {
  private windowStart = 0;
  private logged = 0;
  private suppressed: Partial<Record<ErrorCode, number>> = {};
  private suppressedCount = 0;

  constructor(
    private readonly log: Logger,
    private readonly max: number = LIMITS.fieldGatewayLogMaxPerWindow,
    private readonly windowMs: number = TIMINGS.fieldGatewayLogWindowMs,
  ) {}

  warn(fields: { code: ErrorCode } & Record<string, unknown>, message: string): void {
    const now = Date.now();
    if (now - this.windowStart >= this.windowMs) {
      if (this.suppressedCount > 0) {
        this.log.warn({ suppressed: this.suppressedCount, suppressedByCode: this.suppressed }, 'warnings about the gateway left out of the log in the last window');
      }
      this.windowStart = now;
      this.logged = 0;
      this.suppressed = {};
      this.suppressedCount = 0;
    }
    if (this.logged >= this.max) {
      this.suppressed[fields.code] = (this.suppressed[fields.code] ?? 0) + 1;
      this.suppressedCount++;
      return;
    }
    this.logged++;
    this.log.warn(fields, gatewayText(message));
  }
}
