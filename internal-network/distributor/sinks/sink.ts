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

/**
 * Only 400 and 422 blame the data itself (a field type conflict, a malformed point): those are kept
 * as dead letters. Every other failure is retried, 401/403/404 included: wrong credentials or a
 * missing database are the operator's to fix, and the data must wait for that, not be set aside.
 */
export function isRetryableStatus(status: number): boolean {
  return status !== 400 && status !== 422;
}
