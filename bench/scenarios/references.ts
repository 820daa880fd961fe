import type { BenchContext } from '../lib/context.ts';
import type { CpuMeter, CpuShare } from '../lib/proc-stats.ts';
import { combineRuns, type ThroughputResult } from '../lib/results.ts';
import { brokerCeiling, captureEnvelopes } from './broker-ceiling.ts';
import { DATABASE_CEILING, databaseCeiling } from './database-ceiling.ts';
import { nodeRedPeer } from './node-red-peer.ts';
import { throughput, type ThroughputOptions } from './throughput.ts';

/** The references, and ours measured against them (bench/lib/results.ts BenchReport.references). */
export interface ReferenceFigures {
  /** batched readings/s as a share of the database ceiling's */
  batchedShareOfDatabase: number;
  /** batched readings/s over the Node-RED peer's */
  batchedVsPeer: number;
  /** one reading per message, readings/s over the Node-RED peer's */
  singleVsPeer: number;
  /** batched readings/s as a share of the broker ceiling's for the same envelopes */
  batchedShareOfBroker: number;
  /** envelopes of the captured batched round, and their mean size in bytes */
  envelopes: number;
  envelopeBytes: number;
  /** CPU of the peer's processes while it ran (the publishers are the benchmark's own process) */
  peerCpu: CpuShare[];
  /**
   * readings/s of the first round after start, not counted (each side is measured warm): the
   * pipeline's first batched round, and the peer's first round of the same readings
   */
  warmUp: { batched: number; peer: number };
}

const ratio = (a: number, b: number) => (b > 0 ? Math.round((a / b) * 1000) / 1000 : 0);

/**
 * The references, measured in the same run as our scenarios so that the machine's speed weighs on
 * both: the database ceiling (two rounds of a batched round's readings, as the batched row has
 * two), the broker ceiling for the envelopes one batched round produced (captured in a round of
 * their own, not measured), and the Node-RED peer fed a batched round's readings one per message.
 */
export async function measureReferences(ctx: BenchContext, meter: CpuMeter, batched: ThroughputOptions): Promise<{ results: ThroughputResult[]; figures: (ours: { batched: ThroughputResult; single: ThroughputResult; warmUp: ThroughputResult }) => ReferenceFigures }> {
  const database = combineRuns(DATABASE_CEILING, [
    await databaseCeiling(ctx, meter, { prefix: 'dbceiling0', readingsPerClient: batched.readingsPerClient }),
    await databaseCeiling(ctx, meter, { prefix: 'dbceiling1', readingsPerClient: batched.readingsPerClient }),
  ]);
  database.clients = 1;
  const total = ctx.clients * batched.readingsPerClient;
  // The devices batch-* of --profile batched: certificates the run has, unused otherwise.
  const capture = await captureEnvelopes(ctx, batched.prefix, total, () => throughput(ctx, meter, { ...batched, name: 'batched (envelopes captured)' }));
  const broker = await brokerCeiling(ctx, capture);
  const peer = await nodeRedPeer(ctx, { prefix: 'peer', readingsPerClient: batched.readingsPerClient });
  const { peerCpu, warmUpPerSecond, ...peerResult } = peer;
  return {
    results: [database, broker, peerResult],
    figures: ({ batched: b, single, warmUp }) => ({
      batchedShareOfDatabase: ratio(b.readingsPerSecond, database.readingsPerSecond),
      batchedVsPeer: ratio(b.readingsPerSecond, peer.readingsPerSecond),
      singleVsPeer: ratio(single.readingsPerSecond, peer.readingsPerSecond),
      batchedShareOfBroker: ratio(b.readingsPerSecond, broker.readingsPerSecond),
      envelopes: broker.messages,
      envelopeBytes: Math.round(capture.messages.reduce((n, m) => n + m.payload.length, 0) / Math.max(1, capture.messages.length)),
      warmUp: { batched: warmUp.readingsPerSecond, peer: warmUpPerSecond },
      peerCpu: peerCpu.map((c) => (c.component === 'field clients (bench process)' ? { ...c, component: 'publishers (bench process)' } : c)),
    }),
  };
}
