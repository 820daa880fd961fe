import { z } from 'zod';
import { parseConfig, setting } from '../../shared/config.ts';
import { DeviceIdSchema } from '../../shared/contract/primitives.ts';
import { DAY_S, LIMITS, TIMINGS } from '../../shared/limits.ts';
import { hostNamesSetting } from '../../shared/security/host-header.ts';
import { GatewayUrlListSchema } from './gateway-urls.ts';

const portOrOff = (fallback: number) =>
  z
    .union([z.literal('off'), z.coerce.number().int().min(0).max(65535)])
    .default(fallback)
    .transform((v) => (v === 'off' ? undefined : v));

/** The field client's settings (see .env.example and docs/configuration.md). */
export const FieldClientConfigSchema = z.object({
  DEVICE_ID: DeviceIdSchema,
  GATEWAY_URL: GatewayUrlListSchema,
  FIELD_CA_FILE: z.string().default('/certs/ca.crt'),
  FIELD_CERT_FILE: z.string().default('/certs/client.crt'),
  FIELD_KEY_FILE: z.string().default('/certs/client.key'),
  /**
   * The CA's CRL (PEM or DER): a server certificate it lists is refused (the old edge certificate
   * after a --renew-dmz). Unset: the ca.crl beside FIELD_CA_FILE when there is one (the device
   * bundle's certs/ca.crl), none otherwise. See field-client/src/server-crl.ts.
   */
  FIELD_CRL_FILE: z.string().min(1).optional(),
  /**
   * A device without a certificate: the file holding its device token (device.token from its
   * bundle). Set, the client sends "Authorization: Bearer <token>" on the WebSocket upgrade to
   * Caddy's token route (GATEWAY_URL with its port) and reads no FIELD_CERT_FILE / FIELD_KEY_FILE.
   */
  FIELD_TOKEN_FILE: z.string().optional(),
  /** The device's message-signing key (64 hex digits, from its bundle); without it messages go unsigned. */
  FIELD_SIGNING_KEY_FILE: z.string().optional(),
  /** The durable queue, the file outbox and the command journal live here. */
  FIELD_DATA_DIR: z.string().default('/var/lib/fieldstream'),
  /** bytes on disk for the queue and the files waiting to be sent (default 1 GiB) */
  FIELD_QUEUE_MAX_BYTES: z.coerce.number().int().min(1024 * 1024).default(1024 * 1024 * 1024),
  /** bytes per queue segment file */
  FIELD_QUEUE_SEGMENT_BYTES: z.coerce.number().int().min(64 * 1024).max(256 * 1024 * 1024).default(16 * 1024 * 1024),
  /** when the queue is full: refuse new data (reject), or drop the oldest segment, whatever its records' state (drop-oldest: docs/field-client.md) */
  FIELD_QUEUE_FULL_POLICY: z.enum(['reject', 'drop-oldest']).default('reject'),
  /**
   * "always": fsync before a reading is acknowledged to its producer (readings arriving together
   * share one fsync). A number N: fsync every N milliseconds — faster, but a power cut (not a
   * crash of the client) can lose the last N ms of accepted readings.
   */
  FIELD_QUEUE_SYNC: z
    .union([z.literal('always'), z.coerce.number().int().min(1).max(60_000)])
    .default('always')
    .transform((v) => (v === 'always' ? { mode: 'always' as const } : { mode: 'interval' as const, ms: v })),
  /** messages per frame */
  FIELD_BATCH_MAX: z.coerce.number().int().min(1).max(LIMITS.batchMaxMessages).default(500),
  /** messages sent and not yet acknowledged */
  FIELD_WINDOW: setting.positiveInt(2000),
  /** bytes per file chunk */
  FIELD_FILE_CHUNK_BYTES: z.coerce.number().int().min(LIMITS.fieldFileChunkMinBytes).max(4 * 1024 * 1024).default(1024 * 1024),
  /**
   * milliseconds after the gateway's ack within which a message's commit receipt must come, or it
   * is sent again (the copy is recognised on the internal side and answered with a receipt)
   */
  FIELD_COMMIT_TIMEOUT_MS: z.coerce.number().int().min(1000).max(3_600_000).default(60_000),
  /**
   * messages: how far ahead of the oldest message not yet committed the client may send. At most
   * the internal side's replay window less one frame, so a copy sent again is always recognised.
   */
  FIELD_COMMIT_WINDOW_MESSAGES: z.coerce.number().int().min(LIMITS.batchMaxMessages).max(LIMITS.replayWindowSeqs - LIMITS.batchMaxMessages).default(50_000),
  /** bytes of messages acknowledged by the gateway and awaiting their receipt, at most (default 64 MiB) */
  FIELD_COMMIT_WINDOW_BYTES: z.coerce.number().int().min(64 * 1024).default(64 * 1024 * 1024),
  /** chunks of one file sent and not yet committed */
  FIELD_FILE_WINDOW: z.coerce.number().int().min(1).max(64).default(4),
  /** milliseconds: the longest pause between reconnect attempts */
  FIELD_RECONNECT_MAX_MS: setting.timerMs(30_000),
  /** Local HTTP input and status endpoint ("off" to disable). */
  FIELD_HTTP_HOST: setting.host('127.0.0.1'),
  FIELD_HTTP_PORT: portOrOff(8081),
  /** Names the HTTP input is reached by, besides localhost, IP addresses and FIELD_HTTP_HOST (comma-separated):
   * a request naming any other host is refused (HTTP_HOST_NOT_SERVED), as a page rebound to the device sends. */
  FIELD_HTTP_HOST_NAMES: hostNamesSetting(),
  /** Prometheus metrics, /healthz and /readyz (ready = connected to the gateway) on a port of their own ("off" to disable). */
  FIELD_METRICS_HOST: setting.host('127.0.0.1'),
  FIELD_METRICS_PORT: setting.portOrOff(9467),
  /** Names the metrics port is reached by besides localhost, IP addresses and FIELD_METRICS_HOST (comma-separated): another Host is refused, HTTP_HOST_NOT_SERVED. */
  FIELD_METRICS_HOST_NAMES: hostNamesSetting(),
  /** Local MQTT input for sensors ("off" to disable). */
  FIELD_MQTT_HOST: setting.host('127.0.0.1'),
  FIELD_MQTT_PORT: portOrOff(1883),
  FIELD_MQTT_TOPIC_PREFIX: z.string().regex(/^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*$/).default('fieldstream/local'),
  /** Take Sparkplug B (spBv1.0/# topics) on the local MQTT input too, as a host application would. */
  FIELD_MQTT_SPARKPLUG: setting.bool(false),
  /**
   * Sparkplug B host application on a plant's MQTT broker (mqtt:// or mqtts://); unset: off.
   * See docs/field-client.md, "Sparkplug B input".
   */
  FIELD_SPARKPLUG_URL: setting.url(['mqtt', 'mqtts']).optional(),
  /** Comma-separated Sparkplug group ids to follow; empty: every group on the broker. */
  FIELD_SPARKPLUG_GROUPS: z
    .string()
    .default('')
    .transform((v) => v.split(',').map((g) => g.trim()).filter((g) => g !== ''))
    .pipe(z.array(z.string().regex(/^[^+/#]{1,256}$/, 'a group id holds no "+", "/" or "#"'))),
  /** PEM file: the CA the broker's certificate is verified against (mqtts; default: the system's CAs) */
  FIELD_SPARKPLUG_CA_FILE: z.string().optional(),
  /** PEM files: a client certificate and its key, for a broker that asks for one */
  FIELD_SPARKPLUG_CERT_FILE: z.string().optional(),
  FIELD_SPARKPLUG_KEY_FILE: z.string().optional(),
  /** A user name for the broker, and a file holding its password (never the password itself) */
  FIELD_SPARKPLUG_USERNAME: z.string().optional(),
  FIELD_SPARKPLUG_PASSWORD_FILE: z.string().optional(),
  /** The MQTT client id on the plant's broker (default: fieldstream-<DEVICE_ID>) */
  FIELD_SPARKPLUG_CLIENT_ID: z.string().min(1).max(128).optional(),
  /** With a host id, the Sparkplug 3.0 STATE message is published on spBv1.0/STATE/<id> (the plant's broker, and the local MQTT input's); unset: none. */
  FIELD_SPARKPLUG_HOST_ID: z.string().regex(/^[^+/#]{1,256}$/, 'holds no "+", "/" or "#"').optional(),
  /**
   * milliseconds a Sparkplug message that arrived ahead of its seq is held for the missing ones
   * (Sparkplug 3.0.0 §5.9, "Reorder Timeout") before a rebirth is requested; 0: requested at once.
   */
  FIELD_SPARKPLUG_REORDER_TIMEOUT_MS: z.coerce.number().int().min(0).max(60_000).default(TIMINGS.sparkplugReorderTimeoutMs),
  /** A folder whose new files are sent (and moved out of it once accepted). */
  FIELD_WATCH_DIR: z.string().optional(),
  /** milliseconds between looks at FIELD_WATCH_DIR; a file is taken once its size held still for one interval */
  FIELD_WATCH_INTERVAL_MS: setting.timerMs(1000),
  /** JSON file mapping command names to handlers (see docs/field-client.md) */
  FIELD_COMMANDS_FILE: z.string().optional(),
  /**
   * Run commands that carry no authentication from the command API. Only for a device WITHOUT a
   * signing key (a device with one always requires it); anyone holding the DMZ can then command it.
   */
  FIELD_ALLOW_UNSIGNED_COMMANDS: setting.bool(false),
  /**
   * commands whose handler runs at once (an exec program each); the others wait, in order of
   * arrival, for one to end (a device back online is delivered every command queued for it at once)
   */
  FIELD_COMMANDS_CONCURRENCY: z.coerce
    .number({ error: 'must be a whole number of commands' })
    .int({ error: 'must be a whole number of commands' })
    .min(1, { error: `must be at least 1 (commands run at once)` })
    .max(LIMITS.fieldCommandsConcurrencyMax, { error: `must be at most ${LIMITS.fieldCommandsConcurrencyMax} (commands run at once)` })
    .default(LIMITS.fieldCommandsConcurrencyDefault),
  /** seconds: the oldest command run, by its issuedAt (default: the command API's longest TTL, 30 days) */
  FIELD_COMMAND_MAX_AGE_S: setting.positiveInt(LIMITS.commandMaxTtlS),
  /** seconds: how far the command API's clock may be ahead of (or behind) the device's */
  FIELD_COMMAND_CLOCK_SKEW_S: z.coerce.number().int().min(0).max(DAY_S).default(300),
  /**
   * seconds between health messages (uptime, backlog, free disk, certificate, clock, local
   * programs' values; docs/field-client.md); "off" or 0 sends none
   */
  FIELD_HEALTH_INTERVAL_S: z
    .union([z.literal('off'), z.coerce.number().int().min(0).max(LIMITS.healthIntervalMaxS)])
    .default(60)
    .transform((v) => (v === 'off' || v === 0 ? undefined : v)),
  /** Run the built-in simulated sensor (readings, events, files). */
  FIELD_SIMULATE: setting.bool(false),
  /** milliseconds between simulated readings */
  FIELD_SAMPLE_INTERVAL_MS: setting.timerMs(1000),
  LOG_LEVEL: setting.logLevel(),
});
export type FieldClientConfig = z.infer<typeof FieldClientConfigSchema>;

export function loadFieldClientConfig(env: Record<string, string | undefined> = process.env): Readonly<FieldClientConfig> {
  return parseConfig(FieldClientConfigSchema, env);
}
