import { pino } from 'pino';
import { FieldStreamError, isFieldStreamError } from './errors.ts';
import { TIMINGS } from './limits.ts';
import { createLogger } from './logger.ts';

/** The exit status of a forced stop: 128 + the signal's number, as a shell reports a process it ended. */
const FORCED_EXIT_STATUS = { SIGINT: 130, SIGTERM: 143 } as const;

/**
 * Runs one service as a process: parse its configuration (a bad setting exits with status 78,
 * EX_CONFIG, and a message naming the variable), start it, and stop it cleanly on SIGINT/SIGTERM.
 * A second SIGINT/SIGTERM while it stops forces the stop: a stop that hangs (a broker or database
 * not answering) ends at once, with status 130 (SIGINT) or 143 (SIGTERM). That is safe: nothing a
 * service acknowledged depends on its stop finishing, since it must survive SIGKILL at any instant.
 * A second one, not a copy of the first: one within TIMINGS.stopSignalCopyMs of it is the same
 * Ctrl-C, passed on by npm (or tsx's command line, for a service run under it by hand).
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
      let stoppingSince: number | undefined;
      const stop = (signal: keyof typeof FORCED_EXIT_STATUS) => {
        if (stoppingSince !== undefined) {
          // One Ctrl-C arrives more than once: from the terminal, to every process of the group,
          // and again from npm (and tsx's command line), which pass on the one each got. Only a later one is a second.
          if (performance.now() - stoppingSince < TIMINGS.stopSignalCopyMs) return;
          // Written synchronously: process.exit does not wait for an asynchronous destination.
          createLogger(name, 'info', pino.destination({ dest: 1, sync: true })).warn(
            { code: 'SERVICE_STOP_FORCED', signal },
            `${signal} again while stopping: the stop is forced, without waiting for it to finish`,
          );
          process.exit(FORCED_EXIT_STATUS[signal]);
        }
        stoppingSince = performance.now();
        process.stderr.write(`${name}: ${signal}, stopping\n`);
        service.close().then(
          () => process.exit(0),
          (err: unknown) => fail(name, err),
        );
      };
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
    },
    (err: unknown) => fail(name, startFailure(err)),
  );
}

/**
 * What a start that failed on a file or folder is reported as: the system's refusal (a read-only,
 * full or failing disk, a permission, an immutable folder) as SERVICE_START_FAILED, whose one line
 * names the operation, the path and the system's code. Its stack, through the service's insides,
 * says nothing a user can act on. Any other error as it is.
 */
function startFailure(err: unknown): unknown {
  if (!(err instanceof Error) || isFieldStreamError(err)) return err;
  const { code, syscall, path } = err as NodeJS.ErrnoException;
  if (typeof code !== 'string' || !/^E[A-Z0-9]+$/.test(code) || typeof syscall !== 'string' || !FILE_SYSCALLS.has(syscall)) return err;
  return new FieldStreamError(
    'SERVICE_START_FAILED',
    `${err.message}: a file or folder of its settings it cannot make, write or read (a read-only or full disk, its owner or permissions, an immutable flag); it did not start.`,
    { code, syscall, ...(path === undefined ? {} : { path }) },
    { cause: err },
  );
}

/**
 * The system calls on files and folders, as Node names them in its errors. A write or an fsync
 * refused by a full disk names no path (it is made on a file already open): the code says it all.
 * Not the network's (connect, listen: a server not there is no fault of a folder).
 */
const FILE_SYSCALLS: ReadonlySet<string> = new Set([
  'open', 'mkdir', 'mkdtemp', 'write', 'read', 'fsync', 'fdatasync', 'close', 'rename', 'unlink', 'rmdir', 'rm', 'link', 'symlink',
  'stat', 'lstat', 'fstat', 'access', 'chmod', 'fchmod', 'chown', 'fchown', 'ftruncate', 'truncate', 'copyfile', 'opendir', 'scandir', 'readlink', 'realpath', 'utime', 'futime',
]);

function fail(name: string, err: unknown): never {
  if (isFieldStreamError(err)) {
    // One line, no stack: the code and the message, which names the setting at fault.
    process.stderr.write(`${name}: error ${err.code}: ${err.message.replace(/\s*\n\s*/g, ' ')}\n`);
    process.exit(err.code.startsWith('CONFIG_') ? 78 : 1);
  }
  process.stderr.write(`${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
}
