import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { parseConfig, setting } from '../../shared/config.ts';
import { hostNamesSetting } from '../../shared/security/host-header.ts';
import { hostLabel, mqttSettings } from '../../shared/mqtt/settings.ts';
import { LIMITS } from '../../shared/limits.ts';
import { GATEWAY_ID_PATTERN } from '../../shared/contract/topics.ts';
import { UPLINK_ENVELOPES } from './uplink-publisher.ts';

/** The gateway's settings (see .env.example and docs/configuration.md). */
export const GatewayConfigSchema = z.object({
  GATEWAY_HOST: setting.host('0.0.0.0'),
  GATEWAY_PORT: setting.port(8443),
  GATEWAY_PATH: z.string().regex(/^\/[A-Za-z0-9/_-]*$/).default('/ws'),
  /** tls: the gateway verifies device certificates itself; proxy: it runs behind Caddy (see identity.ts). */
  GATEWAY_IDENTITY_SOURCE: z.enum(['tls', 'proxy']).default('tls'),
  /**
   * proxy mode, how Caddy reaches the gateway: "mtls" over TCP (GATEWAY_HOST:GATEWAY_PORT, Caddy's
   * client certificate checked), or "unix": a Unix socket at GATEWAY_SOCKET that only Caddy's user
   * can open (no TLS on the hop; docs/deployment.md, "The hop from Caddy to the gateway").
   * Caddy reads the same variable.
   */
  EDGE_HOP: z.enum(['mtls', 'unix']).default('mtls'),
  GATEWAY_SOCKET: z
    .string()
    // sun_path holds 108 bytes with the terminating NUL (unix(7)).
    .refine((p) => p.startsWith('/') && !p.includes('\0') && Buffer.byteLength(p) <= 107, 'must be an absolute path of at most 107 bytes (a Unix socket address)')
    .default('/run/fieldstream/gateway.sock'),
  /** proxy mode: CNs of the service certificates whose forwarded identity header is believed */
  GATEWAY_TRUSTED_PROXIES: z
    .string()
    .default('edge')
    .transform((v) => v.split(',').map((s) => s.trim()).filter(Boolean)),
  /** Serial numbers of revoked certificates, one per line (scripts/revoke-device.sh writes it). */
  GATEWAY_REVOKED_SERIALS_FILE: z.string().default('certs/dmz/revocation/revoked-serials.txt'),
  /** The CA's CRL, handed to each device holding an older one (crl-delivery.ts); missing: none is. */
  GATEWAY_CRL_FILE: z.string().default('certs/ca.crl'),
  /**
   * on: devices without a client certificate may connect by Caddy's token route (CADDY_TOKEN_ROUTE)
   * with a device token (proxy mode only; docs/security-mechanisms.md, "Device tokens"). Off by default.
   */
  GATEWAY_TOKEN_AUTH: z.enum(['on', 'off']).default('off'),
  /** The slow hashes of the device tokens (fieldstream-admin writes it), re-read while running. */
  GATEWAY_DEVICE_TOKENS_FILE: z.string().default('certs/dmz/tokens/device-tokens.json'),
  /** failed device tokens per source address (never per device: DeviceTokens.verify) within the window below before further tries are refused unchecked */
  GATEWAY_TOKEN_MAX_FAILURES: z.coerce.number().int().min(1).max(1000).default(10),
  /** seconds a failed device token counts against its source address */
  GATEWAY_TOKEN_FAILURE_WINDOW_S: z.coerce.number().int().min(1).max(86_400).default(300),
  /** The certificate the gateway serves WSS with, and the CA that client certificates must chain to. */
  GATEWAY_TLS_CERT_FILE: z.string().default('certs/dmz/edge.crt'),
  GATEWAY_TLS_KEY_FILE: z.string().default('certs/dmz/edge.key'),
  GATEWAY_CA_FILE: z.string().default('certs/ca.crt'),
  /** Unique per instance; several gateways may run side by side. */
  GATEWAY_ID: z
    .string()
    .regex(GATEWAY_ID_PATTERN, 'must be 1 to 100 letters, digits, ".", "_" and "-" (it is an MQTT topic level)')
    .default(`${hostLabel()}-${randomBytes(3).toString('hex')}`),
  GATEWAY_MAX_FRAME_BYTES: z.coerce.number().int().min(LIMITS.welcomeFrameMaxBytesMin).max(LIMITS.frameMaxBytes).default(LIMITS.frameMaxBytes),
  GATEWAY_MAX_BATCH: z.coerce.number().int().min(1).max(LIMITS.batchMaxMessages).default(LIMITS.batchMaxMessages),
  GATEWAY_MAX_IN_FLIGHT: setting.positiveInt(LIMITS.inFlightPerConnection),
  /** messages per second per device */
  GATEWAY_RATE_MESSAGES_PER_S: setting.positiveInt(5000),
  /** bytes per second per device (default 8 MiB/s) */
  GATEWAY_RATE_BYTES_PER_S: setting.positiveInt(8 * 1024 * 1024),
  /** milliseconds of the gateway's time per second per device, spent parsing its frames (default 250:
   * a quarter of a core). Measured on one of our machines: readings parse at 16-22 ns a byte, so a
   * device at its byte budget with frames of 1,000 readings of 255 fields spends about 170 ms/s, at
   * its message rate in frames of one reading about 15, with 8 MiB/s of file chunks about 20; JSON
   * made of tiny values parses at 60-85 ns a byte, 8 MiB of it half a second (rate-limit.ts). */
  GATEWAY_RATE_CPU_MS_PER_S: setting.positiveInt(250),
  /** seconds of traffic a quiet device may send at once */
  GATEWAY_RATE_BURST_S: setting.positiveInt(2),
  /** milliseconds a device's messages wait to share one MQTT message with the next ones (0: never) */
  GATEWAY_LINGER_MS: z.coerce.number().int().min(0).max(1000).default(5),
  /**
   * milliseconds a small ack (LIMITS.ackHoldMaxMessages) may wait to leave with the device's next
   * commit receipt, in one write (0: never): one database write and the trip back, at a load the
   * machine holds. A receipt that has not come by then lets the ack go alone, and the device's acks
   * go at once until a receipt reaches it again (dmz/gateway/ack-batcher.ts).
   */
  GATEWAY_ACK_HOLD_MS: z.coerce.number().int().min(0).max(10_000).default(1000),
  /** `gateway`: the readings of all devices share the gateway's envelopes; `device`: each device's its own (for distributors older than the gateway envelope) */
  GATEWAY_UPLINK_ENVELOPES: z.enum(UPLINK_ENVELOPES).default('gateway'),
  /** connections this gateway holds at most */
  GATEWAY_MAX_CONNECTIONS: setting.positiveInt(20_000),
  /** connections held at most before their WebSocket is open (TLS handshake, headers, identity check); past it a new one is closed as accepted */
  GATEWAY_MAX_PENDING_CONNECTIONS: setting.positiveInt(LIMITS.gatewayMaxPendingConnections),
  /** MiB of messages begun and not finished all devices together may keep buffered; past it the connection keeping the most is closed (1013) */
  GATEWAY_UNFINISHED_FRAMES_MAX_MIB: setting.positiveInt(LIMITS.gatewayUnfinishedFramesMaxBytes / (1024 * 1024)),
  /** MiB of envelopes handed to the broker and not yet acknowledged by it; past it new messages are refused (GATEWAY_BROKER_UNAVAILABLE) */
  GATEWAY_BROKER_BACKLOG_MAX_MIB: setting.positiveInt(LIMITS.gatewayBrokerBacklogMaxBytes / (1024 * 1024)),
  /** of those, most one source address holds (an IPv6 one: its /64) while devices connect directly (GATEWAY_IDENTITY_SOURCE=tls) */
  GATEWAY_MAX_PENDING_PER_SOURCE: setting.positiveInt(LIMITS.gatewayMaxPendingPerSource),
  /** Prometheus metrics, /healthz and /readyz on a port of their own ("off": none); never expose it to the internet. */
  GATEWAY_METRICS_HOST: setting.host('127.0.0.1'),
  GATEWAY_METRICS_PORT: setting.portOrOff(9464),
  /** Names the metrics port is reached by besides localhost, IP addresses and GATEWAY_METRICS_HOST (comma-separated; by
   * default the one Prometheus and the console use under compose and Kubernetes): another Host is refused, HTTP_HOST_NOT_SERVED. */
  GATEWAY_METRICS_HOST_NAMES: hostNamesSetting('gateway-metrics'),
  // Its client certificate to the DMZ broker, always the CA's: dmz/gateway.crt serves Caddy and,
  // after a --renew-dmz, is of the gateway's own anchor, which the DMZ broker does not take.
  ...mqttSettings('dmz/gateway-client'),
  LOG_LEVEL: setting.logLevel(),
}).superRefine((c, ctx) => {
  if (c.EDGE_HOP === 'unix' && c.GATEWAY_IDENTITY_SOURCE !== 'proxy') {
    ctx.addIssue({ code: 'custom', path: ['EDGE_HOP'], message: 'EDGE_HOP=unix is the hop from Caddy: it needs GATEWAY_IDENTITY_SOURCE=proxy' });
  }
  // Refused here, at start, not once the broker answers: a gateway whose broker was away waited on
  // with the setting it cannot honour.
  if (c.GATEWAY_TOKEN_AUTH === 'on' && c.GATEWAY_IDENTITY_SOURCE !== 'proxy') {
    ctx.addIssue({ code: 'custom', path: ['GATEWAY_TOKEN_AUTH'], message: "GATEWAY_TOKEN_AUTH=on needs GATEWAY_IDENTITY_SOURCE=proxy: device tokens come by Caddy's token route" });
  }
  // Past the bound the connection keeping the most is closed: below one message of the frame limit
  // (its fragments' headers on top), a device sending such a message alone was closed mid-message on
  // every try, for ever. Twice the frame limit: room for one, and a second beside it.
  if (c.GATEWAY_UNFINISHED_FRAMES_MAX_MIB * 1024 * 1024 < 2 * c.GATEWAY_MAX_FRAME_BYTES) {
    ctx.addIssue({
      code: 'custom',
      path: ['GATEWAY_UNFINISHED_FRAMES_MAX_MIB'],
      message: `must hold at least two messages of GATEWAY_MAX_FRAME_BYTES (${c.GATEWAY_MAX_FRAME_BYTES} bytes): at least ${Math.ceil((2 * c.GATEWAY_MAX_FRAME_BYTES) / (1024 * 1024))}; below one, a device sending one is closed mid-message on every try`,
    });
  }
});
export type GatewayConfig = z.infer<typeof GatewayConfigSchema>;

export function loadGatewayConfig(env: Record<string, string | undefined> = process.env): Readonly<GatewayConfig> {
  return parseConfig(GatewayConfigSchema, env);
}
