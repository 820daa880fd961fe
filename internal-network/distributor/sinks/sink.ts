import type { StoredPoint } from '../points.ts';

/**
 * Where time series go. `write` resolves only once the points are durable in the store; it throws
 * DISTRIBUTOR_WRITE_FAILED for a failure worth retrying (the store is down) and
 * DISTRIBUTOR_WRITE_REJECTED when the store refuses the data itself (retrying cannot help).
 */
export interface PointSink {
  readonly description: string;
  write(points: readonly StoredPoint[]): Promise<void>;
  close(): Promise<void>;
}

/** Retry 5xx, 429 (too many requests) and 408 (timeout); a 4xx otherwise is the data's fault. */
export function isRetryableStatus(status: number): boolean {
  return status >= 500 || status === 429 || status === 408;
}
