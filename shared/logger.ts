import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

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
