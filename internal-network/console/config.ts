import { isIP } from 'node:net';
import { z } from 'zod';
import { parseConfig, setting } from '../../shared/config.ts';
import { hostNamesSetting } from '../../shared/security/host-header.ts';
import { clientIdSetting, mqttSettings } from '../../shared/mqtt/settings.ts';
import { checkInfluxSettings, influxSettings } from '../shared/influx-settings.ts';
import { checkPostgresSettings, postgresSettings } from '../shared/postgres-settings.ts';

/** `name=url,name=url`: the services whose /readyz and /metrics the pipeline page shows. */
const PipelineTargetsSchema = z
  .string()
  .default('')
  .transform((s, ctx) => {
    const targets: Array<{ name: string; url: string }> = [];
    for (const item of s.split(',').map((x) => x.trim()).filter(Boolean)) {
      const m = /^([A-Za-z0-9._-]{1,40})=(https?:\/\/\S+)$/.exec(item);
      if (!m || !URL.canParse(m[2] as string)) {
        ctx.addIssue({ code: 'custom', message: `"${item.slice(0, 80)}" is not name=http://host:port` });
        return z.NEVER;
      }
      targets.push({ name: m[1] as string, url: (m[2] as string).replace(/\/+$/, '') });
    }
    return targets;
  });

/**
 * `10.0.0.5,10.1.0.0/16`: the addresses (or CIDR ranges) the operators' TLS proxy connects from.
 * Their X-Forwarded-Proto and X-Forwarded-For are believed (the Secure cookie, the login limit per
 * operator); anyone else's are ignored. A range of every address (`/0`) is refused: it would let any
 * client claim HTTPS and a new address per login attempt.
 */
const TrustedProxySchema = z
  .string()
  .optional()
  .transform((s, ctx) => {
    if (s === undefined) return undefined;
    const list: string[] = [];
    for (const item of s.split(',').map((x) => x.trim()).filter(Boolean)) {
      const [addr = '', prefix, extra] = item.split('/');
      const family = isIP(addr);
      const bits = family === 4 ? 32 : 128;
      const ok = family !== 0 && extra === undefined && (prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) >= 1 && Number(prefix) <= bits));
      if (!ok) {
        ctx.addIssue({ code: 'custom', message: `"${item.slice(0, 80)}" is not an IP address or a CIDR range (e.g. 10.0.0.5 or 10.1.0.0/16; /0 is refused)` });
        return z.NEVER;
      }
      list.push(item);
    }
    return list.length > 0 ? list : undefined;
  });

/** The console's settings (see .env.example and docs/console.md). */
export const ConsoleConfigSchema = z
  .object({
    CONSOLE_HOST: setting.host('127.0.0.1'),
    CONSOLE_PORT: setting.port(8090),
    /** Set the session cookie's Secure flag: true whenever browsers reach the console over HTTPS. */
    CONSOLE_COOKIE_SECURE: setting.bool(false),
    /** The TLS proxy in front (addresses or CIDRs, comma-separated): its X-Forwarded-Proto/-For are believed. Unset: no one's. */
    CONSOLE_TRUSTED_PROXY: TrustedProxySchema,
    /** seconds a login lasts */
    CONSOLE_SESSION_TTL_S: setting.positiveInt(8 * 3600),
    /** login attempts (right or wrong) per client address per minute; past it CONSOLE_LOGIN_RATE_LIMITED */
    CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE: setting.positiveInt(10),
    /** seconds without health or data after which a connected device is stale (3 health intervals) */
    CONSOLE_STALE_AFTER_S: setting.positiveInt(180),
    /** where commands are sent (with the logged-in user's own credential) */
    CONSOLE_COMMAND_API_URL: setting.url(['http', 'https']).default('http://127.0.0.1:8080'),
    /** name=url of each service whose /readyz and /metrics the pipeline page shows */
    CONSOLE_PIPELINE_TARGETS: PipelineTargetsSchema,
    /** Score every numeric field for anomalies (docs/anomaly-detection.md). */
    CONSOLE_ANOMALY: z.enum(['on', 'off']).default('on'),
    /** Where the anomaly detectors' state is saved, to be restored at the next start ("off": not saved,
     * every restart starts every device afresh). */
    CONSOLE_STATE_DIR: z.string().min(1).default('./data/console-state'),
    /** The management API under /api/v1/manage (bearer tokens; docs/management-api.md). */
    CONSOLE_MANAGE_API: z.enum(['on', 'off']).default('on'),
    /** Prometheus metrics, /healthz and /readyz on a port of their own ("off": none). */
    CONSOLE_METRICS_HOST: setting.host('127.0.0.1'),
    CONSOLE_METRICS_PORT: setting.portOrOff(9469),
    /** Names the metrics port is reached by besides localhost, IP addresses and CONSOLE_METRICS_HOST (comma-separated; by
     * default the one Prometheus and the console use under compose and Kubernetes): another Host is refused, HTTP_HOST_NOT_SERVED. */
    CONSOLE_METRICS_HOST_NAMES: hostNamesSetting('console-metrics'),
    /** Login credentials: the command API's (COMMAND_API_TOKEN is the operator's; the file adds named tokens with roles). */
    COMMAND_API_TOKEN: z.string().min(24, 'must be at least 24 characters (e.g. openssl rand -hex 32)').optional(),
    COMMAND_API_TOKENS_FILE: z.string().optional(),
    /** The devices the internal network knows: every DEVICE_ID.key here is listed, heard of or not. */
    CONSOLE_DEVICE_KEYS_DIR: z.string().default('certs/internal/device-keys'),
    /** The revoked devices (scripts/revoke-device.sh): flagged in the fleet. */
    CONSOLE_REVOKED_DEVICES_FILE: z.string().default('certs/internal/revoked-devices.txt'),
    /** The device tokens file the gateways read (GATEWAY_DEVICE_TOKENS_FILE, a copy of it): how each device
     * authenticates and when its token expires, for the management API. Missing: auth is unknown (null). */
    CONSOLE_DEVICE_TOKENS_FILE: z.string().default('certs/dmz/tokens/device-tokens.json'),
    /** The key the distributors seal the stored feed with (their DISTRIBUTOR_STORED_FEED_KEY_FILE): a
     * message whose MAC does not verify under it is refused, whatever topic it came on. */
    CONSOLE_STORED_FEED_KEY_FILE: z.string().default('certs/internal/stored-feed.key'),
    ...influxSettings(),
    /** History from PostgreSQL when POSTGRES_URL or PGHOST is set: the distributor's settings (docs/postgres.md). */
    ...postgresSettings(),
    ...mqttSettings('internal/console'),
    CONSOLE_CLIENT_ID: clientIdSetting('console'),
    LOG_LEVEL: setting.logLevel(),
  })
  .superRefine((c, ctx) => {
    checkInfluxSettings(c, ctx);
    checkPostgresSettings(c, ctx);
    if (c.COMMAND_API_TOKEN === undefined && c.COMMAND_API_TOKENS_FILE === undefined) {
      ctx.addIssue({ code: 'custom', path: ['COMMAND_API_TOKEN'], message: 'set COMMAND_API_TOKEN or COMMAND_API_TOKENS_FILE: no one could log in' });
    }
  });
export type ConsoleConfig = z.infer<typeof ConsoleConfigSchema>;

export function loadConsoleConfig(env: Record<string, string | undefined> = process.env): Readonly<ConsoleConfig> {
  return parseConfig(ConsoleConfigSchema, env);
}
