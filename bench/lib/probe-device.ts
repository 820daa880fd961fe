import { fork } from 'node:child_process';
import { join } from 'node:path';
import { z } from 'zod';
import type { BenchContext } from './context.ts';

/** What the probe device's process is started with (its environment, as JSON). */
export const ProbeInputSchema = z.strictObject({
  /** the field client's settings, as the benchmark's own clients get them */
  settings: z.record(z.string(), z.string()),
  influxUrl: z.string().url(),
  influxNetns: z.string().optional(),
  database: z.string(),
  deviceId: z.string(),
  /** milliseconds between probe readings */
  everyMs: z.number().int().positive(),
  /** milliseconds between looks into the database */
  pollEveryMs: z.number().int().positive(),
  /** milliseconds after its sending when a probe not seen is no longer looked for */
  giveUpMs: z.number().int().positive(),
});
export type ProbeInput = z.infer<typeof ProbeInputSchema>;

/** What it reports, once told to stop: each probe's sending time (its timestamp) and when the database first showed it. */
export const ProbeMessageSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('ready') }),
  z.strictObject({ type: z.literal('result'), sentAt: z.array(z.number()), seen: z.array(z.tuple([z.number(), z.number()])) }),
  z.strictObject({ type: z.literal('failed'), error: z.string() }),
]);
export type ProbeMessage = z.infer<typeof ProbeMessageSchema>;

export interface ProbeResult {
  /** each probe's sending time, epoch ms (also its timestamp in the database) */
  sentAt: number[];
  /** sending time → when a look into the database first found it */
  seenAt: Map<number, number>;
}

export interface ProbeDevice {
  /** Stops sending, waits for the last probes (or their give-up time) and returns every probe's times. */
  stop(): Promise<ProbeResult>;
}

/**
 * A probe device in a process of its own: a field client sending a reading every `everyMs`, and
 * the looks into the database that time its arrival. Device → database latency is what a device
 * sees; in the benchmark's process, beside the simulated devices of the load (their durable
 * queues, their garbage collection), each of the probe's steps also waited for theirs, which a
 * real device, its own process on its own machine, does not: measured, that process's event loop
 * was held for over 250 ms in most 10 s windows of a sustained run, and the looks into the database
 * took up to a second.
 */
export async function startProbeDevice(input: ProbeInput): Promise<ProbeDevice> {
  const child = fork(join(import.meta.dirname, 'probe-device-main.ts'), [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, PROBE_INPUT: JSON.stringify(ProbeInputSchema.parse(input)) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const messages: ProbeMessage[] = [];
  const waiters: Array<() => void> = [];
  let exited: string | undefined;
  child.on('message', (m) => {
    messages.push(ProbeMessageSchema.parse(m));
    waiters.splice(0).forEach((w) => w());
  });
  // 'close', not 'exit': a message sent just before the exit may still be on its way at 'exit'.
  child.on('close', (code, signal) => {
    exited = `the probe device's process exited (${signal ?? code})`;
    waiters.splice(0).forEach((w) => w());
  });
  const next = async (): Promise<ProbeMessage> => {
    for (;;) {
      const m = messages.shift();
      if (m?.type === 'failed') throw new Error(`probe device: ${m.error}`);
      if (m) return m;
      if (exited) throw new Error(exited);
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  const ready = await next();
  if (ready.type !== 'ready') throw new Error(`probe device: ${ready.type} before ready`);
  return {
    async stop() {
      child.send({ type: 'stop' });
      const result = await next();
      if (result.type !== 'result') throw new Error(`probe device: ${result.type} instead of its result`);
      return { sentAt: result.sentAt, seenAt: new Map(result.seen) };
    },
  };
}

/** The probe device `deviceId` of this run: the settings of the benchmark's field clients, its database. */
export function probeInput(ctx: BenchContext, deviceId: string, timing: Pick<ProbeInput, 'everyMs' | 'pollEveryMs' | 'giveUpMs'>): ProbeInput {
  return {
    settings: ctx.fieldClientSettings(deviceId, 500),
    influxUrl: ctx.influx.url,
    ...(ctx.influx.netns ? { influxNetns: ctx.influx.netns } : {}),
    database: ctx.database,
    deviceId,
    ...timing,
  };
}
