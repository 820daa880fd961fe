import { loadFieldClientConfig } from '../../field-client/src/config.ts';
import { startFieldClient } from '../../field-client/src/start.ts';
import { InfluxV1Api } from '../../scripts/local-stack/databases.ts';
import { createLogger } from '../../shared/logger.ts';
import { sleep } from './context.ts';
import { ProbeInputSchema, type ProbeMessage } from './probe-device.ts';

/** The probe device's process (probe-device.ts): sends until told to stop, then reports. */
const send = (m: ProbeMessage) => new Promise<void>((resolve) => (process.send ? process.send(m, () => resolve()) : resolve()));

async function main(): Promise<void> {
  const o = ProbeInputSchema.parse(JSON.parse(process.env.PROBE_INPUT ?? ''));
  const influx = new InfluxV1Api(o.influxUrl, o.influxNetns);
  const running = await startFieldClient(loadFieldClientConfig(o.settings), createLogger('probe', 'warn'), { receipts: true });
  let stop = false;
  process.on('message', () => (stop = true));
  const orphaned = () => process.exit(1); // the benchmark is gone
  process.on('disconnect', orphaned);
  await sleep(500);
  await send({ type: 'ready' });

  const sentAt: number[] = [];
  const seenAt = new Map<number, number>();
  const probes = (async () => {
    for (let n = 0; !stop; n++) {
      const now = Date.now();
      sentAt.push(now);
      await running.client.submit('timeseries', { probe: n, timestamp: now });
      await sleep(o.everyMs);
    }
  })();
  // From the oldest probe neither seen nor given up: the distributor's consumers write in
  // parallel, so a probe may land after a later one (looking only past the latest seen would miss it).
  let oldestIndex = 0;
  for (;;) {
    while (oldestIndex < sentAt.length && (seenAt.has(sentAt[oldestIndex] as number) || Date.now() - (sentAt[oldestIndex] as number) > o.giveUpMs)) oldestIndex++;
    if (stop && oldestIndex >= sentAt.length) break;
    const oldest = sentAt[oldestIndex];
    if (oldest !== undefined) {
      const rows = await influx.rows(o.database, `SELECT probe FROM readings WHERE device = '${o.deviceId}' AND time >= ${oldest}ms`);
      const at = Date.now();
      for (const r of rows) if (!seenAt.has(r.time as number)) seenAt.set(r.time as number, at);
    }
    await sleep(o.pollEveryMs);
  }
  await probes;
  await send({ type: 'result', sentAt, seen: [...seenAt] });
  await running.close();
  process.off('disconnect', orphaned);
  process.disconnect();
}

main().catch(async (err: Error) => {
  await send({ type: 'failed', error: err.message });
  process.exitCode = 1;
  process.disconnect?.();
});
