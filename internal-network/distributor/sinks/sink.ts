import { FieldStreamError, isFieldStreamError } from '../../../shared/errors.ts';
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
 * 413 blames the request's size: see {@link writeWithinLimit}.
 */
export function isRetryableStatus(status: number): boolean {
  return status !== 400 && status !== 422;
}

/**
 * An answer's Retry-After (RFC 9110 §10.2.3: delay-seconds or an HTTP-date) as milliseconds from
 * `now`; undefined without one, or with one that is neither. InfluxDB Cloud's 429 (a rate limit)
 * and a proxy's or InfluxDB's 503 say with it when to come back: DISTRIBUTOR_WRITE_FAILED carries it
 * (`details.retryAfterMs`), and the consumer waits at least that long, up to DISTRIBUTOR_RETRY_MAX_MS
 * (consumer.ts), rather than its own backoff's first pauses of a fraction of a second.
 */
export function retryAfterMs(value: string | string[] | undefined, now = Date.now()): number | undefined {
  if (typeof value !== 'string') return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** HTTP 413: the request is larger than the server, or a proxy in front of it, takes. */
const TOO_LARGE = 413;

/**
 * `request(lines)` (one request), and on a 413 (`details.status`) the lines again in halves, each
 * halved again while it is answered 413: InfluxDB 1.x's `max-body-size`, InfluxDB 3's
 * `max-http-request-size`, InfluxDB Cloud's limit or a proxy's (nginx's `client_max_body_size`, 1 MiB
 * by default) answer it for a request, whatever its points. Retried whole, a batch over the limit
 * failed for ever: its consumer connections stalled, and the messages of other devices gathered into
 * it with them. Points (a line each) are independent, so parts go as well as the whole. A point
 * answered 413 alone is DISTRIBUTOR_WRITE_REJECTED: no retry changes its size, so its message is kept
 * as a dead letter (the write batcher finds it), replayable once the limit is raised.
 * The sinks send no request over LIMITS.influxRequestMaxBytes in the first place (line-protocol.ts
 * requestsOf); this finds a server's, or a proxy's, smaller bound.
 */
export async function writeWithinLimit(lines: readonly string[], request: (lines: readonly string[]) => Promise<void>): Promise<void> {
  try {
    await request(lines);
  } catch (err) {
    if (!isFieldStreamError(err) || err.details?.status !== TOO_LARGE) throw err;
    if (lines.length <= 1) {
      throw new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', `a point larger than the database takes in one request (raise its limit on a request's size, then replay the dead letter): ${err.message}`, { status: TOO_LARGE }, { cause: err });
    }
    const half = Math.ceil(lines.length / 2);
    await writeWithinLimit(lines.slice(0, half), request);
    await writeWithinLimit(lines.slice(half), request);
  }
}
