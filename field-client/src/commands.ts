import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';
import type { CommandFrame } from '../../shared/contract/downlink.ts';
import { CommandNameSchema } from '../../shared/contract/downlink.ts';
import type { ResponsePayload } from '../../shared/contract/payloads.ts';
import { FieldStreamError } from '../../shared/errors.ts';

export type CommandOutcome = Pick<ResponsePayload, 'status' | 'result'>;
export type CommandHandler = (params: unknown, frame: CommandFrame) => Promise<CommandOutcome> | CommandOutcome;

/** FIELD_COMMANDS_FILE: what each command name does on this device. */
export const CommandsFileSchema = z.record(
  CommandNameSchema,
  z.discriminatedUnion('type', [
    z.strictObject({
      /** run a program (no shell): params as JSON on stdin and in FIELDSTREAM_PARAMS; stdout is the result */
      type: z.literal('exec'),
      program: z.string().min(1),
      args: z.array(z.string()).default([]),
      /** milliseconds */
      timeoutMs: z.number().int().min(100).max(3_600_000).default(30_000),
    }),
    z.strictObject({
      /** publish the params to a topic of the local MQTT input, for a local program to act on */
      type: z.literal('mqtt'),
      topic: z.string().min(1).max(256).regex(/^[^#+]+$/, 'must not hold wildcards'),
    }),
  ]),
);
export type CommandsFile = z.infer<typeof CommandsFileSchema>;

/** bytes of a program's output kept as the result */
const MAX_OUTPUT_BYTES = 16 * 1024;
/** answered command ids remembered (and journaled) */
const REMEMBERED = 10_000;

/**
 * Runs commands and guarantees one answer per command id, across reconnects and restarts: each id
 * is journaled as "started" before its handler runs and "answered" after. A command delivered
 * again is not run again; one that was running when the client died is answered "failed" rather
 * than run a second time. A command without a handler is answered "rejected".
 */
export class CommandHandlers {
  private readonly handlers = new Map<string, CommandHandler>();
  private readonly seen = new Map<string, 'started' | 'answered'>();

  constructor(private readonly journal?: string) {
    if (journal && existsSync(journal)) {
      for (const line of readFileSync(journal, 'utf8').split('\n')) {
        const m = /^([A-Za-z0-9._:-]+) (started|answered)$/.exec(line);
        if (m) this.remember(m[1] as string, m[2] as 'started' | 'answered');
      }
    }
  }

  register(name: string, handler: CommandHandler): this {
    this.handlers.set(name, handler);
    return this;
  }

  /** Handlers from FIELD_COMMANDS_FILE. `publishLocal` sends to the local MQTT input. */
  configure(file: CommandsFile, publishLocal: ((topic: string, payload: string) => Promise<void>) | undefined): this {
    for (const [name, spec] of Object.entries(file)) {
      if (spec.type === 'exec') this.register(name, (params, frame) => runProgram(spec.program, spec.args, spec.timeoutMs, params, frame));
      else {
        this.register(name, async (params) => {
          if (!publishLocal) return { status: 'failed', result: 'the local MQTT input is off' };
          await publishLocal(spec.topic, JSON.stringify(params ?? null));
          return { status: 'completed', result: `published to ${spec.topic}` };
        });
      }
    }
    return this;
  }

  /** The answer to send, or undefined when this command id was answered before. */
  async run(frame: CommandFrame): Promise<CommandOutcome | undefined> {
    const state = this.seen.get(frame.commandId);
    if (state === 'answered') return undefined;
    if (state === 'started') {
      // Seen before but never answered: the client died while it ran. Never run a command twice.
      this.mark(frame.commandId, 'answered');
      return { status: 'failed', result: 'interrupted by a restart of the field client; not run again' };
    }
    this.mark(frame.commandId, 'started');
    const handler = this.handlers.get(frame.command);
    let outcome: CommandOutcome;
    if (!handler) outcome = { status: 'rejected', result: `unknown command "${frame.command}"` };
    else {
      try {
        outcome = await handler(frame.params, frame);
      } catch (err) {
        outcome = { status: 'failed', result: (err as Error).message };
      }
    }
    return outcome;
  }

  /** Called once the answer is in the durable queue. */
  answered(commandId: string): void {
    this.mark(commandId, 'answered');
  }

  private mark(id: string, state: 'started' | 'answered'): void {
    this.remember(id, state);
    if (this.journal) appendFileSync(this.journal, `${id} ${state}\n`);
  }

  private remember(id: string, state: 'started' | 'answered'): void {
    this.seen.delete(id);
    this.seen.set(id, state);
    if (this.seen.size > REMEMBERED) this.seen.delete(this.seen.keys().next().value as string);
  }
}

function runProgram(program: string, args: string[], timeoutMs: number, params: unknown, frame: CommandFrame): Promise<CommandOutcome> {
  return new Promise((resolve) => {
    const json = JSON.stringify(params ?? null);
    const child = spawn(program, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH, FIELDSTREAM_COMMAND: frame.command, FIELDSTREAM_COMMAND_ID: frame.commandId, FIELDSTREAM_PARAMS: json },
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out = (out + c.toString()).slice(0, MAX_OUTPUT_BYTES)));
    child.stderr.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-MAX_OUTPUT_BYTES)));
    child.stdin.on('error', () => undefined);
    child.stdin.end(json);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ status: 'failed', result: `cannot run ${program}: ${e.message}` });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (timedOut) {
        const e = new FieldStreamError('FIELD_COMMAND_TIMEOUT', `${program} did not finish within ${timeoutMs} ms`);
        return resolve({ status: 'failed', result: `${e.code}: ${e.message}` });
      }
      const text = out.trim();
      let result: ResponsePayload['result'] = text;
      try {
        result = text ? (JSON.parse(text) as ResponsePayload['result']) : '';
      } catch {
        /* plain text */
      }
      resolve(code === 0 ? { status: 'completed', result } : { status: 'failed', result: `exit code ${code}: ${err.trim() || text}` });
    });
  });
}
