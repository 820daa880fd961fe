import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { isFieldStreamError } from '../errors.ts';
import { answerBeforeHandlers, API_ANSWER_HEADERS } from '../http-client-error.ts';
import { LIMITS, TIMINGS } from '../limits.ts';
import { listenFailed } from '../listen-failed.ts';
import { oneRequestAtATime } from '../pipelined-requests.ts';
import { refuseUnservedHost, servedHostNames } from '../security/host-header.ts';
import { closeStalledConnections } from '../stalled-answers.ts';
import type { Logger } from '../logger.ts';
import { probeEventLoop } from './event-loop.ts';
import type { ServiceMetrics } from './registry.ts';

/** A dependency /readyz asks about: the broker connection, the database, ... */
export interface ReadinessCheck {
  name: string;
  ready(): boolean | Promise<boolean>;
}

export interface MetricsServer {
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/**
 * A service's own small HTTP server for operators and orchestrators, apart from the port it serves
 * devices or users on:
 *
 *   GET /metrics   Prometheus text exposition format (prom-client)
 *   GET /healthz   200 while the process answers at all (liveness)
 *   GET /readyz    200 when every check passes, else 503 naming those that fail (readiness); every
 *                  check's name too, so that a reader tells a check that passes from one this
 *                  version does not have (an older service during a rolling upgrade)
 *
 * It reads no request body and answers nothing else (404), so it needs no credential: bind it to
 * loopback (npm start) or the service network (compose), never to the internet. Lacking one, it
 * answers only requests naming localhost, an IP address, `host` or one of `hostNames` (421
 * HTTP_HOST_NOT_SERVED otherwise): a page whose name was made to answer with its address read the
 * metrics as its own origin's (shared/security/host-header.ts).
 */
export async function startMetricsServer(o: {
  metrics: ServiceMetrics;
  host: string;
  port: number;
  /** the setting that chooses `port` (GATEWAY_METRICS_PORT, ...), named when it cannot be listened on */
  setting: string;
  /** the names it is reached by besides localhost, IP addresses and `host` (Prometheus's and the
   * console's, `gateway-metrics`), and the setting that lists them (`GATEWAY_METRICS_HOST_NAMES`) */
  hostNames?: { setting: string; names: readonly string[] };
  checks?: readonly ReadinessCheck[];
  log: Logger;
}): Promise<MetricsServer> {
  // One request of a connection at a time, and a connection whose answers are stuck closed: a
  // client pipelining requests and reading none had the metrics collected and held for each of the
  // thousand requests of one read, and its connection for ever.
  const served = servedHostNames(o.host, o.hostNames?.names ?? []);
  const server: Server = createServer(oneRequestAtATime((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...API_ANSWER_HEADERS });
      res.end(body);
    };
    try {
      refuseUnservedHost(req, served, o.hostNames?.setting ?? 'the service');
    } catch (err) {
      if (!isFieldStreamError(err)) throw err;
      return send(err.httpStatus, 'application/json', JSON.stringify({ code: err.code, message: err.message }));
    }
    if (req.method !== 'GET') return send(405, 'text/plain', 'GET only\n');
    if (path === '/metrics') {
      o.metrics.registry.metrics().then(
        (text) => send(200, o.metrics.registry.contentType, text),
        (err: Error) => {
          o.log.error({ err: err.message }, 'metrics could not be collected');
          send(500, 'text/plain', 'metrics could not be collected\n');
        },
      );
      return;
    }
    if (path === '/healthz') return send(200, 'application/json', JSON.stringify({ status: 'alive', service: o.metrics.service }));
    if (path === '/readyz') {
      void Promise.all((o.checks ?? []).map(async (c) => ({ name: c.name, ok: await Promise.resolve(c.ready()).catch(() => false) }))).then((results) => {
        const failing = results.filter((r) => !r.ok).map((r) => r.name);
        send(failing.length === 0 ? 200 : 503, 'application/json', JSON.stringify({ status: failing.length === 0 ? 'ready' : 'not ready', service: o.metrics.service, checks: results.map((r) => r.name), failing }));
      });
      return;
    }
    send(404, 'text/plain', 'not found: /metrics, /healthz, /readyz\n');
  }, LIMITS.metricsPipelinedRequestsMaxWaiting));
  // What Node's parser refuses (a malformed header, headers past its limit) gets a coded answer with
  // the same headers, not Node's bare 400; an unknown Expect, not Node's bare 417.
  answerBeforeHandlers(server, (code, message) => ({ code, message }), API_ANSWER_HEADERS);
  closeStalledConnections(server, () => TIMINGS.metricsAnswerStallMs, o.log);
  // A connection that sends nothing is watched by none of Node's timeouts (headersTimeout starts with
  // a request's first byte): closed once silent for metricsIdleBeforeRequestMs. Its first request
  // lifts the limit (a /readyz check's wait is no silence); between requests keepAliveTimeout takes over.
  server.on('connection', (socket: Socket) => void socket.setTimeout(TIMINGS.metricsIdleBeforeRequestMs));
  server.on('request', (req: IncomingMessage) => void req.socket.setTimeout(0));
  // How many there may be at once: one more is closed as it is accepted.
  server.maxConnections = LIMITS.metricsMaxConnections;
  server.headersTimeout = TIMINGS.metricsHeadersTimeoutMs;
  server.requestTimeout = TIMINGS.metricsRequestTimeoutMs;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(listenFailed(`Metrics of ${o.metrics.service}`, `${o.host}:${o.port}`, o.setting, err)));
    server.listen(o.port, o.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${o.host.includes(':') ? `[${o.host}]` : o.host}:${port}`;
  o.log.info({ url: `${url}/metrics` }, 'metrics and health served');
  const stopProbe = o.metrics.eventLoopDelay ? probeEventLoop(o.metrics.eventLoopDelay) : undefined;
  return {
    port,
    url,
    close: () =>
      new Promise<void>((resolve) => {
        stopProbe?.();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
