import { HttpError, InfluxDB, type WriteApi } from '@influxdata/influxdb-client';
import { FieldStreamError } from '../../../shared/errors.ts';
import type { StoredPoint } from '../points.ts';
import { toLines } from './line-protocol.ts';
import { isRetryableStatus, type PointSink } from './sink.ts';

/** points per write request (InfluxData suggests about 5,000 lines) */
const BATCH = 5000;

export interface InfluxV2Options {
  url: string;
  token: string;
  org: string;
  bucket: string;
  /** milliseconds */
  timeoutMs: number;
}

/**
 * InfluxDB 2.x (and anything speaking its `/api/v2/write`) through @influxdata/influxdb-client.
 * The client's own retry buffer lives in memory and drops data when full, so it is switched off
 * (maxRetries 0): the distributor retries itself and acknowledges the broker only after a 2xx.
 */
export class InfluxV2Sink implements PointSink {
  readonly description: string;
  private readonly api: WriteApi;

  constructor(options: InfluxV2Options) {
    this.description = `InfluxDB 2.x API ${options.url} org ${options.org} bucket ${options.bucket}`;
    this.api = new InfluxDB({ url: options.url, token: options.token, timeout: options.timeoutMs }).getWriteApi(options.org, options.bucket, 'ms', {
      maxRetries: 0,
      // We flush explicitly after each write of ours, never more than BATCH points at a time, so
      // the client never flushes on its own (its own flush would report failures to a log, not to us).
      batchSize: BATCH + 1,
      maxBufferLines: 2 * BATCH,
      flushInterval: 0,
      gzipThreshold: 1000,
    });
  }

  async write(points: readonly StoredPoint[]): Promise<void> {
    for (let i = 0; i < points.length; i += BATCH) await this.writeChunk(points.slice(i, i + BATCH));
  }

  private async writeChunk(points: readonly StoredPoint[]): Promise<void> {
    if (points.length === 0) return;
    this.api.writeRecords(toLines(points));
    try {
      await this.api.flush();
    } catch (err) {
      const status = err instanceof HttpError ? err.statusCode : undefined;
      throw new FieldStreamError(
        status !== undefined && !isRetryableStatus(status) ? 'DISTRIBUTOR_WRITE_REJECTED' : 'DISTRIBUTOR_WRITE_FAILED',
        `InfluxDB write failed: ${(err as Error).message}`,
        status !== undefined ? { status } : {},
        { cause: err },
      );
    }
  }

  async close(): Promise<void> {
    await this.api.close().catch(() => undefined);
  }
}
