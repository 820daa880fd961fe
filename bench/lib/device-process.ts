import { fork } from 'node:child_process';
import { join } from 'node:path';
import { z } from 'zod';
import type { BenchContext } from './context.ts';

/** A probe: one reading every `everyMs`, and the looks into the database that time their arrival. */
const ProbeModeSchema = z.strictObject({
  kind: z.literal('probe'),
  /** milliseconds between probe readings */
  everyMs: z.number().int().positive(),
  /** milliseconds between looks into the database */
  pollEveryMs: z.number().int().positive(),
  /** milliseconds after its sending when a probe not seen is no longer looked for */
  giveUpMs: z.number().int().positive(),
});

/** Paced load: `perTick` readings every `tickMs`, starting `offsetMs` into the first tick; timestamps from `timestampBase` up. */
const PacedModeSchema = z.strictObject({
  kind: z.literal('paced'),
  perTick: z.number().int().positive(),
  tickMs: z.number().int().positive(),
  offsetMs: z.number().nonnegative(),
  timestampBase: z.number().int().nonnegative(),
});

/** What a device process is started with (its environment, as JSON). */
export const DeviceInputSchema = z.strictObject({
  /** the field client's settings, as the benchmark's own clients get them */
  settings: z.record(z.string(), z.string()),
  influxUrl: z.string().url(),
  influxNetns: z.string().optional(),
  database: z.string(),
  deviceId: z.string(),
  mode: z.discriminatedUnion('kind', [ProbeModeSchema, PacedModeSchema]),
});
export type DeviceInput = z.infer<typeof DeviceInputSchema>;

/** What it reports: ready; while paced, its readings submitted so far; once stopped, its result. */
export const DeviceMessageSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('ready') }),
  z.strictObject({ type: z.literal('progress'), submitted: z.number().int().nonnegative() }),
  z.strictObject({
    type: z.literal('result'),
    submitted: z.number().int().nonnegative(),
    /** readings still in the device's queue when it stopped, not let go of at a receipt within DRAIN_MS */
    held: z.number().int().nonnegative(),
    sentAt: z.array(z.number()),
    seen: z.array(z.tuple([z.number(), z.number()])),
  }),
  z.strictObject({ type: z.literal('failed'), error: z.string() }),
]);
export type DeviceMessage = z.infer<typeof DeviceMessageSchema>;

export interface DeviceResult {
  /** readings submitted (paced), or probes sent */
  submitted: number;
  /**
   * readings still in its durable queue when it closed: it waits, once stopped, for every reading's
   * commit receipt (DRAIN_MS at most in device-process-main.ts); what it still held was never sent
   * or never receipted, and is not in the database for a reason that is not the pipeline's loss
   */
  held: number;
  /** each probe's sending time, epoch ms (also its timestamp in the database) */
  sentAt: number[];
  /** sending time → when a look into the database first found it */
  seenAt: Map<number, number>;
}

export interface DeviceProcess {
  readonly pid: number | undefined;
  /** readings submitted so far, as last reported (paced: every tick) */
  readonly submitted: number;
  /** Stops sending, waits for the last probes (or their give-up time) and for the process to exit, and returns its figures. */
  stop(): Promise<DeviceResult>;
}

/** milliseconds a device's process has, after reporting its result, to close its field client and exit */
const EXIT_GRACE_MS = 30_000;

/**
 * A simulated device in a process of its own: a field client with its durable queue, sending as
 * `mode` says. A device is its own machine: in the benchmark's process, beside the other devices
 * and the benchmark's own work, each step of one waited for the others' (their queues, their
 * garbage collection). Measured in a sustained run, that process's event loop was held for over
 * 100 ms in a third of the 10 s windows (up to a second): the probe's looks into the database then
 * took up to a second, and the paced devices, missing their ticks, sent in bursts after each hold.
 */
export async function startDeviceProcess(input: DeviceInput, o: { nice?: number } = {}): Promise<DeviceProcess> {
  // Under nice(1), which then executes Node: every thread of the process (V8's, libuv's) inherits
  // the priority, where os.setPriority would lower only the main thread's.
  const runner = o.nice ? { execPath: 'nice', execArgv: ['-n', String(o.nice), process.execPath, '--import', 'tsx'] } : { execArgv: ['--import', 'tsx'] };
  const child = fork(join(import.meta.dirname, 'device-process-main.ts'), [], {
    ...runner,
    env: { ...process.env, DEVICE_INPUT: JSON.stringify(DeviceInputSchema.parse(input)) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const messages: DeviceMessage[] = [];
  const waiters: Array<() => void> = [];
  let exited: string | undefined;
  let submitted = 0;
  child.on('message', (m) => {
    const message = DeviceMessageSchema.parse(m);
    if (message.type === 'progress') {
      submitted = message.submitted;
      return;
    }
    messages.push(message);
    waiters.splice(0).forEach((w) => w());
  });
  // 'close', not 'exit': a message sent just before the exit may still be on its way at 'exit'.
  const gone = new Promise<void>((resolve) =>
    child.on('close', (code, signal) => {
      exited = `${input.deviceId}: its process exited (${signal ?? code})`;
      waiters.splice(0).forEach((w) => w());
      resolve();
    }),
  );
  const next = async (): Promise<DeviceMessage> => {
    for (;;) {
      const m = messages.shift();
      if (m?.type === 'failed') throw new Error(`${input.deviceId}: ${m.error}`);
      if (m) return m;
      if (exited) throw new Error(exited);
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  const ready = await next();
  if (ready.type !== 'ready') throw new Error(`${input.deviceId}: ${ready.type} before ready`);
  return {
    pid: child.pid,
    get submitted() {
      return submitted;
    },
    async stop() {
      child.send({ type: 'stop' });
      const result = await next();
      if (result.type !== 'result') throw new Error(`${input.deviceId}: ${result.type} instead of its result`);
      // The device closes its field client after reporting, which still writes to its queue: its
      // folder is the caller's to remove only once the process is gone (killed if it hangs).
      const hung = setTimeout(() => child.kill('SIGKILL'), EXIT_GRACE_MS);
      await gone;
      clearTimeout(hung);
      submitted = result.submitted;
      return { submitted: result.submitted, held: result.held, sentAt: result.sentAt, seenAt: new Map(result.seen) };
    },
  };
}

/** The input of device `deviceId` of this run: the settings of the benchmark's field clients, its database. */
export function deviceInput(ctx: BenchContext, deviceId: string, mode: DeviceInput['mode']): DeviceInput {
  return {
    settings: ctx.fieldClientSettings(deviceId, 500),
    influxUrl: ctx.influx.url,
    ...(ctx.influx.netns ? { influxNetns: ctx.influx.netns } : {}),
    database: ctx.database,
    deviceId,
    mode,
  };
}
