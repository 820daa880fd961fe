import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { constants, gzipSync } from 'node:zlib';
import { FieldStreamError } from '../../../shared/errors.ts';
import { LIMITS } from '../../../shared/limits.ts';
import type { StoredPoint } from '../points.ts';
import { precisionOf, requestsOf, toLines, type Precision } from './line-protocol.ts';
import { shownUrl } from '../../shared/influx-settings.ts';
import { isRetryableStatus, retryAfterMs, writeWithinLimit, type PointSink } from './sink.ts';
import { fieldTypeRows, ShowFieldKeysSchema, type FieldTypeRow } from './field-types.ts';

export interface InfluxV1Options {
  url: string;
  database: string;
  username?: string | undefined;
  password?: string | undefined;
  /** milliseconds */
  timeoutMs: number;
}

/** An answer to a POST: its status, the start of its body (`cut`: there was more), its Retry-After header. */
interface Answer {
  status: number;
  text: string;
  cut: boolean;
  retryAfter: string | undefined;
}

/** bytes of an error answer kept for the error message */
const ERROR_BODY_MAX_BYTES = 4096;
/** bytes. A smaller body is sent as it is: gzip's set-up (and InfluxDB's) costs more than the
 * bytes it saves, and with one reading per message most requests are a few hundred bytes. */
const GZIP_MIN_BYTES = 1024;

/**
 * InfluxDB 1.x through its HTTP write API: `POST /write?db=DB&precision=ms` (`ns` for a request
 * holding a point off its millisecond: line-protocol.ts), gzip (from GZIP_MIN_BYTES), basic auth.
 * Requests go through node:http(s) on kept-alive connections: `fetch` cost about 1 ms more CPU per
 * request (measured against a local InfluxDB), and every batch of points is one request, or
 * several one after another past LIMITS.influxRequestMaxBytes of line protocol.
 */
export class InfluxV1Sink implements PointSink {
  readonly description: string;
  /** the write URL at each precision */
  private readonly endpoints: Record<Precision, URL>;
  /** the database's `/query` */
  private readonly queryUrl: URL;
  private readonly headers: Record<string, string>;
  private readonly agent: HttpAgent;
  /** close() was called: requests in flight were given up, and none is made any more */
  private closed = false;
  private readonly send: (url: URL, options: RequestOptions, onResponse: (res: IncomingMessage) => void) => ClientRequest;

  constructor(private readonly options: InfluxV1Options) {
    const url = new URL('write', options.url.endsWith('/') ? options.url : `${options.url}/`);
    url.searchParams.set('db', options.database);
    const at = (precision: Precision) => {
      const u = new URL(url);
      u.searchParams.set('precision', precision);
      return u;
    };
    this.endpoints = { ms: at('ms'), ns: at('ns') };
    this.queryUrl = new URL('query', url);
    this.queryUrl.searchParams.set('db', options.database);
    this.description = `InfluxDB 1.x ${shownUrl(options.url)} database ${options.database}`;
    this.headers = { 'content-type': 'text/plain; charset=utf-8' };
    if (options.username) {
      this.headers.authorization = `Basic ${Buffer.from(`${options.username}:${options.password ?? ''}`).toString('base64')}`;
    }
    const https = url.protocol === 'https:';
    this.agent = https ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
    this.send = https ? httpsRequest : httpRequest;
  }

  /**
   * The points' lines in requests of at most LIMITS.influxRequestMaxBytes (line-protocol.ts
   * requestsOf), one after another, each halved while answered 413, or after a proxy's 502s (sink.ts writeWithinLimit).
   * A request the database took stays written when a later one fails: the write fails and is
   * retried whole, and InfluxDB takes a point again as the same point.
   */
  async write(points: readonly StoredPoint[]): Promise<void> {
    if (points.length === 0) return;
    const precision = precisionOf(points);
    for (const lines of requestsOf(toLines(points, precision))) await writeWithinLimit(lines, (part) => this.request(part, precision));
  }

