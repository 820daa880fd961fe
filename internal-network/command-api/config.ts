import { z } from 'zod';
import { parseConfig, setting } from '../../shared/config.ts';
import { hostNamesSetting } from '../../shared/security/host-header.ts';
import { DAY_S, LIMITS } from '../../shared/limits.ts';
import { clientIdSetting, mqttSettings } from '../../shared/mqtt/settings.ts';
import { checkPostgresSettings, postgresSettings } from '../shared/postgres-settings.ts';
import { checkInfluxSettings, influxSettings } from '../shared/influx-settings.ts';

/** The InfluxDB settings without TIMESERIES_LOCAL_PATH (the local store the command API never reads). */
function influxOnly() {
  const { TIMESERIES_LOCAL_PATH: _local, ...rest } = influxSettings();
  return rest;
}

/** The command API's settings (see .env.example and docs/configuration.md). */
const CommandApiSettings = z.object({
  COMMAND_API_HOST: setting.host('127.0.0.1'),
  COMMAND_API_PORT: setting.port(8080),
  /** A bearer token with the operator role: long and random (e.g. `openssl rand -hex 32`). */
  COMMAND_API_TOKEN: z.string().min(24, 'must be at least 24 characters (e.g. openssl rand -hex 32)'),
  /** JSON file of further credentials with roles: [{"name", "role": "viewer"|"operator"|"admin", "sha256"}] */
  COMMAND_API_TOKENS_FILE: z.string().optional(),
  /** JSON file {"group": ["device-id", ...]} naming groups of devices */
  COMMAND_GROUPS_FILE: z.string().optional(),
  /** Where command state is journaled, so a restart keeps it. */
  COMMAND_STATE_PATH: z.string().default('./data/commands.jsonl'),
  /** seconds a command stays deliverable when the request does not say; at most what a request may
   * ask for (LIMITS.commandMaxTtlS, the field client's default FIELD_COMMAND_MAX_AGE_S): longer, a
   * command was signed with an expiry the device refuses as stale, and one past a Date's range was
   * journaled and sent, then answered 500 (and listed by no GET again). */
  COMMAND_DEFAULT_TTL_S: z.coerce.number().int().min(1).max(LIMITS.commandMaxTtlS).default(DAY_S),
  /** seconds after which a command sent and not answered is sent again while its device is online
   * ("off": only at the device's next presence, which a gateway publishes once a day to a device
   * that stays connected). The device may have put it off (FIELD_COMMANDS_WAITING_FULL,
   * FIELD_QUEUE_FULL) running nothing; it answers each command id once. */
  COMMAND_RESEND_UNANSWERED_S: z
    .union([z.literal('off'), z.coerce.number().int().min(1).max(DAY_S)])
    .default(60),
  /** The internal registry of device signing keys (DIR/DEVICE_ID.key; the distributor's DISTRIBUTOR_DEVICE_KEYS_DIR):
   * every command is authenticated with its device's key, so the DMZ cannot forge one. */
  COMMAND_DEVICE_KEYS_DIR: z.string().default('certs/internal/device-keys'),
  /** Revoked devices, one id per line (the distributor's DISTRIBUTOR_REVOKED_DEVICES_FILE): they get
   * no command and their responses are not recorded, even with a key file of theirs still around. */
  COMMAND_REVOKED_DEVICES_FILE: z.string().default('certs/internal/revoked-devices.txt'),
  /** Send commands unsigned to devices without a registered key (instead of refusing them with
   * API_DEVICE_KEY_MISSING), and record such a device's unsigned responses. Such a device runs them
   * only if its own FIELD_ALLOW_UNSIGNED_COMMANDS is on. */
  COMMAND_ALLOW_UNSIGNED: setting.bool(false),
  /** Prometheus metrics, /healthz and /readyz on a port of their own ("off": none). */
  COMMAND_API_METRICS_HOST: setting.host('127.0.0.1'),
  COMMAND_API_METRICS_PORT: setting.portOrOff(9466),
  /** Names the metrics port is reached by besides localhost, IP addresses and COMMAND_API_METRICS_HOST (comma-separated; by
   * default the one Prometheus and the console use under compose and Kubernetes): another Host is refused, HTTP_HOST_NOT_SERVED. */
  COMMAND_API_METRICS_HOST_NAMES: hostNamesSetting('command-api-metrics'),
  ...mqttSettings('internal/command-api'),
  COMMAND_API_CLIENT_ID: clientIdSetting('command-api'),
  LOG_LEVEL: setting.logLevel(),
  /** The distributor's PostgreSQL (read only): the responses it stored, looked up for commands whose
   * response the broker may have lost (reconciler.ts). Off while POSTGRES_URL and PGHOST are unset. */
  ...postgresSettings(),
  /** The distributor's InfluxDB (read only, InfluxQL): looked up as PostgreSQL is, when PostgreSQL is
   * not set. Off while INFLUXDB_URL is unset. The local store's path is the distributor's alone. */
  ...influxOnly(),
});
export const CommandApiConfigSchema = CommandApiSettings.superRefine((c, ctx) => {
  checkPostgresSettings(c, ctx);
  // The check reads the connection settings only; the local path is not one of the command API's.
  checkInfluxSettings({ ...c, TIMESERIES_LOCAL_PATH: '' }, ctx);
});
export type CommandApiConfig = z.infer<typeof CommandApiConfigSchema>;

export function loadCommandApiConfig(env: Record<string, string | undefined> = process.env): Readonly<CommandApiConfig> {
  return parseConfig(CommandApiConfigSchema, env);
}
