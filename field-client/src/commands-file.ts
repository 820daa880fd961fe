import { spawn } from 'node:child_process';
import { z } from 'zod';
import type { CommandFrame } from '../../shared/contract/downlink.ts';
import { CommandNameSchema } from '../../shared/contract/downlink.ts';
import { holdsMoreValuesThan } from '../../shared/contract/json-bound.ts';
import type { ResponsePayload } from '../../shared/contract/payloads.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { CommandHandler, CommandOutcome } from './command-types.ts';

/** FIELD_COMMANDS_FILE: what each command name does on this device. */
export const CommandsFileSchema = z.record(
  CommandNameSchema,
  z.discriminatedUnion('type', [
    z.strictObject({
      /** run a program (no shell): params as JSON on stdin, and in FIELDSTREAM_PARAMS when they fit there (128 KiB); stdout is the result */
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

/**
 * The handlers FIELD_COMMANDS_FILE gives, by command name (CommandHandlers.configure registers them;
 * commands.ts runs them once each, journaled). `publishLocal` sends to the local MQTT input.
 */
export function fileHandlers(file: CommandsFile, publishLocal: ((topic: string, payload: string) => Promise<void>) | undefined): Array<[string, CommandHandler]> {
  return Object.entries(file).map(([name, spec]): [string, CommandHandler] => {
    if (spec.type === 'exec') return [name, (params, frame, stopping, spawned) => runProgram(spec.program, spec.args, spec.timeoutMs, params, frame, stopping, spawned)];
    return [
      name,
      async (params) => {
        if (!publishLocal) return { status: 'failed', result: 'the local MQTT input is off' };
        await publishLocal(spec.topic, JSON.stringify(params ?? null));
        return { status: 'completed', result: `published to ${spec.topic}` };
      },
    ];
  });
}

/**
 * An exec command: its program run (no shell, a process group of its own) with the params; its
 * output is the answer. When `stopping` aborts (the client's orderly stop), the whole group gets
 * SIGTERM, and SIGKILL TIMINGS.fieldCommandStopGraceMs later: a program in a group of its own is not
 * ended with its client, and ran on unseen (after a SIGKILL of the client, its next start ends it:
 * command-orphans.ts). A program that exits 0 then answers as it says (it
 * finished, or cleaned up and says so); otherwise what it did is unknown: FIELD_COMMAND_OUTCOME_UNKNOWN.
 */
function runProgram(
  program: string,
  args: string[],
  timeoutMs: number,
  params: unknown,
  frame: CommandFrame,
  stopping?: AbortSignal,
  spawned?: (pid: number) => void,
): Promise<CommandOutcome> {
  return new Promise((resolve) => {
    const json = JSON.stringify(params ?? null);
    // In the environment only when Linux takes it there: past LIMITS.fieldCommandEnvStringMaxBytes
    // spawn throws E2BIG, and the program would never run. stdin always has the params.
    const inEnv = Buffer.byteLength(`FIELDSTREAM_PARAMS=${json}`) + 1 <= LIMITS.fieldCommandEnvStringMaxBytes;
    const child = spawn(program, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      // A process group of its own, killed whole at the timeout: a program is often a script whose
      // own children hold its output open, and killing the script alone left them running, the
      // answer waiting for them (a `sleep 3600` in a shell script answered after an hour).
      detached: true,
      env: { PATH: process.env.PATH, FIELDSTREAM_COMMAND: frame.command, FIELDSTREAM_COMMAND_ID: frame.commandId, ...(inEnv ? { FIELDSTREAM_PARAMS: json } : {}) },
    });
    // Recorded before anything else happens to it (commands.ts journals it): a client killed from now
    // on leaves the group for its next start to end (command-orphans.ts).
    if (child.pid !== undefined) spawned?.(child.pid);
    let out = '';
    let err = '';
    // Decoded as a stream: a character split between two writes (two chunks) is kept whole, where
    // decoding each chunk alone made it two U+FFFD in the result.
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (c: string) => {
      if (out.length < LIMITS.fieldCommandOutputMaxChars) out = (out + c).slice(0, LIMITS.fieldCommandOutputMaxChars);
    });
    child.stderr.on('data', (c: string) => (err = (err + c).slice(-LIMITS.fieldCommandErrorOutputMaxChars)));
    child.stdin.on('error', () => undefined);
    child.stdin.end(json);
    /**
     * Signals the program's group: `refused` when the client may not (EPERM: the program runs as
     * another user, sudo or a setuid program). Never through child.kill(), which reports that refusal
     * as the child's 'error', taken for a failure to start it: the command was answered "cannot run"
     * while its program ran on, and sent again by an operator told so, it ran twice.
     */
    const signalGroup = (signal: NodeJS.Signals): 'sent' | 'gone' | 'refused' => {
      if (child.pid === undefined) return 'gone';
      for (const target of [-child.pid, child.pid]) {
        try {
          process.kill(target, signal);
          return 'sent';
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EPERM') return 'refused';
        }
      }
      return 'gone';
    };
    /** Answered at once when the program cannot be ended: it runs on, for as long as it likes, and what it does is unknown. */
    const cannotEnd = (why: string) => {
      settled();
      child.stdout.destroy();
      child.stderr.destroy();
      const e = new FieldStreamError('FIELD_COMMAND_OUTCOME_UNKNOWN', `${program} ${why} and could not be ended (it runs as another user: sudo, a setuid program): it may still run; what it did is unknown; not run again`);
      resolve({ status: 'failed', result: `${e.code}: ${e.message}` });
    };
    const killGroup = (why: string) => {
      if (signalGroup('SIGKILL') === 'refused') return cannotEnd(why);
      // 'close' waits for the output to close too, and a process outside the group (a daemon the
      // program started in a session of its own: setsid) can hold it open for ever, the command
      // never answered. What it would still write is not waited for: the answer is the kill's.
      child.stdout.destroy();
      child.stderr.destroy();
    };
    let timedOut = false;
    const timer = setTimeout(() => {
      // Timed out only if the program itself still runs. One that exited already (a service it
      // started keeps the output it inherited: an init script, start-stop-daemon --background) said
      // how it went by its exit code: answered `failed` (FIELD_COMMAND_TIMEOUT), a program that had
      // completed was sent again by an operator told it failed, and ran twice. Its group is ended
      // and its output let go all the same: what it left behind is not waited for past the timeout.
      timedOut = child.exitCode === null && child.signalCode === null;
      killGroup(`ran past its timeout of ${timeoutMs} ms`);
    }, timeoutMs);
    let stopped = false;
    let stopTimer: NodeJS.Timeout | undefined;
    const onStop = () => {
      stopped = true;
      const why = 'was stopped with the field client while it ran';
      if (signalGroup('SIGTERM') === 'refused') return cannotEnd(why);
      stopTimer = setTimeout(() => killGroup(why), TIMINGS.fieldCommandStopGraceMs);
    };
    const settled = () => {
      clearTimeout(timer);
      clearTimeout(stopTimer);
      stopping?.removeEventListener('abort', onStop);
    };
    if (stopping?.aborted) onStop();
    else stopping?.addEventListener('abort', onStop, { once: true });
    child.on('error', (e) => {
      settled();
      resolve({ status: 'failed', result: `cannot run ${program}: ${e.message}` });
    });
    child.on('close', (code, signal) => {
      settled();
      if (timedOut) {
        // Ended part way: what it did until then stays done, so the answer must not read as "did
        // nothing" (sent again, a half-done action ran twice). What it wrote until then says how far
        // it got: its error output, else its output, as a failed exit's answer carries them.
        const said = (err.trim() || out.trim()).slice(-LIMITS.fieldCommandErrorOutputMaxChars);
        const e = new FieldStreamError('FIELD_COMMAND_TIMEOUT', `${program} did not finish within ${timeoutMs} ms and was ended with its process group: what it did until then is unknown; look at the device before sending it again`);
        return resolve({ status: 'failed', result: `${e.code}: ${e.message}${said ? `; its output until then: ${said}` : ''}` });
      }
      if (stopped && code !== 0) {
        const how = signal ? `ended by ${signal}` : `exit code ${code}`;
        const e = new FieldStreamError('FIELD_COMMAND_OUTCOME_UNKNOWN', `${program} was stopped with the field client (${how}) while it ran: what it did is unknown; not run again`);
        return resolve({ status: 'failed', result: `${e.code}: ${e.message}` });
      }
      const text = out.trim();
      let result: ResponsePayload['result'] = text;
      // JSON of more values and containers than a response's result holds (a long list) is answered
      // as its text, whole: a string is one value. Counted in the text as the gateway counts it.
      if (!holdsMoreValuesThan(Buffer.from(text), LIMITS.commandResultMaxValues)) {
        try {
          result = text ? z.json().parse(JSON.parse(text)) : '';
        } catch {
          /* plain text */
        }
      }
      resolve(code === 0 ? { status: 'completed', result } : { status: 'failed', result: `exit code ${code}: ${err.trim() || text.slice(0, LIMITS.fieldCommandErrorOutputMaxChars)}` });
    });
  });
}
