import { isFieldStreamError } from './errors.ts';

/**
 * Runs one service as a process: parse its configuration (a bad setting exits with status 78,
 * EX_CONFIG, and a message naming the variable), start it, and stop it cleanly on SIGINT/SIGTERM.
 */
export function runService<C>(name: string, loadConfig: () => C, start: (config: C) => Promise<{ close(): Promise<void> }>): void {
  let config: C;
  try {
    config = loadConfig();
  } catch (err) {
    fail(name, err);
  }
  start(config).then(
    (service) => {
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        process.stderr.write(`${name}: ${signal}, stopping\n`);
        service.close().then(
          () => process.exit(0),
          (err: unknown) => fail(name, err),
        );
      };
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
    },
    (err: unknown) => fail(name, err),
  );
}

function fail(name: string, err: unknown): never {
  if (isFieldStreamError(err)) {
    // One line, no stack: the code and the message, which names the setting at fault.
    process.stderr.write(`${name}: error ${err.code}: ${err.message.replace(/\s*\n\s*/g, ' ')}\n`);
    process.exit(err.code.startsWith('CONFIG_') ? 78 : 1);
  }
  process.stderr.write(`${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
}
