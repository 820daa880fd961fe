import type { Counter } from 'prom-client';
import { DATA_TYPES, type DataType } from '../../shared/contract/payloads.ts';
import type { ErrorCode } from '../../shared/errors.ts';
import { ServiceMetrics } from '../../shared/metrics/registry.ts';

/**
 * Every code a WebSocket upgrade is refused with (server.ts `upgrade`, identity.ts,
 * device-tokens.ts). gateway_connections_refused_total exposes each at 0 from the start: a series
 * that appears only at its first refusal, already at 1, shows Prometheus no increase, so an alert on
 * it (FieldStreamRevokedDeviceAttempts) missed the first attempt. A code missing here is still
 * counted, from its first refusal on; test/unit/monitoring.test.ts keeps the list whole.
 */
export const CONNECTION_REFUSAL_CODES = [
  'GATEWAY_WRONG_PATH',
  'GATEWAY_UPGRADE_INVALID',
  'GATEWAY_ACKS_HEADER_INVALID',
  'GATEWAY_TOO_MANY_CONNECTIONS',
  'GATEWAY_TOO_MANY_PENDING',
  'GATEWAY_RECONNECTING_TOO_FAST',
  'GATEWAY_NO_CLIENT_CERTIFICATE',
  'GATEWAY_NOT_A_DEVICE_CERTIFICATE',
  'GATEWAY_UNTRUSTED_PROXY',
  'GATEWAY_CERTIFICATE_REVOKED',
  'GATEWAY_TOKEN_AUTH_DISABLED',
  'GATEWAY_TOKEN_MISSING',
  'GATEWAY_TOKEN_UNKNOWN_DEVICE',
  'GATEWAY_TOKEN_INVALID',
  'GATEWAY_TOKEN_REVOKED',
  'GATEWAY_TOKEN_EXPIRED',
  'GATEWAY_TOKEN_THROTTLED',
  'GATEWAY_INTERNAL',
] as const satisfies readonly ErrorCode[];

/**
 * The gateway's metrics (docs/monitoring.md): what it accepted, what it refused and why, and how long
 * the broker took. No series is per device: the fleet's size must not grow them.
 */
export class GatewayMetrics {
  readonly brokerConnected;
  readonly connections;
  readonly frames;
  /** per data type, its child bound once: the frame path does no label lookup */
  private readonly messagesBy: Record<DataType, Counter.Internal>;
  readonly refused;
  readonly connectionsRefused;
  readonly rateLimited;
  readonly publishSeconds;
  readonly receipts;
  readonly crlsHanded;
  private connected: () => boolean = () => false;
  private open: () => number = () => 0;
  private pending: () => number = () => 0;
  private unfinishedBytes: () => number = () => 0;
  readonly unfinishedShed;
  private backlogBytes: () => number = () => 0;
  readonly backlogRefusals;

  constructor(readonly metrics: ServiceMetrics = new ServiceMetrics('gateway', { processMetrics: false })) {
    const self = this;
    this.brokerConnected = metrics.gauge('broker_connected', 'Whether the gateway is connected to its MQTT broker (1) or not (0).', [], function () {
      this.set(self.connected() ? 1 : 0);
    });
    this.connections = metrics.gauge('gateway_connections', 'Device WebSocket connections open.', [], function () {
      this.set(self.open());
    });
    metrics.gauge('gateway_pending_connections', 'Connections accepted whose WebSocket is not open yet (TLS handshake, request headers, identity check); bounded by GATEWAY_MAX_PENDING_CONNECTIONS.', [], function () {
      this.set(self.pending());
    });
    metrics.gauge('gateway_unfinished_frame_bytes', 'Bytes of messages devices have begun and not finished, kept buffered (bounded by GATEWAY_UNFINISHED_FRAMES_MAX_MIB).', [], function () {
      this.set(self.unfinishedBytes());
    });
    this.unfinishedShed = metrics.counter('gateway_unfinished_frames_shed_total', 'Connections closed (1013) because devices together kept more of unfinished messages than GATEWAY_UNFINISHED_FRAMES_MAX_MIB: the one keeping the most each time.');
    metrics.gauge('gateway_broker_backlog_bytes', 'Bytes of envelopes handed to the broker and not yet acknowledged by it (bounded by GATEWAY_BROKER_BACKLOG_MAX_MIB).', [], function () {
      this.set(self.backlogBytes());
    });
    this.backlogRefusals = metrics.counter('gateway_broker_backlog_refusals_total', 'Groups of messages refused (GATEWAY_BROKER_UNAVAILABLE) because the broker had not acknowledged GATEWAY_BROKER_BACKLOG_MAX_MIB of envelopes.');
    this.frames = metrics.counter('gateway_frames_total', 'Frames accepted from devices (parsed, identity and rate checked).');
    const messages = metrics.counter('gateway_messages_total', 'Messages accepted from devices and acknowledged to them (the broker answered PUBACK), by data type.', ['data_type']);
    this.messagesBy = Object.fromEntries(DATA_TYPES.map((t) => [t, messages.labels(t)])) as Record<DataType, Counter.Internal>;
    this.refused = metrics.counter('gateway_refused_total', 'Error frames sent to devices, by error code: a refused frame, or the messages of a frame the broker did not take (GATEWAY_RATE_LIMITED included).', ['code']);
    this.connectionsRefused = metrics.counter('gateway_connections_refused_total', 'WebSocket upgrades refused, by error code (revoked certificate, too many connections, wrong path, ...).', ['code']);
    for (const code of CONNECTION_REFUSAL_CODES) this.connectionsRefused.labels(code).inc(0);
    this.rateLimited = metrics.counter('gateway_rate_limited_total', 'Frames refused because their device was over its rate limit.');
    this.publishSeconds = metrics.histogram('gateway_publish_seconds', 'Seconds from publishing an envelope to the broker to its PUBACK (successful publishes only).');
    this.receipts = metrics.counter('gateway_receipts_total', 'Commit receipts forwarded to connected devices.');
    this.crlsHanded = metrics.counter('gateway_crls_handed_total', "The CA's CRL (GATEWAY_CRL_FILE) handed to devices that held an older one: after a --renew-dmz, how many have learnt the revocation.");
  }

  /** The live values the gauges read at scrape time. */
  bind(o: { brokerConnected: () => boolean; connections: () => number; pending?: () => number; unfinishedBytes?: () => number; brokerBacklogBytes?: () => number }): void {
    this.connected = o.brokerConnected;
    this.open = o.connections;
    if (o.pending) this.pending = o.pending;
    if (o.unfinishedBytes) this.unfinishedBytes = o.unfinishedBytes;
    if (o.brokerBacklogBytes) this.backlogBytes = o.brokerBacklogBytes;
  }

  messages(dataType: DataType, n: number): void {
    this.messagesBy[dataType].inc(n);
  }

  refusal(code: ErrorCode | string, n = 1): void {
    this.refused.inc({ code }, n);
  }
}