  private async request(lines: readonly string[], precision: Precision): Promise<void> {
    const text = Buffer.from(lines.join('\n'), 'utf8');
    // The fastest level: line protocol still shrinks several times, for a fraction of the CPU
    // of the default level 6 (which showed in the distributor's profile).
    const gzip = text.length >= GZIP_MIN_BYTES;
    const body = gzip ? gzipSync(text, { level: constants.Z_BEST_SPEED }) : text;
    let answer: Answer;
    try {
      answer = await this.post(this.endpoints[precision], body, gzip);
    } catch (err) {
      throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `InfluxDB is unreachable: ${(err as Error).message}`, {}, { cause: err });
    }
    if (answer.status === 204) return;
    // Any other 2xx: not InfluxDB's answer to a write taken whole (InfluxDB 3 answers 201 to a
    // partial write, some lines refused): refused, so that the write batcher finds the message at fault.
    if (answer.status >= 200 && answer.status < 300) {
      throw new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED', `InfluxDB answered ${answer.status}, not 204: a partial write (some points refused): ${answer.text.slice(0, 500)}`, { status: answer.status });
    }
    const retryable = isRetryableStatus(answer.status);
    const after = retryable ? retryAfterMs(answer.retryAfter) : undefined;
    throw new FieldStreamError(
      retryable ? 'DISTRIBUTOR_WRITE_FAILED' : 'DISTRIBUTOR_WRITE_REJECTED',
      `InfluxDB answered ${answer.status}: ${answer.text.slice(0, 500)}`,
      after !== undefined ? { status: answer.status, retryAfterMs: after } : { status: answer.status },
    );
  }

  /**
   * The type of every field of `measurements` (the writer's own: a database shared with other writers
   * holds theirs too, which would count against the guard's bounds), as `SHOW FIELD KEYS` gives them
   * (all shards: a field of two types in two shards is two rows). Unreachable, answered 401 or 5xx, or no such database yet:
   * DISTRIBUTOR_WRITE_FAILED (as a write would be, retried). Refused (403: a user without READ on
   * the database) or an answer that is not the query's: an Error, and the field-type guard learns from writes alone.
   */
  async fieldTypes(measurements: readonly string[]): Promise<FieldTypeRow[]> {
    if (measurements.length === 0) return [];
    let answer: Answer;
    try {
      answer = await this.post(fieldKeysUrl(this.queryUrl, measurements), Buffer.alloc(0), false, LIMITS.fieldTypesAnswerMaxBytes);
    } catch (err) {
      throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `InfluxDB is unreachable: ${(err as Error).message}`, {}, { cause: err });
    }
    if (answer.status === 401 || answer.status >= 500) {
      throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `InfluxDB answered ${answer.status} to SHOW FIELD KEYS: ${answer.text.slice(0, 500)}`, { status: answer.status });
    }
    if (answer.status !== 200) throw new Error(`InfluxDB answered ${answer.status} to SHOW FIELD KEYS: ${answer.text.slice(0, 500)}`);
    if (answer.cut) throw new Error(`InfluxDB's answer to SHOW FIELD KEYS is longer than LIMITS.fieldTypesAnswerMaxBytes (${LIMITS.fieldTypesAnswerMaxBytes} bytes)`);
    let parsed;
    try {
      parsed = ShowFieldKeysSchema.parse(JSON.parse(answer.text));
    } catch (err) {
      throw new Error(`InfluxDB's answer to SHOW FIELD KEYS is not one: ${(err as Error).message.slice(0, 500)}`, { cause: err });
    }
    const failed = parsed.results.find((r) => r.error !== undefined);
    // No database yet (created after the distributor started; restored from a backup): a write
    // would be answered 404 and retried, so this is retried with it, and the types are read once
    // it exists. Taken for a refusal, the guard learnt from writes alone for good, blind to every
    // type the database was given meanwhile (and the log said to grant READ).
    if (failed?.error?.startsWith('database not found')) {
      throw new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', `InfluxDB has no such database yet: ${failed.error.slice(0, 500)}`);
    }
    if (failed) throw new Error(`InfluxDB refused SHOW FIELD KEYS: ${failed.error?.slice(0, 500)}`);
    return fieldTypeRows(parsed);
  }

  /** One POST, answered within timeoutMs or abandoned; of its answer the first `keepBytes` are kept. */
  private post(endpoint: URL, body: Buffer, gzip: boolean, keepBytes = ERROR_BODY_MAX_BYTES): Promise<Answer> {
    const headers: Record<string, string> = { ...this.headers, 'content-length': String(body.length) };
    if (gzip) headers['content-encoding'] = 'gzip';
    // A destroyed agent still opens new connections: a write after close() would wait out its deadline.
    if (this.closed) return Promise.reject(new Error('the sink was closed'));
    return new Promise((resolve, reject) => {
      const req = this.send(endpoint, { method: 'POST', agent: this.agent, headers }, (res) => {
        const chunks: Buffer[] = [];
        let kept = 0;
        let cut = false;
        res.on('data', (chunk: Buffer) => {
          if (kept >= keepBytes) {
            cut = true;
            return;
          }
          chunks.push(chunk);
          kept += chunk.length;
        });
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), cut, retryAfter: res.headers['retry-after'] });
        });
        res.on('error', fail);
        // An answer cut off (the connection dropped, or the deadline passed mid-answer) is no answer.
        res.on('close', () => {
          if (!res.complete) fail(new Error('the answer was cut off'));
        });
      });
      function fail(err: Error) {
        clearTimeout(timer);
        reject(err);
      }
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${this.options.timeoutMs} ms`)), this.options.timeoutMs);
      req.on('error', fail);
      req.end(body);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.agent.destroy();
  }
}

/**
 * `SHOW FIELD KEYS FROM /^(a|b)$/`: the fields of those measurements only. InfluxQL takes a
 * regular expression after FROM (InfluxQL spec, "SHOW FIELD KEYS", "Regular Expressions": Go's
 * syntax); each name's metacharacters are escaped so that it matches itself alone, and `/`, which
 * would end the literal, is written `\/`.
 */
export function fieldKeysUrl(query: URL, measurements: readonly string[]): URL {
  const alternatives = measurements.map((m) => m.replace(/[\\^$.|?*+()[\]{}]/g, '\\$&').replace(/\//g, '\\/')).join('|');
  const url = new URL(query);
  url.searchParams.set('q', `SHOW FIELD KEYS FROM /^(${alternatives})$/`);
  return url;
}
