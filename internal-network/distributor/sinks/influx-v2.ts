import { HttpError, InfluxDB, type Transport } from '@influxdata/influxdb-client';
import { FieldStreamError } from '../../../shared/errors.ts';
import { LIMITS } from '../../../shared/limits.ts';
import type { StoredPoint } from '../points.ts';
import { precisionOf, requestsOf, toLines, type Precision } from './line-protocol.ts';
import { shownUrl } from '../../shared/influx-settings.ts';
import { isRetryableStatus, retryAfterMs, writeWithinLimit, type PointSink } from './sink.ts';

/** lines (points) per write request (InfluxData suggests about 5,000), of at most LIMITS.influxRequestMaxBytes */
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
 * InfluxDB 2.x (and anything speaking its `/api/v2/write`), posted through the transport of
 * @influxdata/influxdb-client (its authentication, TLS, timeout and gzip), one request per chunk of
 * BATCH points and at most LIMITS.influxRequestMaxBytes of line protocol (line-protocol.ts
 * requestsOf), never through its WriteApi: that one flushes by itself when its buffer passes
 * `maxBatchBytes` (a batch of large strings: part of a chunk), reports that flush's failure to a log
 * and not to us, and resolves on any 2xx. The distributor retries itself and acknowledges the broker
 * only after a 204: a 201 is InfluxDB 3's "partial write" (some lines stored, the others refused),
 * taken as refused so that the write batcher finds the message at fault (write-batcher.ts).
 */
export class InfluxV2Sink implements PointSink {
  readonly description: string;
  private readonly transport: Transport;
  /** the write path at each precision (line-protocol.ts: `ns` for a request holding a point off its millisecond) */
  private readonly paths: Record<Precision, string>;
  /** milliseconds: a request's deadline, answer included */
  private readonly timeoutMs: number;
  /** aborted by close(): the requests in flight are given up (unacknowledged: the broker delivers them again) */
  private readonly closing = new AbortController();

  constructor(options: InfluxV2Options) {
    this.timeoutMs = options.timeoutMs;
    this.description = `InfluxDB 2.x API ${shownUrl(options.url)} org ${options.org} bucket ${options.bucket}`;
    this.transport = new InfluxDB({ url: options.url, token: options.token, timeout: options.timeoutMs }).transport;
    const path = (precision: Precision) => `/api/v2/write?${new URLSearchParams({ org: options.org, bucket: options.bucket, precision }).toString()}`;
    this.paths = { ms: path('ms'), ns: path('ns') };
  }

  async write(points: readonly StoredPoint[]): Promise<void> {
    if (points.length === 0) return;
    // Encoded before the requests, outside their catch: a point line protocol cannot carry is the
    // encoder's DISTRIBUTOR_WRITE_REJECTED (final), which the catch would make a failure to retry.
    const precision = precisionOf(points);
    // Each chunk one request, halved while answered 413, or after a proxy's 502s (sink.ts writeWithinLimit).
    for (const lines of requestsOf(toLines(points, precision), LIMITS.influxRequestMaxBytes, BATCH)) await writeWithinLimit(lines, (part) => this.writeChunk(part, precision));
  }

  private async writeChunk(lines: readonly string[], precision: Precision): Promise<void> {
    if (lines.length === 0) return;
    const body = lines.join('\n');
    let status: number | undefined;
    try {
      // The library's `timeout` is the socket's idle time: an answer trickling in (a byte now and
      // then, from a stalled proxy) never passed it, and the write, its message and its consumer
      // waited for hours. The signal is a deadline for the whole request, as the 1.x sink's, and the
      // sink's close: a request to a database that does not answer is not left running to the exit.
      const signal = AbortSignal.any([AbortSignal.timeout(this.timeoutMs), this.closing.signal]);
      await this.transport.request(this.paths[precision], body, { method: 'POST', headers: { 'content-type': 'text/plain; charset=utf-8' }, gzipThreshold: 1000, signal }, (_headers, code) => {
        status = code;
      });
    } catch (err) {
      const code = err instanceof HttpError ? err.statusCode : undefined;
      const rejected = code !== undefined && !isRetryableStatus(code);
      // The header itself: the library's retryAfter() reads delay-seconds only, not an HTTP-date.
      const after = err instanceof HttpError && !rejected ? retryAfterMs(err.headers?.['retry-after']) : undefined;
      throw new FieldStreamError(
        rejected ? 'DISTRIBUTOR_WRITE_REJECTED' : 'DISTRIBUTOR_WRITE_FAILED',
        `InfluxDB write failed: ${(err as Error).message}`,
        { ...(code !== undefined ? { status: code } : {}), ...(after !== undefined ? { retryAfterMs: after } : {}) },
        { cause: err },
      );
    }
    if (status !== 204) {
      throw new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', `InfluxDB answered ${status ?? 'no status'}, not 204: a partial write (some points refused)`, status !== undefined ? { status } : {});
    }
  }

  async close(): Promise<void> {
    // Each write is a request of its own: what is in flight is given up (its write fails, as the 1.x
    // sink's does when its agent is destroyed), and a write after close fails at once.
    this.closing.abort(new Error('the sink was closed'));
  }
}
