import { pino, type Logger, type DestinationStream } from 'pino';
import type { ErrorCode } from './errors.ts';

export type { Logger };

// A log line's `code` is a key of the error registry (shared/errors.ts), checked by the compiler:
// `log.warn({ code: 'NOT_A_CODE' }, ...)` does not compile. pino's own extension point for the
// fields of a log object (LogFnFields, pino.d.ts), so every logger and child is typed alike.
declare module 'pino' {
  interface LogFnFields {
    code?: ErrorCode;
  }
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/**
 * The root logger of one process. Components receive children of it (`logger.child({ component })`)
 * from whoever builds them; no module reaches for a global logger.
 */
export function createLogger(service: string, level: LogLevel = 'info', destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Keys and certificates must never reach a log line, whatever a caller passes.
      redact: { paths: ['*.key', '*.password', '*.token', 'password', 'token'], censor: '[redacted]' },
    },
    destination,
  );
}
