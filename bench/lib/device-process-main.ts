import { loadFieldClientConfig } from '../../field-client/src/config.ts';
import { startFieldClient, type RunningFieldClient } from '../../field-client/src/start.ts';
import { InfluxV1Api } from '../../scripts/local-stack/databases.ts';
import { createLogger } from '../../shared/logger.ts';
import { sleep } from './context.ts';
import { DeviceInputSchema, type DeviceInput, type DeviceMessage } from './device-process.ts';

/** A simulated device's process (device-process.ts): sends until told to stop, then reports. */
const send = (m: DeviceMessage) => new Promise<void>((resolve) => (process.send ? process.send(m, () => resolve()) : resolve()));

let stop = false;

/**
 * milliseconds a stopped device waits for the commit receipts of what its queue still holds: closed
 * at once, the readings it had not yet sent would never reach the database, and the benchmark would
 * count them lost
 */
const DRAIN_MS = 60_000;

async function main(): Promise<void> {
  const o = DeviceInputSchema.parse(JSON.parse(process.env.DEVICE_INPUT ?? ''));
  const running = await startFieldClient(loadFieldClientConfig(o.settings), createLogger('device', 'warn'), { receipts: true });
  process.on('message', () => (stop = true));
  const orphaned = () => process.exit(1); // the benchmark is gone
  process.on('disconnect', orphaned);
  await sleep(500);
  await send({ type: 'ready' });
  const result = o.mode.kind === 'probe' ? await probe(o, o.mode, running) : { submitted: await paced(o.mode, running), sentAt: [], seen: [] };
  for (const until = Date.now() + DRAIN_MS; running.client.unacknowledged > 0 && Date.now() < until; ) await sleep(50);
  await send({ type: 'result', ...result, held: running.client.unacknowledged });
  await running.close();
  process.off('disconnect', orphaned);
  process.disconnect();
}

/** Readings every tick, as many as due: a tick missed is not made up (the parent sees it in the count). */
async function paced(m: Extract<DeviceInput['mode'], { kind: 'paced' }>, running: RunningFieldClient): Promise<number> {
  let submitted = 0;
  await sleep(m.offsetMs);
  while (!stop) {
    const t = Date.now();
    await running.client.submitMany(Array.from({ length: m.perTick }, (_, j) => ({ dataType: 'timeseries' as const, payload: { v: 1, timestamp: m.timestampBase + submitted + j } })));
    submitted += m.perTick;
    void send({ type: 'progress', submitted });
    await sleep(Math.max(0, m.tickMs - (Date.now() - t)));
  }
  return submitted;
}

/** A reading every `everyMs`, and the looks into the database that time each one's arrival. */
async function probe(o: DeviceInput, m: Extract<DeviceInput['mode'], { kind: 'probe' }>, running: RunningFieldClient): Promise<{ submitted: number; sentAt: number[]; seen: Array<[number, number]> }> {
  const influx = new InfluxV1Api(o.influxUrl, o.influxNetns);
  const sentAt: number[] = [];
  const seenAt = new Map<number, number>();
  const probes = (async () => {
    for (let n = 0; !stop; n++) {
      const now = Date.now();
      sentAt.push(now);
      // `v` as every load reading has it: the stores count a device's readings by it (count(v)).
      await running.client.submit('timeseries', { probe: n, v: n, timestamp: now });
      await sleep(m.everyMs);
    }
  })();
  // From the oldest probe neither seen nor given up: the distributor's consumers write in
  // parallel, so a probe may land after a later one (looking only past the latest seen would miss it).
  let oldestIndex = 0;
  for (;;) {
    while (oldestIndex < sentAt.length && (seenAt.has(sentAt[oldestIndex] as number) || Date.now() - (sentAt[oldestIndex] as number) > m.giveUpMs)) oldestIndex++;
    if (stop && oldestIndex >= sentAt.length) break;
    const oldest = sentAt[oldestIndex];
    if (oldest !== undefined) {
      const rows = await influx.rows(o.database, `SELECT probe FROM readings WHERE device = '${o.deviceId}' AND time >= ${oldest}ms`);
      const at = Date.now();
      for (const r of rows) if (!seenAt.has(r.time as number)) seenAt.set(r.time as number, at);
    }
    await sleep(m.pollEveryMs);
  }
  await probes;
  return { submitted: sentAt.length, sentAt, seen: [...seenAt] };
}

main().catch(async (err: Error) => {
  await send({ type: 'failed', error: err.message });
  process.exitCode = 1;
  process.disconnect?.();
});
