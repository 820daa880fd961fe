import { Agent, request } from 'node:http';
import { toLines } from '../../internal-network/distributor/sinks/line-protocol.ts';
import type { StoredPoint } from '../../internal-network/distributor/points.ts';
import type { BenchContext } from '../lib/context.ts';
import type { CpuMeter } from '../lib/proc-stats.ts';
import type { ThroughputResult } from '../lib/results.ts';

export const DATABASE_CEILING = 'database ceiling: the same readings straight into InfluxDB';

/** lines per write request: the distributor's own batch size (DISTRIBUTOR_BATCH_MAX_POINTS' default) */
const LINES_PER_WRITE = 5_000;
/** write requests in flight at once, one per core of the benchmark's machine */
const IN_FLIGHT = 2;
/** readings of one device in a row, as an envelope of the batched run holds them (the clients' batches of up to 500) */
const RUN = 500;

/**
 * The most any pipeline into this database can reach here: the readings of a batched round, each
 * a point exactly as the distributor writes it (its line-protocol encoder, the same series, fields
 * and times), built before the clock starts and written by this one process into the same
 * InfluxDB in batches of 5,000 lines, IN_FLIGHT requests at a time. The clock stops when InfluxDB
 * has acknowledged the last write (it answers 204 once the points are in its write-ahead log);
 * then the points are counted, as in every other scenario.
 */
export async function databaseCeiling(ctx: BenchContext, meter: CpuMeter, o: { prefix: string; readingsPerClient: number }): Promise<ThroughputResult> {
  const base = Date.parse('2026-01-01T00:00:00Z');
  const lines: string[] = [];
  // Devices interleaved a run at a time, as envelopes from several devices reach the distributor.
  for (let k = 0; k < o.readingsPerClient; k += RUN) {
    for (let i = 0; i < ctx.clients; i++) {
      const tags = { device: `${o.prefix}-${i}` };
      const points: StoredPoint[] = [];
      for (let j = k; j < Math.min(k + RUN, o.readingsPerClient); j++) points.push({ measurement: 'readings', tags, fields: { v: j }, time: base + i * 10_000_000 + j });
      lines.push(...toLines(points));
    }
  }
  const bodies: Buffer[] = [];
  for (let k = 0; k < lines.length; k += LINES_PER_WRITE) bodies.push(Buffer.from(lines.slice(k, k + LINES_PER_WRITE).join('\n')));
  const total = lines.length;

  const url = new URL(`/write?db=${encodeURIComponent(ctx.database)}&precision=ms`, ctx.influx.url);
  const agent = new Agent({ keepAlive: true, maxSockets: IN_FLIGHT });
  const auth = `Basic ${Buffer.from(`${ctx.influx.user}:${ctx.influx.password}`).toString('base64')}`;
  const write = (body: Buffer) =>
    new Promise<void>((resolve, reject) => {
      const req = request(url, { method: 'POST', agent, headers: { authorization: auth, 'content-type': 'text/plain', 'content-length': body.length } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => (res.statusCode === 204 ? resolve() : reject(new Error(`database ceiling: InfluxDB answered ${res.statusCode}: ${Buffer.concat(chunks).toString()}`))));
      });
      req.on('error', reject);
      req.end(body);
    });

  meter.begin();
  const started = Date.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      for (let b = next++; b < bodies.length; b = next++) await write(bodies[b] as Buffer);
    }),
  );
  const seconds = (Date.now() - started) / 1000;
  const cpu = meter.end();
  agent.destroy();

  const stored = await ctx.influxStore.count(o.prefix);
  if (stored !== total) throw new Error(`database ceiling: ${stored} points stored for ${total} written`);
  const sum = await ctx.influxStore.sum(o.prefix);
  if (sum !== ctx.clients * ((o.readingsPerClient * (o.readingsPerClient - 1)) / 2)) throw new Error('database ceiling: the stored values do not add up to those written');
  return { scenario: DATABASE_CEILING, clients: 1, readings: total, seconds, readingsPerSecond: Math.round(total / seconds), lost: 0, duplicated: 0, cpu };
}
