import { z } from 'zod';
import { parseConfig, setting } from '../../shared/config.ts';
import { hostNamesSetting } from '../../shared/security/host-header.ts';
import { DAY_S, LIMITS, TIMINGS } from '../../shared/limits.ts';
import { GatewayIdSchema } from '../../shared/contract/envelope.ts';
import { clientIdSetting, mqttSettings } from '../../shared/mqtt/settings.ts';
import { checkInfluxSettings, influxSettings } from '../shared/influx-settings.ts';
import { checkPostgresSettings, postgresSettings } from './sinks/postgres/settings.ts';

/** The distributor's settings (see .env.example and docs/configuration.md). */
export const DistributorConfigSchema = z
  .object({
    ...mqttSettings('internal/distributor'),
    /** Stable per instance: it names the broker session that holds messages while the distributor is down. */
    DISTRIBUTOR_CLIENT_ID: clientIdSetting('distributor'),
    /** Shared-subscription group, so several distributors split the load; "none" subscribes plainly. */
    DISTRIBUTOR_SHARE_GROUP: z.string().regex(/^[A-Za-z0-9._-]+$/).default('distributors'),
    /** MQTT connections in the share group, each with one message in progress; their writes are
     * combined into one database request (group commit). Keep it stable across restarts: each is a
     * persistent broker session. As many messages as this are in progress at once, which is what a
     * database request can gather: with 4, a fleet of 2,000 devices sending one reading a second
     * each fell seconds behind (a request per few readings); with 32 it kept a p50 of 30 ms
     * (docs/performance.md). */
    DISTRIBUTOR_CONSUMERS: z.coerce.number().int().min(1).max(LIMITS.distributorMaxConsumers).default(32),
    /** points per database request */
    DISTRIBUTOR_BATCH_MAX_POINTS: z.coerce.number().int().min(1).max(100_000).default(5000),
    /** database requests in flight at once */
    DISTRIBUTOR_WRITE_CONCURRENCY: z.coerce.number().int().min(1).max(16).default(2),
    /** milliseconds: the longest pause between two attempts to write while the database is down */
    DISTRIBUTOR_RETRY_MAX_MS: setting.timerMs(30_000),
    ...influxSettings(),
    ...postgresSettings(),
    FILE_STORAGE_PATH: z.string().default('./data/files'),
    FILE_STORAGE_TYPE: z.enum(['local'], { message: 'only "local" is supported (mount object storage as a folder for s3, azure or gcs)' }).default('local'),
    DEAD_LETTER_PATH: z.string().default('./data/dead-letter'),
    /** bytes the dead-letter folder may hold on disk (all its files); invalid payloads get half of it.
     * Past it a message holding data is not acknowledged until there is room (dead-letter.ts). At
     * least the largest letter (LIMITS.deadLetterLetterMaxBytes): a smaller bound could never hold
     * one, and its message would stay unacknowledged whatever room was made. */
    DEAD_LETTER_MAX_BYTES: z.coerce.number().int().min(LIMITS.deadLetterLetterMaxBytes, `must be at least ${LIMITS.deadLetterLetterMaxBytes} bytes: the largest dead letter (a payload of the broker's largest packet, in base64)`).default(LIMITS.deadLetterMaxBytes),
    /** The registry of device signing keys (DEVICE_ID.key), written by scripts/generate-client-cert.sh. */
    DISTRIBUTOR_DEVICE_KEYS_DIR: z.string().default('certs/internal/device-keys'),
    /** Devices revoked by scripts/revoke-device.sh, one id per line: their messages are refused. */
    DISTRIBUTOR_REVOKED_DEVICES_FILE: z.string().default('certs/internal/revoked-devices.txt'),
    /** Refuse messages without a device signature (the production compose file sets true). */
    DISTRIBUTOR_REQUIRE_SIGNATURES: setting.bool(false),
    /** seconds a message's signing time may lie after its arrival at the gateway (the clocks' disagreement) */
    DISTRIBUTOR_FRESHNESS_S: setting.positiveInt(30),
    /** seconds after its signing a message may reach the gateway (a slow link: TIMINGS.deviceTransitMaxMs) */
    DISTRIBUTOR_TRANSIT_MAX_S: setting.positiveInt(TIMINGS.deviceTransitMaxMs / 1000),
    /** seconds a message may wait between the gateway and the distributor (default 7 days) */
    DISTRIBUTOR_MAX_DELAY_S: setting.positiveInt(7 * DAY_S),
    /** days: the oldest a point's own time may be; older, its message is a dead letter (LIMITS.pointMaxAgeDays) */
    DISTRIBUTOR_MAX_POINT_AGE_DAYS: setting.positiveInt(LIMITS.pointMaxAgeDays),
    /** The gateway ids presences are stored under (comma- or blank-separated); empty: the first DISTRIBUTOR_MAX_GATEWAYS seen (security/gateway-admission.ts). */
    DISTRIBUTOR_GATEWAYS: z
      .string()
      .default('')
      .transform((v) => v.split(/[\s,]+/).filter((e) => e !== ''))
      .pipe(z.array(GatewayIdSchema)),
    /** Without DISTRIBUTOR_GATEWAYS: the most distinct gateway ids admitted, remembered in DISTRIBUTOR_STATE_DIR. */
    DISTRIBUTOR_MAX_GATEWAYS: z.coerce.number().int().min(1).max(1_000_000).default(LIMITS.distributorMaxGateways),
    /** the replay windows live here; keep it on persistent storage */
    DISTRIBUTOR_STATE_DIR: z.string().default('./data/distributor-state'),
    /** A file touched every 10 s (TIMINGS.healthFileIntervalMs) while connected, once subscribed (or taking its session's messages), for container health checks. */
    DISTRIBUTOR_HEALTH_FILE: z.string().optional(),
    /** "on": publish what was written on the stored feed (fieldstream/v1/internal/stored) for the operator console. */
    DISTRIBUTOR_FEED: z.enum(['on', 'off']).default('on'),
    /** The key the stored feed is sealed with (64 hex digits, made by scripts/generate-certificates.sh); the console's CONSOLE_STORED_FEED_KEY_FILE holds the same. Read only with DISTRIBUTOR_FEED=on. */
    DISTRIBUTOR_STORED_FEED_KEY_FILE: z.string().default('certs/internal/stored-feed.key'),
    /** Prometheus metrics, /healthz and /readyz on a port of their own ("off": none). */
    DISTRIBUTOR_METRICS_HOST: setting.host('127.0.0.1'),
    DISTRIBUTOR_METRICS_PORT: setting.portOrOff(9465),
    /** Names the metrics port is reached by besides localhost, IP addresses and DISTRIBUTOR_METRICS_HOST (comma-separated; by
     * default the one Prometheus and the console use under compose and Kubernetes): another Host is refused, HTTP_HOST_NOT_SERVED. */
    DISTRIBUTOR_METRICS_HOST_NAMES: hostNamesSetting('distributor-metrics'),
    LOG_LEVEL: setting.logLevel(),
  })
  .superRefine((c, ctx) => {
    checkInfluxSettings(c, ctx);
    checkPostgresSettings(c, ctx);
  });
export type DistributorConfig = z.infer<typeof DistributorConfigSchema>;

export function loadDistributorConfig(env: Record<string, string | undefined> = process.env): Readonly<DistributorConfig> {
  return parseConfig(DistributorConfigSchema, env);
}
