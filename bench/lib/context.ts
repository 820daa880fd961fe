import type { RunningFieldClient } from '../../field-client/src/start.ts';
import type { InfluxV1 } from '../../scripts/local-stack/databases.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import type { ReadingStore } from './stores.ts';

/** What every scenario works with: the running stack, its database and simulated devices. */
export interface BenchContext {
  /** this run's scratch folder */
  work: string;
  /** the run's PKI (generated at start) */
  certs: string;
  repoRoot: string;
  /** simulated devices per throughput scenario */
  clients: number;
  quick: boolean;
  stack: LocalStack;
  influx: InfluxV1;
  database: string;
  /**
   * A field client with its own certificate, signing key and durable queue, at most `batchMax`
   * readings per frame; with `receipts` false it deletes at the gateway's ack (the reference).
   */
  fieldClient(deviceId: string, batchMax: number, receipts?: boolean): Promise<RunningFieldClient>;
  /**
   * the settings (environment) such a field client is started with, for one run in a process of its
   * own; the device is onboarded (its certificate and signing key issued) the first time it is named
   */
  fieldClientSettings(deviceId: string, batchMax: number): Record<string, string>;
  /** the single value an aggregate InfluxQL query returns (0 when nothing matched) */
  scalar(query: string): Promise<number>;
  /** readings counted in InfluxDB (a throughput round's store unless it names another) */
  influxStore: ReadingStore;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
