import { FieldStreamError, isFieldStreamError } from '../../../shared/errors.ts';
import { LIMITS } from '../../../shared/limits.ts';
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
 * 413 blames the request's size, and so may a proxy's 502: see {@link writeWithinLimit}.
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
/** HTTP 502: a proxy's answer for a store it cannot reach, and Caddy's (2.6) for a body over its
 * `request_body max_size` (its reverse proxy fails reading it, and says 502, not 413). */
const BAD_GATEWAY = 502;

const statusOf = (err: unknown): unknown => (isFieldStreamError(err) ? err.details?.status : undefined);

/**
 * `request(lines)` (one request), and on a 413 (`details.status`) the lines again in halves, each
 * halved again while it is answered 413: InfluxDB 1.x's `max-body-size`, InfluxDB 3's
 * `max-http-request-size`, InfluxDB Cloud's limit or a proxy's (nginx's `client_max_body_size`, 1 MiB
 * by default) answer it for a request, whatever its points. Retried whole, a batch over the limit
 * failed for ever: its consumer connections stalled, and the messages of other devices gathered into
 * it with them. Points (a line each) are independent, so parts go as well as the whole. A point
 * answered 413 alone is DISTRIBUTOR_WRITE_REJECTED: no retry changes its size, so its message is kept
 * as a dead letter (the write batcher finds it), replayable once the limit is raised.
 *
 * A 502 cannot tell a body over Caddy's limit from a store down behind the proxy. Lines answered
 * 502 LIMITS.influxBadGatewayTries times in a row (the first tries also cover a proxy's one-off 502)
 * are tested with their first line alone: answered 502 too, the store (or the proxy) is down, or the
 * proxy takes less than that one point; either way the write fails (DISTRIBUTOR_WRITE_FAILED,
 * retried whole by the consumer, never a dead letter: the point may well fit once the store is back),
 * after a few requests rather than one per line. Taken, the proxy is up and the size was at fault:
 * the other lines go in halves, a part answered 502 halved at once, down to one line (a lone line
 * answered 502 fails the write as above). Parts go in the lines' order; one written before a later
 * part fails is written again with the retried whole, which InfluxDB takes as the same point.
 *
 * The sinks send no request over LIMITS.influxRequestMaxBytes in the first place (line-protocol.ts
 * requestsOf); this finds a server's, or a proxy's, smaller bound.
 */
export async function writeWithinLimit(lines: readonly string[], request: (lines: readonly string[]) => Promise<void>, halving = false): Promise<void> {
  // The rest of two lines after the first went alone is one line: its second half is none, and an
  // empty request is no write.
  if (lines.length === 0) return;
  for (let tries = 1; ; tries++) {
    try {
      await request(lines);
      return;
    } catch (err) {
      const status = statusOf(err);
      if (status === TOO_LARGE) {
        if (lines.length <= 1) {
          throw new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', `a point larger than the database takes in one request (raise its limit on a request's size, then replay the dead letter): ${(err as Error).message}`, { status: TOO_LARGE }, { cause: err });
        }
        return inHalves(lines, request, halving);
      }
      if (status !== BAD_GATEWAY || lines.length <= 1) throw err;
      if (halving) return inHalves(lines, request, true);
      if (tries < LIMITS.influxBadGatewayTries) continue;
      try {
        await writeWithinLimit(lines.slice(0, 1), request, true);
      } catch (alone) {
        if (statusOf(alone) !== BAD_GATEWAY) throw alone;
        throw new FieldStreamError(
          'DISTRIBUTOR_WRITE_FAILED',
          `${(alone as Error).message} (a request of ${lines.length} points ${tries} times, then one of its first point alone: the database, or the proxy in front of it, is down, or the proxy takes less than that point in one request)`,
          { status: BAD_GATEWAY },
          { cause: alone },
        );
      }
      return inHalves(lines.slice(1), request, true);
    }
  }
}

async function inHalves(lines: readonly string[], request: (lines: readonly string[]) => Promise<void>, halving: boolean): Promise<void> {
  const half = Math.ceil(lines.length / 2);
  await writeWithinLimit(lines.slice(0, half), request, halving);
  await writeWithinLimit(lines.slice(half), request, halving);
}
