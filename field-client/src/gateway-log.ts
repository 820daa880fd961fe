import { LimitedLog } from '../../shared/limited-log.ts';
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
 * (and a write to the device's storage). Its text goes through gatewayText.
 */
export function gatewayLog(log: Logger): LimitedLog {
  return new LimitedLog(log, { maxPerWindow: LIMITS.fieldGatewayLogMaxPerWindow, windowMs: TIMINGS.fieldGatewayLogWindowMs, what: 'warnings about the gateway' });
}
