import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { portInUse, waitForPort } from './ports.ts';

/** Every process started by any ManagedProcess, so that they are killed if this process exits. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export type ReadyCheck = { port: number } | { logLine: RegExp } | { file: string };

export interface ProcessSpec {
  name: string;
  command: string;
  args: readonly string[];
  env: Record<string, string | undefined>;
  cwd: string;
  /** stdout and stderr are appended here */
  logFile: string;
  ready: ReadyCheck;
  /** run before each start (e.g. render a configuration template) */
  prepare?: () => void;
}

/**
 * One real process of the stack, started, stopped, killed and restarted by the runner and by the
 * fault tests. Its output goes to its own log file, so a failing test can show it.
 */
export class ManagedProcess {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();

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
    if (this.running) return;
    // A leftover process on our port would pass the readiness check in our stead.
    if ('port' in this.spec.ready && (await portInUse(this.spec.ready.port))) {
      throw new Error(`${this.name} cannot start: port ${this.spec.ready.port} is already in use`);
    }
    this.spec.prepare?.();
    if ('file' in this.spec.ready) rmSync(this.spec.ready.file, { force: true });
    mkdirSync(dirname(this.spec.logFile), { recursive: true });
    const logOffset = existsSync(this.spec.logFile) ? statSync(this.spec.logFile).size : 0;
    const fd = openSync(this.spec.logFile, 'a');
    const child = spawn(this.spec.command, this.spec.args, { cwd: this.spec.cwd, env: this.spec.env as NodeJS.ProcessEnv, stdio: ['ignore', fd, fd] });
    closeSync(fd);
    this.child = child;
    live.add(child);
    this.exited = new Promise((resolve) =>
      child.once('exit', () => {
        live.delete(child);
        resolve();
      }),
    );
    try {
      if ('port' in this.spec.ready) {
        await waitForPort(this.spec.ready.port, '127.0.0.1', timeoutMs, () => this.running);
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
    } catch (err) {
      await this.kill();
      throw new Error(`${this.name} did not start: ${(err as Error).message}\n--- ${this.spec.logFile} (tail) ---\n${this.tail()}`);
    }
  }

  /** A clean stop (SIGTERM, then SIGKILL after the grace period). */
  async stop(graceMs = 10_000): Promise<void> {
    if (!this.running) return;
    this.child?.kill('SIGTERM');
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** A crash: SIGKILL, no chance to clean up. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.child?.kill('SIGKILL');
    await this.exited;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  tail(lines = 40): string {
    try {
      return readFileSync(this.spec.logFile, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  private logSince(offset: number): string {
    try {
      return readFileSync(this.spec.logFile).subarray(offset).toString('utf8');
    } catch {
      return '';
    }
  }
}
