import { z } from 'zod';
import { parseConfig, setting } from '../shared/config.ts';
import { DeviceIdSchema } from '../shared/contract/primitives.ts';

/** Settings of `npm start` itself; each service reads its own on top (see .env.example). */
export const EmbeddedConfigSchema = z.object({
  CERTS_DIR: z.string().default('./certs'),
  /** Loopback by default: the embedded pipeline is for one machine. */
  EMBEDDED_HOST: setting.host('127.0.0.1'),
  GATEWAY_PORT: setting.port(8443),
  EMBEDDED_MQTT_PORT: setting.port(8883),
  COMMAND_API_PORT: setting.port(8080),
  /** Each service's /metrics, /healthz and /readyz, on EMBEDDED_HOST ("off": none). */
  GATEWAY_METRICS_PORT: setting.portOrOff(9464),
  DISTRIBUTOR_METRICS_PORT: setting.portOrOff(9465),
  COMMAND_API_METRICS_PORT: setting.portOrOff(9466),
  /** The operator console, on EMBEDDED_HOST ("off": none); log in with the command API's token. */
  CONSOLE_PORT: setting.portOrOff(8090),
  CONSOLE_METRICS_PORT: setting.portOrOff(9469),
  /** The command API's bearer token; npm start makes one up (and prints it) when unset. */
  COMMAND_API_TOKEN: z.string().min(24).optional(),
  /** The simulated field device; "none" runs no simulator. */
  DEVICE_ID: z.union([z.literal('none'), DeviceIdSchema]).default('field-sim-001'),
  LOG_LEVEL: setting.logLevel(),
});
export type EmbeddedConfig = z.infer<typeof EmbeddedConfigSchema>;

/** The device ids of the seed's examples get development certificates, so they can be typed into wscat. */
export const SEED_DEVICE_IDS = ['sensor-001', 'camera-001', 'alarm-001', 'actuator-001'] as const;

export function loadEmbeddedConfig(env: Record<string, string | undefined> = process.env): Readonly<EmbeddedConfig> {
  return parseConfig(EmbeddedConfigSchema, env);
}
