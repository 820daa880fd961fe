import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, existsSync, fstatSync, mkdirSync, openSync, readSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { FieldStreamError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { portInUse, waitForPort } from './ports.ts';

// Restart policy of a supervised process, as Docker's `restart: unless-stopped` of the compose
// files: an exponential delay (Docker doubles from 100 ms) that starts over once the process has
// stayed up for a while (Docker: 10 s).
/** milliseconds before the first restart of a process that exited unexpectedly */
export const RESTART_INITIAL_DELAY_MS = 500;
/** milliseconds: the longest delay between restarts of a process that keeps crashing */
export const RESTART_MAX_DELAY_MS = 30_000;
/** milliseconds a process must stay up before its next crash starts the backoff over */
export const RESTART_RESET_AFTER_MS = 10_000;

/** Every process started by any ManagedProcess, so that they are killed if this process exits. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** The executable file `command` names (a path, or a name looked up in `path`, as execvp does), or undefined. */
export function findProgram(command: string, path: string | undefined): string | undefined {
  const executable = (file: string) => {
    try {
      accessSync(file, constants.X_OK);
      return statSync(file).isFile();
    } catch {
      return false;
    }
  };
  if (command.includes('/')) return executable(command) ? command : undefined;
  for (const dir of (path ?? '').split(':')) {
    const file = join(dir || '.', command);
    if (executable(file)) return file;
  }
  return undefined;
}

/**
 * The exit handler above does not run when this process is killed with SIGKILL (the OOM killer,
 * kill -9): its processes, each in a process group of its own, would run on without it, holding
 * the stack's ports. util-linux's setpriv asks the kernel to send each SIGKILL when the process that
 * started it dies (PR_SET_PDEATHSIG, prctl(2)), then execs it: its pid stays the process's own.
 * Without setpriv (not Linux) processes are started as they are.
 */
let deathSignalWrapper: string[] | undefined;
function withDeathSignal(command: string, args: readonly string[]): [string, string[]] {
  deathSignalWrapper ??= ((setpriv) => (setpriv ? [setpriv, '--pdeathsig', 'KILL', '--'] : []))(findProgram('setpriv', process.env.PATH));
  const [wrapper, ...rest] = deathSignalWrapper;
  return wrapper ? [wrapper, [...rest, command, ...args]] : [command, [...args]];
}

/** `host`: where the port is probed (default 127.0.0.1), inside the process's network namespace if it has one */
export type ReadyCheck = { port: number; host?: string } | { logLine: RegExp } | { file: string };

export interface ProcessSpec {
  name: string;
  command: string;
  args: readonly string[];
  env: Record<string, string | undefined>;
  cwd: string;
  /** stdout and stderr are appended here */
  logFile: string;
  ready: ReadyCheck;
  /**
   * The other TCP ports it listens on (Caddy's HTTP port, a service's metrics port): checked free
   * before each start as a readiness port is, so another program holding one is LISTEN_FAILED naming
   * it, not a start that fails with the reason in the process's log alone.
   */
  alsoListens?: readonly { port: number; host?: string }[];
  /** run before each start (e.g. render a configuration template) */
  prepare?: () => void;
  /** restart the process when it exits unless stop()/kill() asked for it, logging to this */
  supervisor?: Logger;
  /**
   * Run it inside this network namespace: spawned as `ip netns exec <netns> <command> <args>`
   * (behind setpriv, see withDeathSignal, which execs it too).
   * ip(8) enters the namespace and then execs the command in the same process (no fork outside its
   * batch mode), so the pid we hold, and its process group, are the command's own: stop, kill, pause
   * and the supervisor's SIGKILL reach it directly.
   */
  netns?: string;
}

/**
 * One real process of the stack, started, stopped, killed and restarted by the runner and by the
 * fault tests. Its output goes to its own log file, so a failing test can show it.
 */
export class ManagedProcess {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  /** 'run' from start() until stop()/kill(): an exit meanwhile is a crash, and is restarted */
  private intent: 'run' | 'stopped' = 'stopped';
  private starting = false;
  /** bytes: the size of the log file when the process was last started (logSinceStart) */
  private startLogOffset = 0;
  private startedAt = 0;
  private readyPid: number | undefined;
  private restartDelayMs = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  /** supervised restarts that came up, for tests and the log */
  restarts = 0;

  constructor(readonly spec: ProcessSpec) {}

  get name(): string {
    return this.spec.name;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(timeoutMs = 30_000): Promise<void> {
    this.intent = 'run';
    try {
      await this.startChild(timeoutMs);
    } catch (err) {
      this.intent = 'stopped';
      throw err;
    }
  }

  /**
   * Throws LISTEN_FAILED naming the first of its ports (readiness, `alsoListens`) something
   * accepts connections on: a leftover process on the readiness port would pass the readiness check
   * in its stead, and on another it stops the process after it started.
   */
  async assertPortsFree(): Promise<void> {
    const ports = [...('port' in this.spec.ready ? [this.spec.ready] : []), ...(this.spec.alsoListens ?? [])];
    for (const { port, host = '127.0.0.1' } of ports) {
      if (await portInUse(port, host, this.spec.netns)) {
        throw new FieldStreamError('LISTEN_FAILED', `${this.name} cannot start: ${host}:${port} is already in use (another program, or a stack still running)`, { host, port });
      }
    }
  }

  private async startChild(timeoutMs = 30_000): Promise<void> {
    if (this.running) return;
    await this.assertPortsFree();
    this.spec.prepare?.();
    if ('file' in this.spec.ready) rmSync(this.spec.ready.file, { force: true });
    mkdirSync(dirname(this.spec.logFile), { recursive: true });
    const logOffset = existsSync(this.spec.logFile) ? statSync(this.spec.logFile).size : 0;
    this.startLogOffset = logOffset;
    if (this.intent !== 'run') throw new Error('stopped while starting');
    const [inner, innerArgs] = this.spec.netns ? ['ip', ['netns', 'exec', this.spec.netns, this.spec.command, ...this.spec.args]] : [this.spec.command, this.spec.args];
    // Looked up here, as setpriv would only say in the log that it found nothing to run.
    if (!findProgram(this.spec.command, this.spec.env.PATH ?? '/usr/bin:/bin')) {
      throw new FieldStreamError('SERVICE_START_FAILED', `${this.name} cannot start: the program "${this.spec.command}" cannot be run (ENOENT): is it installed, and on the PATH?`, { program: this.spec.command, errno: 'ENOENT' });
    }
    const [command, args] = withDeathSignal(inner, innerArgs);
    // Opened last before the spawn, closed right after it: a start given up before (the stack
    // closing meanwhile) would have left it open.
    const fd = openSync(this.spec.logFile, 'a');
    // detached (a process group of its own): Ctrl-C in the terminal reaches only the runner, which
    // stops each process in order, instead of every process at once as if they had all crashed.
    const child = spawn(command, args, { cwd: this.spec.cwd, env: this.spec.env as NodeJS.ProcessEnv, stdio: ['ignore', fd, fd], detached: true });
    closeSync(fd);
    if (child.pid === undefined) {
      // Not run at all (not installed, not on the PATH, not executable): Node tells it in an 'error'
      // event, and no 'exit' follows. Unheard, that event would end this process, every component
      // with it; heard, it is this start's failure, which a supervised restart tries again later.
      const failed = await new Promise<NodeJS.ErrnoException>((resolve) => child.once('error', resolve));
      const code = failed.code ?? 'EUNKNOWN';
      throw new FieldStreamError('SERVICE_START_FAILED', `${this.name} cannot start: the program "${command}" cannot be run (${code}): is it installed, and on the PATH?`, { program: command, errno: code });
    }
    // A signal it cannot be sent (it is gone): the exit that follows, or came before, says what happened.
    child.on('error', (err) => this.spec.supervisor?.warn({ component: this.name, err: err.message }, `${this.name}: ${err.message}`));
    this.child = child;
    this.startedAt = Date.now();
    live.add(child);
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        live.delete(child);
        resolve();
        this.onExit(child, code, signal);
      }),
    );
    this.starting = true;
    try {
      if ('port' in this.spec.ready) {
        await waitForPort(this.spec.ready.port, this.spec.ready.host ?? '127.0.0.1', timeoutMs, () => this.running, this.spec.netns);
      } else if ('file' in this.spec.ready) {
        const deadline = Date.now() + timeoutMs;
        const file = this.spec.ready.file;
        while (!existsSync(file)) {
          if (!this.running) throw new Error('the process exited');
          if (Date.now() > deadline) throw new Error(`no ${file} after ${timeoutMs} ms`);
          await new Promise((r) => setTimeout(r, 100));
        }
      } else {
        const deadline = Date.now() + timeoutMs;
        while (!this.spec.ready.logLine.test(this.logSince(logOffset))) {
          if (!this.running) throw new Error('the process exited');
          if (Date.now() > deadline) throw new Error(`no ${this.spec.ready.logLine} in its log after ${timeoutMs} ms`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      // An exit while its readiness was checked is this start's to report (onExit leaves it): a
      // process that showed it was ready and died meanwhile is no started one, nor to be left
      // unrestarted. An exit that happened already but was not yet seen is seen first: timers run
      // before the event loop takes in a child's exit, setImmediate's callbacks after.
      await new Promise((r) => setImmediate(r));
      if (!this.running) throw new Error(`the process exited as it became ready (exit code ${child.exitCode}, signal ${child.signalCode})`);
    } catch (err) {
      await this.terminate('SIGKILL');
      throw new Error(`${this.name} did not start: ${(err as Error).message}\n--- ${this.spec.logFile} (tail) ---\n${this.tail()}`);
    } finally {
      this.starting = false;
    }
    this.readyPid = child.pid;
  }

  /** A crash while it should run: restarted after the backoff delay (while starting, start() reports it). */
  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    const log = this.spec.supervisor;
    if (!log || child !== this.child || this.intent !== 'run' || this.starting) return;
    const fresh = this.restartDelayMs === 0 || Date.now() - this.startedAt >= RESTART_RESET_AFTER_MS;
    this.restartDelayMs = fresh ? RESTART_INITIAL_DELAY_MS : Math.min(this.restartDelayMs * 2, RESTART_MAX_DELAY_MS);
    log.warn({ component: this.name, exitCode: code, signal, restartInMs: this.restartDelayMs }, `${this.name} exited unexpectedly; restarting it`);
    this.scheduleRestart(log);
  }

  private scheduleRestart(log: Logger): void {
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.intent !== 'run') return;
      this.startChild().then(
        () => {
          this.restarts++;
          log.info({ component: this.name, pid: this.pid, restarts: this.restarts }, `${this.name} restarted`);
        },
        (err: Error) => {
          if (this.intent !== 'run') return;
          this.restartDelayMs = Math.min(this.restartDelayMs * 2, RESTART_MAX_DELAY_MS);
          log.error({ component: this.name, err: err.message.split('\n')[0], restartInMs: this.restartDelayMs }, `${this.name} did not come back; trying again`);
          this.scheduleRestart(log);
        },
      );
    }, this.restartDelayMs);
  }

  /** Resolves once the process runs and has passed its readiness check since it last (re)started. */
  async untilReady(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(this.running && !this.starting && this.readyPid === this.pid)) {
      if (Date.now() > deadline) throw new Error(`${this.name} is not running again after ${timeoutMs} ms\n${this.tail()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * Sends a signal as something other than the runner would (the kernel's OOM killer, a crash):
   * a process that dies of it is restarted if supervised. Resolves once a fatal signal took effect.
   */
  async signal(signal: NodeJS.Signals): Promise<void> {
    if (!this.running) throw new Error(`${this.name} is not running`);
    this.child?.kill(signal);
    if (signal === 'SIGKILL') await this.exited;
  }

  /** Freezes the process (SIGSTOP): it holds its sockets but answers nothing, like a hung server. */
  pause(): Promise<void> {
    return this.signal('SIGSTOP');
  }

  resume(): Promise<void> {
    return this.signal('SIGCONT');
  }

  /** A clean stop (SIGTERM, then SIGKILL after the grace period). */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopSupervising();
    if (!this.running) return;
    this.child?.kill('SIGCONT'); // a paused process cannot act on SIGTERM
    this.child?.kill('SIGTERM');
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** A crash: SIGKILL, no chance to clean up. */
  async kill(): Promise<void> {
    this.stopSupervising();
    await this.terminate('SIGKILL');
  }

  private async terminate(signal: NodeJS.Signals): Promise<void> {
    if (!this.running) return;
    this.child?.kill(signal);
    await this.exited;
  }

  /** No restart from now on, whatever happens to the process (the stack is closing). */
  stopSupervising(): void {
    this.intent = 'stopped';
    clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    this.restartDelayMs = 0;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** A clean stop, then a start with these settings changed (e.g. the benchmark turning metrics off). */
  async restartWith(env: Readonly<Record<string, string>>): Promise<void> {
    await this.stop();
    Object.assign(this.spec.env, env);
    await this.start();
  }

  /** Its log's last lines, from at most its last LOG_TAIL_WINDOW_BYTES. */
  tail(lines = 40): string {
    try {
      return readLog(this.spec.logFile, 0, LOG_TAIL_WINDOW_BYTES).toString('utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /**
   * What the process has logged since it was last started: where a caller looks for what a restart
   * said (a fixed tail can be pushed past by later lines, or show what the process before it said).
   */
  logSinceStart(): string {
    return this.logSince(this.startLogOffset);
  }

  private logSince(offset: number): string {
    try {
      return readLog(this.spec.logFile, offset).toString('utf8');
    } catch {
      return '';
    }
  }
}

/** bytes: the end of a log that tail() reads its lines from */
const LOG_TAIL_WINDOW_BYTES = 4 * 1024 * 1024;

/**
 * The bytes of a log from `offset` to its end (only the last `maxBytes` of them), read without the
 * ones before: a component's log grows for as long as the stack runs, and a read of the whole file
 * fails past 2 GiB (ERR_FS_FILE_TOO_LARGE): a process ready by a line of its log would never be
 * found ready again, each restart killed at its timeout.
 */
function readLog(file: string, offset: number, maxBytes = Number.POSITIVE_INFINITY): Buffer {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const start = Math.max(offset, size - maxBytes, 0);
    const buf = Buffer.alloc(Math.max(size - start, 0));
    let filled = 0;
    while (filled < buf.length) {
      const n = readSync(fd, buf, filled, buf.length - filled, start + filled);
      if (n === 0) break;
      filled += n;
    }
    return buf.subarray(0, filled);
  } finally {
    closeSync(fd);
  }
}
